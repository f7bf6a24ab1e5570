//! Conversations by phone number. Most customers have one phone, their conversation's first
//! (`Conversation::customer`): those are filed by the conversation's position in the slab,
//! and the number is read from the conversation found, so a slot is the position and 32 bits
//! of the number's hash (8 bytes). A lookup reads that slot, then the conversation itself,
//! which the message reads next anyway (filed by id, a lookup went through the slab's own
//! index as well: one more line to wait for on each message). The other phones of linked
//! customers (rare) stay in a map, by id.
//!
//! The first-phone table's invariant: a position is filed exactly while the conversation
//! there holds that `customer`, under that number's hash. Callers file a number once the
//! conversation holds it, and take it out when they move the number; a conversation leaves
//! the slab through [`Numbers::remove_conversation`], which unfiles it and refiles the
//! conversation the slab moved into its place.
use std::hash::BuildHasher;

use super::slab::Removed;
use super::{Conversation, Map, Slab};
use crate::core::positions::Positions;
use crate::model::{ConversationId, CustomerNumber};

#[derive(Debug, Default)]
pub(super) struct Numbers {
    /// Conversations by their first phone: their positions in the slab.
    first: Positions,
    /// Every other phone a conversation's customer is known by.
    others: Map<CustomerNumber, ConversationId>,
    /// Hashes numbers for `first` (randomly seeded per process).
    hasher: foldhash::fast::RandomState,
}

impl Numbers {
    /// A number's hash, over its bytes: the same for the `&str` a message gives and the
    /// `CustomerNumber` a conversation holds (whose `as_e164` would check UTF-8 again).
    fn hash(&self, number: &[u8]) -> u64 {
        self.hasher.hash_one(number)
    }

    /// The conversation `number` (E.164) finds, and the number as the tenant keeps it (to
    /// share, not copy). Found by its first phone, the conversation is the one the slab's
    /// next lookup tries first.
    pub fn get<'a>(
        &'a self,
        convs: &'a Slab<Conversation>,
        number: &str,
    ) -> Option<(&'a CustomerNumber, ConversationId)> {
        match self.first_at(convs, number) {
            Some(at) => {
                convs.remember(at);
                let (id, conv) = convs.at(at);
                Some((conv.customer.as_ref()?, *id))
            }
            None if self.others.is_empty() => None,
            None => self.others.get_key_value(number).map(|(p, id)| (p, *id)),
        }
    }

    /// The position of the conversation whose first phone is `number`.
    fn first_at(&self, convs: &Slab<Conversation>, number: &str) -> Option<usize> {
        let at = self.first.find(self.hash(number.as_bytes()), |at| {
            // In range whenever the invariant holds; checked so that a slip finds nothing
            // rather than stopping the shard.
            let at = at as usize;
            at < convs.len()
                && convs
                    .at(at)
                    .1
                    .customer
                    .as_ref()
                    .is_some_and(|p| p.is(number))
        })?;
        Some(at as usize)
    }

    /// Starts loading the line a lookup (or a removal) of `number` reads first (a hint).
    pub fn prefetch(&self, number: &[u8]) {
        self.first.prefetch(self.hash(number));
    }

    /// The conversation `number` finds.
    pub fn id(&self, convs: &Slab<Conversation>, number: &str) -> Option<ConversationId> {
        self.get(convs, number).map(|(_, id)| id)
    }

    /// Files `number` for conversation `id`, which already holds it: as its first phone, or
    /// among its others. Whatever conversation the number found before, it finds `id` now.
    pub fn insert(
        &mut self,
        convs: &Slab<Conversation>,
        number: CustomerNumber,
        id: ConversationId,
    ) {
        let hash = self.hash(number.as_bytes());
        if let Some(before) = self.first_at(convs, number.as_e164()) {
            self.first.remove(hash, pos(before));
        } else {
            self.others.remove(number.as_e164());
        }
        match convs.position(&id) {
            Some(at) if convs.at(at).1.customer.as_ref() == Some(&number) => {
                self.first.insert(hash, pos(at));
            }
            _ => {
                self.others.insert(number, id);
            }
        }
    }

    /// Files the first phone of the conversation just added at position `at`, a number no
    /// conversation held (what [`Numbers::insert`] checks first, its callers already know).
    pub fn insert_new(&mut self, convs: &Slab<Conversation>, at: usize) {
        let number = convs.at(at).1.customer.as_ref().expect("a first phone");
        debug_assert!(self.id(convs, number.as_e164()).is_none(), "a new number");
        self.first.insert(self.hash(number.as_bytes()), pos(at));
    }

    /// Unfiles `number`, the first phone of the conversation at position `at`.
    fn remove_first(&mut self, number: &CustomerNumber, at: usize) {
        let hash = self.hash(number.as_bytes());
        self.first.remove(hash, pos(at));
    }

    /// Unfiles `number`, another phone of conversation `id`, if it finds that conversation.
    pub fn remove_other(&mut self, number: &CustomerNumber, id: ConversationId) {
        if self.others.get(number) == Some(&id) {
            self.others.remove(number);
        }
    }

    /// Takes conversation `id` out of the slab, unfiling its first phone, and refiles the
    /// conversation the slab moves into its place. Its other phones are the caller's to
    /// unfile (with its aliases).
    pub fn remove_conversation(
        &mut self,
        convs: &mut Slab<Conversation>,
        id: ConversationId,
    ) -> Option<Conversation> {
        let Removed {
            value,
            at,
            moved_from,
        } = convs.remove(&id)?;
        // Unfiled before the one moved is refiled: no two slots hold `at` at once.
        if let Some(p) = &value.customer {
            self.remove_first(p, at);
        }
        if let Some(from) = moved_from
            && let Some(p) = &convs.at(at).1.customer
        {
            self.first
                .moved(self.hash(p.as_bytes()), pos(from), pos(at));
        }
        Some(value)
    }

    /// Gives back room after a peak: the first phones' table a step at a time (see
    /// [`Positions::shrink_gradually`]), the other phones' map (rare, small) at once.
    pub fn shrink_gradually(&mut self) {
        self.first.shrink_gradually();
        if self.others.len() < self.others.capacity() / 4 {
            self.others.shrink_to_fit();
        }
    }

    /// Walks on the first phones' table being emptied, if any, by up to `slots` slots.
    pub fn settle(&mut self, slots: usize) {
        self.first.settle(slots);
    }

    /// The first phones' table's slots, one being emptied included.
    #[cfg(test)]
    pub fn slots(&self) -> usize {
        self.first.slots()
    }
}

/// A slab position as the table files it (a slab holds under 2³² conversations).
fn pos(at: usize) -> u32 {
    u32::try_from(at).expect("under 2³² conversations")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::core::customer::Identity;
    use crate::core::tenant::customers;

    fn phone(n: u64) -> CustomerNumber {
        CustomerNumber::from_valid_e164(&format!("+3461{n:07}"))
    }

    fn conversation(first: Option<CustomerNumber>) -> Conversation {
        Conversation::new(first, 0, Timestamp(0))
    }

    /// Enough first phones to grow the table several times, then another phone, a number
    /// moved, and conversations dropped.
    #[test]
    fn finds_each_conversation_by_its_first_and_other_phones() {
        let mut convs: Slab<Conversation> = Slab::default();
        let mut numbers = Numbers::default();
        for n in 0..5_000 {
            let id = ConversationId(n);
            convs.insert(id, conversation(Some(phone(n))));
            numbers.insert(&convs, phone(n), id);
        }
        for n in (0..5_000).step_by(7) {
            let (p, id) = numbers.get(&convs, phone(n).as_e164()).expect("filed");
            assert_eq!((p, id), (&phone(n), ConversationId(n)));
            assert!(
                std::ptr::eq(p, convs[&id].customer.as_ref().unwrap()),
                "the conversation's own number, shared"
            );
        }
        assert_eq!(numbers.id(&convs, phone(5_000).as_e164()), None);

        // Conversation 1 also answers to a second phone, held among its others.
        let extra = phone(9_000);
        convs.get_mut(&ConversationId(1)).unwrap().known = Some(Box::new(customers::Known {
            others: vec![customers::Other {
                identity: Identity::Phone(extra.clone()),
                window_expires: None,
            }],
            profile: Default::default(),
        }));
        numbers.insert(&convs, extra.clone(), ConversationId(1));
        assert_eq!(numbers.id(&convs, extra.as_e164()), Some(ConversationId(1)));

        // Conversation 2 is dropped: its number finds nothing, and the conversation the slab
        // moved into its place (the last) is found at its new position.
        let gone = numbers.remove_conversation(&mut convs, ConversationId(2));
        assert_eq!(gone.and_then(|c| c.customer), Some(phone(2)));
        assert_eq!(numbers.id(&convs, phone(2).as_e164()), None);
        assert_eq!(convs.position(&ConversationId(4_999)), Some(2));
        assert_eq!(
            numbers.id(&convs, phone(4_999).as_e164()),
            Some(ConversationId(4_999))
        );
        // Unfiling a number for a conversation it does not find changes nothing.
        let four = convs.position(&ConversationId(4)).unwrap();
        numbers.remove_first(&phone(3), four);
        numbers.remove_other(&extra, ConversationId(3));
        assert_eq!(
            numbers.id(&convs, phone(3).as_e164()),
            Some(ConversationId(3))
        );
        assert_eq!(numbers.id(&convs, extra.as_e164()), Some(ConversationId(1)));
        numbers.remove_other(&extra, ConversationId(1));
        assert_eq!(numbers.id(&convs, extra.as_e164()), None);

        // A number filed for another conversation now finds that one.
        convs.get_mut(&ConversationId(4)).unwrap().known = Some(Box::new(customers::Known {
            others: vec![customers::Other {
                identity: Identity::Phone(phone(5)),
                window_expires: None,
            }],
            profile: Default::default(),
        }));
        numbers.remove_first(&phone(5), convs.position(&ConversationId(5)).unwrap());
        convs.get_mut(&ConversationId(5)).unwrap().customer = None;
        numbers.insert(&convs, phone(5), ConversationId(4));
        assert_eq!(
            numbers.id(&convs, phone(5).as_e164()),
            Some(ConversationId(4))
        );
        // Filed again for another conversation, it finds that one (the last filing wins).
        convs.get_mut(&ConversationId(6)).unwrap().known = convs[&ConversationId(4)].known.clone();
        numbers.insert(&convs, phone(5), ConversationId(6));
        assert_eq!(
            numbers.id(&convs, phone(5).as_e164()),
            Some(ConversationId(6))
        );

        // Shrinking after a sweep keeps every number found.
        for n in 100..5_000 {
            numbers.remove_conversation(&mut convs, ConversationId(n));
        }
        let before = numbers.slots();
        numbers.shrink_gradually();
        assert!(
            numbers.slots() > before,
            "a smaller table begun beside the old one"
        );
        // Found while the old table is walked a few slots at a time, and once it is gone.
        while numbers.slots() >= before {
            for n in (0..100).filter(|n| ![2, 5].contains(n)) {
                assert_eq!(
                    numbers.id(&convs, phone(n).as_e164()),
                    Some(ConversationId(n))
                );
            }
            assert_eq!(numbers.id(&convs, phone(200).as_e164()), None);
            numbers.settle(512);
        }
        assert!(
            numbers.slots() * 8 <= before,
            "{before} slots -> {}",
            numbers.slots()
        );
    }

    /// Conversations added and dropped at random, each drop moving the slab's last
    /// conversation into the hole: after every step the numbers of a sample find their
    /// conversations (whatever position they are at now) and the dropped ones' find nothing;
    /// at the end, and after shrinking, every number.
    #[test]
    fn every_number_follows_its_conversation_through_the_slab_s_moves() {
        let mut convs: Slab<Conversation> = Slab::default();
        let mut numbers = Numbers::default();
        let mut live: Vec<u64> = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let finds = |numbers: &Numbers, convs: &Slab<Conversation>, n: u64| {
            numbers.id(convs, phone(n).as_e164())
        };
        for step in 0..20_000u64 {
            // Grows to a few thousand, then churns around that size.
            if live.len() < 3_000 && next() % 3 != 0 || live.is_empty() {
                convs.insert(ConversationId(step), conversation(Some(phone(step))));
                numbers.insert(&convs, phone(step), ConversationId(step));
                live.push(step);
            } else {
                let n = live.swap_remove((next() % live.len() as u64) as usize);
                let gone = numbers.remove_conversation(&mut convs, ConversationId(n));
                assert_eq!(gone.and_then(|c| c.customer), Some(phone(n)));
                assert_eq!(finds(&numbers, &convs, n), None, "step {step}: {n} dropped");
            }
            for _ in 0..4 {
                let n = live[(next() % live.len() as u64) as usize];
                assert_eq!(
                    finds(&numbers, &convs, n),
                    Some(ConversationId(n)),
                    "step {step}"
                );
            }
        }
        for shrunk in [false, true] {
            if shrunk {
                // Under a quarter full after dropping all but 500: a smaller table, walked.
                while live.len() > 500 {
                    let n = live.swap_remove((next() % live.len() as u64) as usize);
                    numbers.remove_conversation(&mut convs, ConversationId(n));
                }
                let before = numbers.slots();
                numbers.shrink_gradually();
                numbers.settle(usize::MAX);
                assert!(numbers.slots() < before, "{before} slots, still");
            }
            for &n in &live {
                assert_eq!(finds(&numbers, &convs, n), Some(ConversationId(n)), "{n}");
            }
        }
        assert_eq!(convs.len(), live.len());
        assert_eq!(
            numbers.first.len(),
            live.len(),
            "one slot a conversation, none left over"
        );
    }
}
