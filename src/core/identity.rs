//! Who the customer is: phone numbers normalised to E.164 with the `phonenumber` crate, reading
//! national formats in the tenant's default region; and de-duplication of provider message ids,
//! since the platform retries webhooks for days and the same message must not route twice.
use std::hash::BuildHasher;

use phonenumber::{Mode, country};

use super::e164;
use super::positions::Positions;
use super::queue::Queue;
use crate::clock::Timestamp;
use crate::model::CustomerNumber;

/// Parses `raw` (E.164, international or national format) and checks it is a valid number.
/// The error says what is wrong, for an `INVALID_ARGUMENT` on the `customer` field.
pub fn normalize(raw: &str, region: country::Id) -> Result<CustomerNumber, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err("is empty; send the customer's phone number, e.g. +34612345678".into());
    }
    match e164::check(trimmed, region) {
        Some(e164::Check::Valid) => return Ok(CustomerNumber::from_valid_e164(trimmed)),
        Some(e164::Check::Invalid) => return Err(invalid_in(region)),
        None => {}
    }
    normalize_slowly(trimmed, region)
}

/// `normalize` by `phonenumber` alone (national formats, and what the fast path declines).
pub(crate) fn normalize_slowly(
    trimmed: &str,
    region: country::Id,
) -> Result<CustomerNumber, String> {
    let parsed = phonenumber::parse(Some(region), trimmed)
        .map_err(|e| format!("is not a phone number ({e}); send E.164, e.g. +34612345678"))?;
    if !phonenumber::is_valid(&parsed) {
        return Err(invalid_in(region));
    }
    let e164 = parsed.format().mode(Mode::E164).to_string();
    // `phonenumber` keeps national numbers to 17 digits: never longer than a number holds.
    if e164.len() > CustomerNumber::MAX_BYTES {
        return Err(format!(
            "is too long ({} digits); send E.164, at most 15 digits",
            e164.len() - 1
        ));
    }
    Ok(CustomerNumber::from_valid_e164(&e164))
}

fn invalid_in(region: country::Id) -> String {
    format!(
        "is not a valid number in its region ({region:?} by default); send E.164 with the country code"
    )
}

/// True when `raw` already has the E.164 shape (`+` then 8–15 digits): such a string can be
/// looked up directly among known customers without parsing it again.
pub fn looks_e164(raw: &str) -> bool {
    let digits = raw.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Remembers provider message ids for `ttl`, at most `max` of them (oldest forgotten first).
/// Ids arrive in time order, so insertion order is expiry order and a queue suffices.
///
/// Each id is kept as a 128-bit fingerprint, not as a string: no allocation per message, no
/// string comparison on lookup, 16 bytes per id instead of a heap string. Two different ids
/// share a fingerprint with probability about n²/2¹²⁹ (about 10⁻²⁶ for a million ids). The
/// hash keys are fixed, so fingerprints mean the same in every process.
#[derive(Debug)]
pub struct Dedup {
    /// Where each id is in `order`, by its number (see [`Dedup::at`]).
    seen: Positions,
    /// Hashes a fingerprint's low half for `seen` (randomly seeded per process: the
    /// fingerprints' own keys are fixed, so they are not used as the table's hash).
    hasher: foldhash::fast::RandomState,
    /// When each was seen, oldest first; the fingerprint as two `u64`s, so an entry is 24
    /// bytes, not the 32 a `u128`'s alignment makes it. In pages, so growing never copies it.
    order: Queue<(Timestamp, [u64; 2])>,
    ttl_ms: u64,
    max: usize,
    /// Ids ever added: the one at the back of `order` is number `pushed - 1`.
    pushed: u64,
    /// Where the last cut began (`pushed` then).
    cut_mark: u64,
    cut: Option<DedupCut>,
}

/// A cut of the ids seen being copied (see `tenant::slab` for cuts). Ids never change, so no
/// copy on write: the ids added since the last cut, and of the older ones those whose
/// fingerprint is `round` modulo `spread` (all of them for a cut that stands alone). An id
/// forgotten before its turn is left out, as the live state forgot it.
#[derive(Debug)]
struct DedupCut {
    since: u64,
    upto: u64,
    /// None: every id.
    round: Option<(u64, u64)>,
    /// The number of the next id to look at.
    next: u64,
    /// Fingerprints as two `u64`s, as in `order`: 24 bytes an id, not 32.
    copies: Vec<(Timestamp, [u64; 2])>,
}

/// Fixed keys for the two halves of a fingerprint (arbitrary, distinct constants).
const FINGERPRINT_SEEDS: (u64, u64) = (0x9e37_79b9_7f4a_7c15, 0xc2b2_ae3d_27d4_eb4f);

/// A 128-bit fingerprint of an id: stable across processes (fixed keys).
pub fn fingerprint(id: &str) -> u128 {
    use std::hash::BuildHasher;
    let hi = foldhash::quality::FixedState::with_seed(FINGERPRINT_SEEDS.0).hash_one(id);
    let lo = foldhash::quality::FixedState::with_seed(FINGERPRINT_SEEDS.1).hash_one(id);
    (u128::from(hi) << 64) | u128::from(lo)
}

fn split(fp: u128) -> [u64; 2] {
    [(fp >> 64) as u64, fp as u64]
}

pub fn join([hi, lo]: [u64; 2]) -> u128 {
    (u128::from(hi) << 64) | u128::from(lo)
}

impl Dedup {
    pub fn new(ttl_ms: u64, max: usize) -> Self {
        Self {
            seen: Positions::default(),
            hasher: foldhash::fast::RandomState::default(),
            order: Queue::default(),
            ttl_ms,
            max,
            pushed: 0,
            cut_mark: 0,
            cut: None,
        }
    }

    /// Begins a cut (one at a time: the one before must be finished). `round`: (round,
    /// spread), or None for every id.
    pub fn begin_cut(&mut self, round: Option<(u64, u64)>) {
        debug_assert!(self.cut.is_none(), "one cut at a time");
        let first = self.pushed - self.order.len() as u64;
        // Room for what the cut will likely copy, taken once (see `Slab::begin_cut`).
        let recent = self.pushed - self.cut_mark.max(first);
        let older = self.order.len() as u64 - recent;
        let expected = recent
            + match round {
                None => older,
                Some((_, spread)) => (older / spread.max(1)) * 9 / 8 + 16,
            };
        self.cut = Some(DedupCut {
            since: self.cut_mark,
            upto: self.pushed,
            round,
            next: first,
            copies: Vec::with_capacity(
                usize::try_from(expected.min(self.order.len() as u64)).unwrap_or(0),
            ),
        });
        self.cut_mark = self.pushed;
    }

    /// Looks at up to `budget` ids of the cut being taken; the finished cut's ids once done.
    pub fn step(&mut self, budget: usize) -> Option<Vec<(Timestamp, [u64; 2])>> {
        let cut = self.cut.as_mut()?;
        let first = self.pushed - self.order.len() as u64;
        cut.next = cut.next.max(first);
        let mut looked = 0;
        while looked < budget && cut.next < cut.upto {
            let (at, fp) = self.order[(cut.next - first) as usize];
            let owed = cut.next >= cut.since
                || cut.round.is_none_or(|(round, spread)| {
                    (fp[0] ^ fp[1]) % spread.max(1) == round % spread.max(1)
                });
            if owed {
                cut.copies.push((at, fp));
            }
            cut.next += 1;
            looked += 1;
        }
        if cut.next < cut.upto {
            return None;
        }
        self.cut.take().map(|c| c.copies)
    }

    /// The ids seen, oldest first (for snapshots).
    pub fn entries(&self) -> impl Iterator<Item = (Timestamp, u128)> + '_ {
        self.order.iter().map(|&(at, fp)| (at, join(fp)))
    }

    /// Replaces the ids seen with saved ones, oldest first.
    pub fn restore(&mut self, entries: Vec<(Timestamp, u128)>) {
        self.seen.clear();
        self.order.clear();
        self.pushed = 0;
        for (at, fp) in entries {
            if !self.contains(fp) {
                self.push(fp, at);
            }
        }
        self.cut_mark = self.pushed;
        self.cut = None;
    }

    /// Whether the id whose [`fingerprint`] this is was seen (the caller fingerprints an id
    /// once for the lookup and the insert).
    pub fn contains(&self, key: u128) -> bool {
        let key = split(key);
        self.seen
            .find(self.hasher.hash_one(key[1]), |n| {
                self.order[self.at(n)].1 == key
            })
            .is_some()
    }

    /// Starts loading the lines of the index that [`Dedup::contains`] and
    /// [`Dedup::insert_unseen`] of `key` will read: the key's home and, when the window is
    /// full, the oldest id's, which the insert forgets (a hint: changes nothing).
    pub fn prefetch(&self, key: u128) {
        self.seen.prefetch(self.hasher.hash_one(split(key)[1]));
        if self.order.len() >= self.max
            && let Some((_, oldest)) = self.order.front()
        {
            self.seen.prefetch(self.hasher.hash_one(oldest[1]));
        }
    }

    pub fn insert(&mut self, key: u128, now: Timestamp) {
        if !self.contains(key) {
            self.insert_unseen(key, now);
        }
    }

    /// Adds an id the caller found not [`Dedup::contains`]ed (one lookup a message, not two).
    pub fn insert_unseen(&mut self, key: u128, now: Timestamp) {
        debug_assert!(!self.contains(key), "an id not seen");
        self.push(key, now);
        while self.order.len() > self.max {
            self.forget_oldest();
        }
    }

    /// Adds an id not seen: number `pushed`, filed under the low 32 bits of its number.
    fn push(&mut self, key: u128, now: Timestamp) {
        let key = split(key);
        self.order.push_back((now, key));
        let number = self.pushed as u32;
        self.pushed += 1;
        self.seen.insert(self.hasher.hash_one(key[1]), number);
    }

    /// The low 32 bits of the number of the oldest id in `order`.
    fn first(&self) -> u32 {
        (self.pushed - self.order.len() as u64) as u32
    }

    /// Where id number `n` (its low 32 bits: the window holds far fewer) is in `order`.
    fn at(&self, n: u32) -> usize {
        n.wrapping_sub(self.first()) as usize
    }

    /// Walks on the index's table being emptied, if any, by up to `slots` slots.
    pub fn settle(&mut self, slots: usize) {
        self.seen.settle(slots);
    }

    /// Forgets ids older than the ttl (and gives back capacity after a peak).
    pub fn sweep(&mut self, now: Timestamp) {
        while let Some((at, _)) = self.order.front() {
            if now.as_millis().saturating_sub(at.as_millis()) < self.ttl_ms {
                break;
            }
            self.forget_oldest();
        }
        if self.seen.len() < self.seen.capacity() / 4 {
            self.seen.shrink_gradually();
            self.order.shrink_to_fit();
        }
    }

    fn forget_oldest(&mut self) {
        let first = self.first();
        if let Some((_, key)) = self.order.pop_front() {
            self.seen.remove(self.hasher.hash_one(key[1]), first);
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ES: country::Id = country::Id::ES;

    #[test]
    fn normalises_national_and_international_formats() {
        for raw in [
            "612 345 678",
            "+34 612 34 56 78",
            "0034612345678",
            "+34612345678",
        ] {
            assert_eq!(
                normalize(raw, ES).unwrap().as_e164(),
                "+34612345678",
                "{raw}"
            );
        }
        // Another region's number keeps its own country code.
        assert_eq!(
            normalize("+52 55 1234 5678", ES).unwrap().as_e164(),
            "+525512345678"
        );
    }

    #[test]
    fn refuses_what_is_not_a_valid_number() {
        assert!(normalize("", ES).unwrap_err().contains("empty"));
        assert!(normalize("hello", ES).is_err());
        assert!(normalize("+34 12", ES).is_err());
    }

    #[test]
    fn e164_shape() {
        assert!(looks_e164("+34612345678"));
        assert!(!looks_e164("34612345678"));
        assert!(!looks_e164("+34 612"));
        assert!(!looks_e164("+1234"));
    }

    #[test]
    fn dedup_forgets_after_ttl_and_past_max() {
        let mut d = Dedup::new(1_000, 2);
        d.insert(fingerprint("a"), Timestamp(0));
        assert!(d.contains(fingerprint("a")));
        d.sweep(Timestamp(999));
        assert!(d.contains(fingerprint("a")), "still within ttl");
        d.sweep(Timestamp(1_000));
        assert!(!d.contains(fingerprint("a")), "forgotten exactly at ttl");

        d.insert(fingerprint("b"), Timestamp(2_000));
        d.insert(fingerprint("c"), Timestamp(2_001));
        d.insert(fingerprint("d"), Timestamp(2_002));
        assert_eq!(d.len(), 2);
        assert!(!d.contains(fingerprint("b")), "oldest forgotten past max");
        assert!(d.contains(fingerprint("c")) && d.contains(fingerprint("d")));
        d.insert(fingerprint("d"), Timestamp(2_003));
        assert_eq!(d.len(), 2, "re-inserting a known id adds nothing");
        assert_ne!(fingerprint("wamid.1"), fingerprint("wamid.2"));
        assert_eq!(fingerprint("wamid.1"), fingerprint("wamid.1"), "stable");
    }

    #[test]
    fn distinct_ids_keep_distinct_fingerprints() {
        let mut d = Dedup::new(u64::MAX, usize::MAX);
        for i in 0..200_000 {
            d.insert(
                fingerprint(&format!("wamid.HBgLMzQ2MTIzNDU2NzgVAgASGBQz{i:010}")),
                Timestamp(0),
            );
        }
        assert_eq!(d.len(), 200_000, "no two ids collided");
    }
}
