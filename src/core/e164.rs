//! A fast path for numbers already in E.164 (`+` and digits), giving exactly the answer of
//! `phonenumber::parse` then `phonenumber::is_valid`, from the same metadata, at a fraction
//! of the cost.
//!
//! Why: `phonenumber` keeps its compiled expressions in one process-wide LRU cache of 100
//! behind a `Mutex`. Every check locks it (all shards share the lock), and with a few hundred
//! regions' patterns in use the cache misses and recompiles. It also runs a general parser
//! (extensions, letters, punctuation) and formats the number to print it. Here each country
//! code's patterns are compiled once, on its first number, into DFAs owned by this module
//! (read through a `OnceLock`: no lock after that), each walked a digit a step: a new
//! number's whole check costs ~670 instructions, ~1,600 when its three or four patterns were
//! `regex` searches, each with its own set-up (callgrind, the routing bench's new customers).
//!
//! Agreement, not a second opinion: the answer is `phonenumber`'s own rules replayed, and
//! where replaying them would take more than the common case needs, this path declines
//! ([`check`] returns `None`) and the caller asks `phonenumber`. It declines when the
//! default region's international prefix or national prefix could apply to the digits
//! (`phonenumber` strips those even after a `+`), and for national numbers it could not hold
//! (all zeros, over 17 digits or 2⁵⁶). A differential test over more than a million numbers
//! holds the two to the same answers (`tests` below and `core::identity`).
use std::sync::{LazyLock, OnceLock};

use phonenumber::country;
use phonenumber::metadata::{DATABASE, Descriptor, Metadata};
use regex::{Regex, RegexBuilder};
use regex_automata::Anchored;
use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;

use super::Map;

/// `phonenumber`'s limits on a national significant number.
const MIN_NSN: usize = 2;
const MAX_NSN: usize = 17;

/// What the fast path decided: `Valid` (the input is the E.164 form), `Invalid` (parsed,
/// but no region accepts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Valid,
    Invalid,
}

/// The answer for `raw` (already trimmed) with `region` as the default region, or `None`
/// when this path does not decide and `phonenumber` must.
pub fn check(raw: &str, region: country::Id) -> Option<Check> {
    let digits = raw.strip_prefix('+')?;
    if digits.len() <= MIN_NSN
        || digits.starts_with('0')
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let default = default_rules(region)?;
    if default.idd.as_ref().is_some_and(|idd| idd.is_match(digits)) {
        return None;
    }
    // The country code: the first of 1, 2, 3 leading digits that is one.
    let (code, national) = (1..=3).find_map(|len| {
        let code = (digits.as_bytes().get(..len)?.iter())
            .fold(0, |code, digit| code * 10 + usize::from(digit - b'0'));
        KNOWN
            .get(code)
            .copied()
            .unwrap_or(false)
            .then(|| (code, &digits[len..]))
    })?;
    if !(MIN_NSN..=MAX_NSN).contains(&national.len()) || default.strips(national) {
        return None;
    }
    // Past 2⁵⁶ only with 17 digits (16 are under 10¹⁶).
    let value = national.trim_start_matches('0');
    let too_large = value.len() > 16 && value.parse::<u64>().map_or(true, |v| v >= 1 << 56);
    if value.is_empty() || too_large {
        return None;
    }
    let rules = code_rules(code as u16);
    Some(if rules.is_valid(national) {
        Check::Valid
    } else {
        Check::Invalid
    })
}

/// Makes what a number with `region` as its default region needs first (the metadata, the
/// country codes, the region's rules and its own country code's), so that a tenant's first new
/// customer does not wait for them: ~100 ms, once a process (`cargo bench --bench stalls`).
pub fn prepare(region: country::Id) {
    default_rules(region);
    let code = DATABASE.by_id(region.as_ref()).map(Metadata::country_code);
    if let Some(code) = code.filter(|&c| KNOWN.get(usize::from(c)) == Some(&true)) {
        code_rules(code);
    }
}

/// Country code `code`'s rules (one of [`KNOWN`]), compiled on first use.
fn code_rules(code: u16) -> &'static Code {
    CODES[usize::from(code)].get_or_init(|| Code::compile(code))
}

/// Which numbers below 1000 are country codes.
static KNOWN: LazyLock<Vec<bool>> = LazyLock::new(|| {
    (0..1000u16)
        .map(|code| DATABASE.by_code(&code).is_some())
        .collect()
});

/// Each country code's compiled rules, made on its first number.
static CODES: LazyLock<Vec<OnceLock<Code>>> =
    LazyLock::new(|| (0..1000).map(|_| OnceLock::new()).collect());

/// What a default region does to the digits after `+` before they are checked, made on the
/// region's first number: a process uses its tenants' few default regions, and making every
/// region's rules at once held up that first number (~180 ms, `cargo bench --bench stalls`).
static DEFAULTS: LazyLock<Map<country::Id, OnceLock<Default>>> = LazyLock::new(|| {
    DATABASE
        .iter()
        .filter_map(|meta| Some((meta.id().parse().ok()?, OnceLock::new())))
        .collect()
});

/// The rules of default region `region` (None: not a region `phonenumber` knows), made on
/// first use.
fn default_rules(region: country::Id) -> Option<&'static Default> {
    let rules = DEFAULTS.get(&region)?;
    Some(rules.get_or_init(|| {
        Default::new(
            DATABASE
                .by_id(region.as_ref())
                .expect("listed from the database"),
        )
    }))
}

struct Default {
    /// Its international dialling prefix ("00", "011"): `phonenumber` strips it after `+`.
    idd: Option<AtStart>,
    /// How it recognises a national prefix ("0", carrier codes): stripped when present.
    prefix_for_parsing: Option<AtStart>,
    national_prefix: Option<String>,
}

impl Default {
    fn new(meta: &Metadata) -> Self {
        Self {
            idd: meta.international_prefix().map(|r| at_start(r.as_str())),
            prefix_for_parsing: meta
                .national_prefix_for_parsing()
                .map(|r| at_start(r.as_str())),
            national_prefix: meta.national_prefix().map(str::to_owned),
        }
    }

    /// Whether `phonenumber` might strip a national prefix from `national` (it does so in
    /// the default region's terms, even for another country's number): declined here.
    fn strips(&self, national: &str) -> bool {
        self.prefix_for_parsing
            .as_ref()
            .is_some_and(|p| p.is_match(national))
            || self
                .national_prefix
                .as_ref()
                .is_some_and(|p| national.starts_with(p.as_str()))
    }
}

/// A country code's regions, in `phonenumber`'s order, each compiled.
struct Code {
    /// One region (or a non-geographic code): it is the one.
    single: Option<Region>,
    /// Several: the first whose leading digits match, or without leading digits whose
    /// types accept the number, is the one.
    several: Vec<Region>,
}

impl Code {
    fn compile(code: u16) -> Self {
        let regions = DATABASE.region(&code).unwrap_or_default();
        if let [only] = regions.as_slice() {
            let meta = if *only == "001" {
                DATABASE.by_code(&code).and_then(|m| m.into_iter().next())
            } else {
                only.parse::<country::Id>()
                    .ok()
                    .and_then(|id| DATABASE.by_id(id.as_ref()))
            };
            return Self {
                single: meta.map(Region::new),
                several: Vec::new(),
            };
        }
        Self {
            single: None,
            several: regions
                .iter()
                .filter_map(|id| DATABASE.by_id(*id))
                .map(Region::new)
                .collect(),
        }
    }

    fn is_valid(&self, national: &str) -> bool {
        if let Some(region) = &self.single {
            return region.accepts(national);
        }
        self.several
            .iter()
            .find(|r| match &r.leading_digits {
                Some(leading) => leading.is_match(national),
                None => r.accepts(national),
            })
            .is_some_and(|r| r.accepts(national))
    }
}

struct Region {
    leading_digits: Option<AtStart>,
    general: Pattern,
    /// A number is valid when the general pattern and any type (fixed line, mobile, toll
    /// free, …) whose possible lengths allow its length accept it: for each length some type
    /// names, those types' patterns as one expression (a match of any of them, found with no
    /// more reading than it takes), by length; `other_lengths`, the types that name none.
    by_length: Vec<(u16, Option<AtStart>)>,
    other_lengths: Option<AtStart>,
}

struct Pattern {
    regex: AtStart,
    lengths: Vec<u16>,
}

impl Region {
    fn new(meta: &Metadata) -> Self {
        let d = meta.descriptors();
        // The types `phonenumber::is_valid` tries (not emergency, short codes and the like).
        let types: Vec<&Descriptor> = [
            d.premium_rate(),
            d.toll_free(),
            d.shared_cost(),
            d.voip(),
            d.personal_number(),
            d.pager(),
            d.uan(),
            d.voicemail(),
            d.fixed_line(),
            d.mobile(),
        ]
        .into_iter()
        .flatten()
        .collect();
        // The types a number of length `len` may be: those whose possible lengths name it,
        // and those that name none (any length); None: those with no lengths only.
        let eligible = |len: Option<u16>| -> Option<AtStart> {
            let patterns: Vec<&str> = types
                .iter()
                .filter(|t| {
                    let lengths = t.possible_length();
                    lengths.is_empty() || len.is_some_and(|l| lengths.contains(&l))
                })
                .map(|t| t.national_number().as_str())
                .collect();
            (!patterns.is_empty()).then(|| at_start_any(&patterns))
        };
        let mut lengths: Vec<u16> = types
            .iter()
            .flat_map(|t| t.possible_length().iter().copied())
            .collect();
        lengths.sort_unstable();
        lengths.dedup();
        Self {
            leading_digits: meta.leading_digits().map(|r| at_start(r.as_str())),
            general: Pattern {
                regex: at_start(d.general().national_number().as_str()),
                lengths: d.general().possible_length().to_vec(),
            },
            by_length: lengths.iter().map(|&l| (l, eligible(Some(l)))).collect(),
            other_lengths: eligible(None),
        }
    }

    /// `phonenumber`'s "number type is not Unknown" for this region.
    fn accepts(&self, national: &str) -> bool {
        let len = national.len() as u16;
        let length_ok = |lengths: &[u16]| lengths.is_empty() || lengths.contains(&len);
        let types = match self.by_length.iter().find(|(l, _)| *l == len) {
            Some((_, types)) => types,
            None => &self.other_lengths,
        };
        length_ok(&self.general.lengths)
            && self.general.regex.is_match(national)
            && types.as_ref().is_some_and(|t| t.is_match(national))
    }
}

/// `phonenumber` asks "is there a match starting at 0" (`find` then `start() == 0`): the
/// same question as this anchored expression, compiled with its flags.
fn at_start(pattern: &str) -> AtStart {
    at_start_any(&[pattern])
}

/// Whether any of `patterns` matches at the start ([`at_start`]), as one expression.
fn at_start_any(patterns: &[&str]) -> AtStart {
    let any: Vec<String> = patterns.iter().map(|p| format!("^(?:{p})")).collect();
    let any = any.join("|");
    AtStart {
        dfa: dfa(&any),
        regex: RegexBuilder::new(&any)
            .ignore_whitespace(true)
            .build()
            .expect("phonenumber's own patterns compile"),
    }
}

/// Largest DFA built for one expression (most take a few kilobytes): past it, the regex.
const DFA_BYTES: usize = 1 << 20;

/// An expression asked only about ASCII digits (each caller checks its text is nothing else
/// first): a DFA compiled ahead answers (a table walk a digit, no cache), without Unicode
/// classes (`\d` is `[0-9]`: the same answer on digits, a far smaller DFA). The regex it was
/// answers when the DFA could not be built within [`DFA_BYTES`], or gives up.
struct AtStart {
    /// The DFA and its start state (anchored, at the text's start).
    dfa: Option<(dense::DFA<Vec<u32>>, StateID)>,
    regex: Regex,
}

impl AtStart {
    /// Walked with the DFA's documented low-level steps: a match state (reached a digit after
    /// the match ends, or at the end) answers yes at once, a dead one no.
    fn is_match(&self, digits: &str) -> bool {
        debug_assert!(digits.bytes().all(|b| b.is_ascii_digit()), "{digits}");
        let Some((dfa, start)) = &self.dfa else {
            return self.regex.is_match(digits);
        };
        let mut state = *start;
        for &digit in digits.as_bytes() {
            state = dfa.next_state(state, digit);
            if dfa.is_special_state(state) {
                if dfa.is_match_state(state) {
                    return true;
                }
                if dfa.is_dead_state(state) {
                    return false;
                }
                // A quit state (none without Unicode classes): the regex answers.
                return self.regex.is_match(digits);
            }
        }
        dfa.is_match_state(dfa.next_eoi_state(state))
    }
}

/// Built without acceleration (and with no prefilter nor special start states), so that
/// only match, dead and quit states are special.
fn dfa(pattern: &str) -> Option<(dense::DFA<Vec<u32>>, StateID)> {
    let dfa = dense::Builder::new()
        .syntax(
            regex_automata::util::syntax::Config::new()
                .ignore_whitespace(true)
                .unicode(false)
                .utf8(false),
        )
        .thompson(regex_automata::nfa::thompson::Config::new().utf8(false))
        .configure(
            dense::Config::new()
                .start_kind(StartKind::Anchored)
                .dfa_size_limit(Some(DFA_BYTES))
                .determinize_size_limit(Some(DFA_BYTES))
                .accelerate(false),
        )
        .build(pattern)
        .ok()?;
    let start = dfa
        .start_state(&start::Config::new().anchored(Anchored::Yes))
        .ok()?;
    Some((dfa, start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::identity::{normalize, normalize_slowly};

    /// splitmix64: a fixed sequence, so a disagreement names a number that can be re-run.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn digits(&mut self, len: usize) -> String {
            (0..len)
                .map(|_| char::from(b'0' + self.below(10) as u8))
                .collect()
        }
    }

    /// A number in one of the shapes customers' numbers arrive in, from a region's valid
    /// examples: as is, with a digit changed, one dropped or added, random digits of a
    /// possible length, with the national prefix kept after the code, in national and
    /// international formats with punctuation.
    fn shape(rng: &mut Rng, code: u16, meta: &Metadata, example: &str) -> String {
        let national_prefix = meta.national_prefix().unwrap_or("0");
        let lengths = meta.descriptors().general().possible_length();
        match rng.below(12) {
            0..=2 => format!("+{code}{example}"),
            3 => {
                let mut d = example.as_bytes().to_vec();
                let i = rng.below(d.len());
                d[i] = b'0' + rng.below(10) as u8;
                format!("+{code}{}", String::from_utf8(d).expect("digits"))
            }
            4 => format!("+{code}{}", &example[..example.len() - 1]),
            5 => format!("+{code}{example}{}", rng.below(10)),
            6 => {
                let len = lengths.get(rng.below(lengths.len().max(1))).copied();
                format!("+{code}{}", rng.digits(usize::from(len.unwrap_or(9))))
            }
            7 => format!("+{code}{national_prefix}{example}"),
            8 => format!("{national_prefix}{example}"),
            9 => {
                let (a, b) = example.split_at(example.len() / 2);
                format!("+{code} ({a}) {b}")
            }
            10 => format!("00{code} {example}"),
            _ => {
                let len = 1 + rng.below(17);
                format!("+{}", rng.digits(len))
            }
        }
    }

    /// Every region's expressions are DFAs (so the test below checks the DFAs, and none
    /// falls back to its regex for want of room).
    #[test]
    fn every_expression_builds_as_a_dfa() {
        let mut built = 0;
        let mut each = |e: &AtStart, what: &str| {
            assert!(e.dfa.is_some(), "{what}: no DFA within {DFA_BYTES} bytes");
            built += 1;
        };
        for code in (0..1000).filter(|&c| KNOWN[c]) {
            let rules = Code::compile(code as u16);
            for r in rules.single.iter().chain(&rules.several) {
                let what = format!("+{code}");
                r.leading_digits.iter().for_each(|e| each(e, &what));
                each(&r.general.regex, &what);
                (r.by_length.iter().filter_map(|(_, e)| e.as_ref())).for_each(|e| each(e, &what));
                r.other_lengths.iter().for_each(|e| each(e, &what));
            }
        }
        for d in DEFAULTS.keys().filter_map(|&region| default_rules(region)) {
            d.idd
                .iter()
                .chain(&d.prefix_for_parsing)
                .for_each(|e| each(e, "a default"));
        }
        assert!(built > 1_000, "{built} expressions");
    }

    #[test]
    fn agrees_with_phonenumber_on_over_a_million_numbers() {
        const TOTAL: usize = 1_050_000;
        let mut rng = Rng(20_261_201);
        let regions: Vec<(country::Id, &Metadata)> = DATABASE
            .iter()
            .filter_map(|m| Some((m.id().parse().ok()?, m)))
            .collect();
        let per_region = TOTAL.div_ceil(regions.len());
        let (mut checked, mut decided, mut valid, mut e164_shaped) = (0, 0, 0, 0);
        let mut disagreements = Vec::new();
        // One region at a time, and one other default region for each: `phonenumber`'s cache
        // of 100 compiled expressions then stays warm (the test takes seconds, not minutes).
        for &(own, meta) in &regions {
            let examples: Vec<&str> = [
                meta.descriptors().fixed_line(),
                meta.descriptors().mobile(),
                meta.descriptors().toll_free(),
                meta.descriptors().voip(),
                meta.descriptors().premium_rate(),
            ]
            .into_iter()
            .flatten()
            .filter_map(Descriptor::example)
            .filter(|e| !e.is_empty())
            .collect();
            let fallback = "612345678";
            let other = regions[rng.below(regions.len())].0;
            for i in 0..per_region {
                let example = examples
                    .get(rng.below(examples.len().max(1)))
                    .copied()
                    .unwrap_or(fallback);
                let raw = shape(&mut rng, meta.country_code(), meta, example);
                // A quarter of them with another region as the default.
                let default = if i < per_region * 3 / 4 { own } else { other };
                let fast = normalize(&raw, default).map(|n| n.as_e164().to_owned());
                let slow = normalize_slowly(&raw, default).map(|n| n.as_e164().to_owned());
                checked += 1;
                e164_shaped += usize::from(raw.starts_with('+') && !raw.contains(' '));
                decided += usize::from(check(&raw, default).is_some());
                valid += usize::from(slow.is_ok());
                if fast != slow && disagreements.len() < 20 {
                    disagreements.push(format!("{raw} in {default:?}: {fast:?} vs {slow:?}"));
                }
            }
        }
        assert!(checked >= 1_000_000, "{checked} numbers");
        assert!(disagreements.is_empty(), "{disagreements:#?}");
        // The test means something only if both answers and the fast path are common.
        assert!(
            valid > checked / 5 && valid < checked * 4 / 5,
            "{valid} valid of {checked}"
        );
        assert!(
            decided * 10 > e164_shaped * 8,
            "{decided} decided of {e164_shaped}"
        );
    }

    #[test]
    fn declines_what_phonenumber_would_strip_or_refuse() {
        // Spain's mobile, decided here.
        assert_eq!(check("+34612345678", country::Id::ES), Some(Check::Valid));
        assert_eq!(check("+3461234567", country::Id::ES), Some(Check::Invalid));
        // After a `+`, `phonenumber` strips the default region's national prefix ("0" in
        // France): a French number written with it is left to `phonenumber`.
        assert_eq!(check("+330612345678", country::Id::FR), None);
        // A leading zero is no country code; letters and spaces are not E.164.
        assert_eq!(check("+0612345678", country::Id::ES), None);
        assert_eq!(check("+34 612 345 678", country::Id::ES), None);
        assert_eq!(check("612345678", country::Id::ES), None);
    }
}
