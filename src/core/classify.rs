//! Intent classification from configured rules: keywords (whole words or phrases) and regular
//! expressions, matched against the text lower-cased with Spanish/Portuguese/French accents
//! removed, so "DEVOLUCIÓN", "devolución" and "devolucion" are one keyword.
//!
//! A tenant's keywords compile into one Aho-Corasick automaton (one pass over the text
//! whatever their number, reporting every occurrence of every keyword), each occurrence
//! then checked for word boundaries exactly as `\b…\b` would; a long text is walked as two
//! halves side by side (`each_match_in_halves`). The same pass looks for each
//! regular expression's required literals (every match begins with one of them, by
//! `regex_syntax`'s prefix extraction): an expression runs only on a text holding one. When
//! several intents match, the highest priority wins, then the first configured.
use std::borrow::Cow;
use std::cell::RefCell;

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::{Anchored, dfa, nfa};
use regex_automata::meta;
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::{is_word_byte, is_word_character};

use crate::config::IntentConfig;

#[derive(Debug, Clone)]
pub struct Classifier {
    /// Every keyword of every intent, folded, its words joined by one space, and every
    /// expression's required literals: matched on the folded text with each run of white
    /// space made one space. None: neither.
    automaton: Option<Words>,
    /// The longest of the automaton's patterns, in bytes.
    longest: usize,
    /// What each of the automaton's patterns means, by its number.
    hits: Vec<Hit>,
    /// The configured expressions, each with its intent and, if it has one, the bit of
    /// `Hit::gates` that says a text may match it.
    patterns: Vec<(usize, meta::Regex, Option<u32>)>,
    /// Priority of each intent, to break ties between several matches.
    priority: Vec<u32>,
}

/// The automaton as `AhoCorasick` would choose it (a DFA for up to 100 patterns, else a
/// contiguous NFA), held by its type so that each byte's step is inlined rather than a
/// dynamic call.
#[derive(Debug, Clone)]
enum Words {
    Dfa(dfa::DFA),
    Nfa(nfa::contiguous::NFA),
}

/// One of the automaton's patterns (one string, however many rules share it).
#[derive(Debug, Clone, Default)]
struct Hit {
    /// The best intent with this keyword, if it is one.
    keyword: Option<usize>,
    /// The expressions this is a required literal of, one bit each.
    gates: u64,
}

/// Expressions past this many with required literals run on every text.
const GATES: usize = u64::BITS as usize;

impl Classifier {
    /// `default_priority` is used for intents that set none. Patterns were validated by
    /// `Config::validate`; an error here is still returned rather than panicking.
    pub fn new(intents: &[IntentConfig], default_priority: u32) -> Result<Self, regex::Error> {
        let priority: Vec<u32> = intents
            .iter()
            .map(|i| i.priority.unwrap_or(default_priority))
            .collect();
        let mut words: Vec<String> = Vec::new();
        let mut hits: Vec<Hit> = Vec::new();
        let mut patterns = Vec::new();
        let mut gated = 0;
        for (i, intent) in intents.iter().enumerate() {
            for kw in &intent.keywords {
                let word = fold(kw).split_whitespace().collect::<Vec<_>>().join(" ");
                if !word.is_empty() {
                    let h = hit(&mut words, &mut hits, word);
                    h.keyword = Some(better(&priority, h.keyword, i));
                }
            }
            for p in &intent.patterns {
                let source = format!("(?i:{p})");
                let gate = match required_literals(&source) {
                    Some(literals) if gated < GATES => {
                        for literal in literals {
                            hit(&mut words, &mut hits, literal).gates |= 1 << gated;
                        }
                        gated += 1;
                        Some(gated as u32 - 1)
                    }
                    _ => None,
                };
                // The regex crate's engine as `Regex` builds it, but a gated expression runs
                // without its own prefilter: on a text the automaton found one of its
                // literals in, searching for them again (a Teddy search for their case
                // variants) was most of its cost.
                let regex = meta::Regex::builder()
                    .configure(meta::Config::new().auto_prefilter(gate.is_none()))
                    .build(&source)
                    .map_err(|e| regex::Error::Syntax(e.to_string()))?;
                patterns.push((i, regex, gate));
            }
        }
        let automaton = match words.is_empty() {
            true => None,
            false => Some(
                Words::new(&words).map_err(|e| regex::Error::Syntax(format!("keywords: {e}")))?,
            ),
        };
        Ok(Self {
            automaton,
            longest: words.iter().map(String::len).max().unwrap_or(0),
            hits,
            patterns,
            priority,
        })
    }

    /// The index of the winning intent, if any matched.
    pub fn classify(&self, text: &str) -> Option<usize> {
        self.classify_then(text, |intent, _| intent)
    }

    /// [`classify`](Self::classify), then `then(intent, spaced)` with the text as keywords
    /// see it (folded, each run of white space one space): what was read for the intent
    /// serves other keyword checks (consent's). `then` must not classify again (the buffer
    /// is in use).
    pub fn classify_then<R>(&self, text: &str, then: impl FnOnce(Option<usize>, &str) -> R) -> R {
        thread_local! {
            /// The folded text: one buffer a thread, not an allocation a message.
            static FOLDED: RefCell<String> = const { RefCell::new(String::new()) };
        }
        FOLDED.with_borrow_mut(|folded| {
            fold_into(text, folded);
            let spaced = one_space(folded);
            let mut best = None;
            let mut gates = 0u64;
            if let Some(automaton) = &self.automaton {
                automaton.each_match(&spaced, self.longest, |pattern, start, end| {
                    let hit = &self.hits[pattern];
                    gates |= hit.gates;
                    if let Some(i) = hit.keyword
                        && whole_words(&spaced, start, end)
                    {
                        best = Some(better(&self.priority, best, i));
                    }
                });
            }
            for (i, regex, gate) in &self.patterns {
                let possible = gate.is_none_or(|bit| gates & (1 << bit) != 0);
                if possible && regex.is_match(folded.as_str()) {
                    best = Some(better(&self.priority, best, *i));
                }
            }
            then(best, &spaced)
        })
    }
}

/// The hit for pattern `word`, added if new.
fn hit<'a>(words: &mut Vec<String>, hits: &'a mut Vec<Hit>, word: String) -> &'a mut Hit {
    let at = match words.iter().position(|w| *w == word) {
        Some(at) => at,
        None => {
            words.push(word);
            hits.push(Hit::default());
            hits.len() - 1
        }
    };
    &mut hits[at]
}

/// Of the best matching intent so far (if any) and `i`: the higher priority, then the first
/// configured.
fn better(priority: &[u32], best: Option<usize>, i: usize) -> usize {
    let Some(b) = best else { return i };
    match priority[b].cmp(&priority[i]) {
        std::cmp::Ordering::Greater => b,
        std::cmp::Ordering::Less => i,
        std::cmp::Ordering::Equal => b.min(i),
    }
}

impl Words {
    fn new(words: &[String]) -> Result<Self, aho_corasick::BuildError> {
        // Each byte is one step: a prefilter would make start states special too.
        if words.len() <= 100
            && let Ok(dfa) = dfa::Builder::new().prefilter(false).build(words)
        {
            return Ok(Self::Dfa(dfa));
        }
        nfa::contiguous::Builder::new()
            .prefilter(false)
            .build(words)
            .map(Self::Nfa)
    }

    /// Calls `f(pattern, start, end)` for every occurrence of every pattern in `text` (in no
    /// particular order); `longest` is the longest pattern's length.
    fn each_match(&self, text: &str, longest: usize, f: impl FnMut(usize, usize, usize)) {
        match self {
            Self::Dfa(a) => each_match_in_halves(a, text, longest, f),
            Self::Nfa(a) => each_match_in_halves(a, text, longest, f),
        }
    }
}

/// A text walked in halves gives each at least this many bytes past the first half's overlap
/// (so it is at least `2 × HALF − 1` bytes longer than the longest pattern); a shorter one is
/// walked in one.
const HALF: usize = 16;

/// [`each_match`], a long text walked as two halves at once. Each step waits on the one
/// before (it reads the table at the state that one reached): two walks side by side take
/// about the time of one. The first half runs `longest - 1` bytes into the second, so every
/// occurrence ending there is found by it; the second half starts afresh where the first
/// ended, finds every occurrence that starts in it, and reports only those ending past the
/// first's reach.
fn each_match_in_halves<A: Automaton>(
    automaton: &A,
    text: &str,
    longest: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    let bytes = text.as_bytes();
    // Where the second half begins, so that both walk about as many bytes.
    let split = (bytes.len() + 1).saturating_sub(longest) / 2;
    if split < HALF {
        return each_match(automaton, text, f);
    }
    let (first, second) = (&bytes[..split + longest - 1], &bytes[split..]);
    // The occurrences `state` matches, ending at `end`, if that is `from` or later.
    let mut report = |state: StateID, end: usize, from: usize| {
        if end < from {
            return;
        }
        for i in 0..automaton.match_len(state) {
            let pattern = automaton.match_pattern(state, i);
            f(
                pattern.as_usize(),
                end - automaton.pattern_len(pattern),
                end,
            );
        }
    };
    let start = automaton
        .start_state(Anchored::No)
        .expect("an unanchored automaton");
    let (mut one, mut two) = (start, start);
    // The second half's reports begin past the first's reach.
    let reach = first.len() + 1;
    for (i, (&a, &b)) in first.iter().zip(second).enumerate() {
        one = automaton.next_state(Anchored::No, one, a);
        two = automaton.next_state(Anchored::No, two, b);
        if automaton.is_special(one) | automaton.is_special(two) {
            if automaton.is_match(one) {
                report(one, i + 1, 0);
            }
            if automaton.is_match(two) {
                report(two, split + i + 1, reach);
            }
        }
    }
    // The second half is as long as the first or a byte longer (`split` rounds down): its
    // last byte, if so.
    debug_assert!(second.len() - first.len() <= 1);
    for (i, &b) in second.iter().enumerate().skip(first.len()) {
        two = automaton.next_state(Anchored::No, two, b);
        if automaton.is_match(two) {
            report(two, split + i + 1, reach);
        }
    }
}

/// The overlapping search, walked byte by byte with the automaton's own steps (its
/// documented low-level interface): without a prefilter, only match states are special.
fn each_match<A: Automaton>(automaton: &A, text: &str, mut f: impl FnMut(usize, usize, usize)) {
    let bytes = text.as_bytes();
    let mut state = automaton
        .start_state(Anchored::No)
        .expect("an unanchored automaton");
    let mut at = 0;
    while let Some((matched, end)) = next_special(automaton, state, bytes, at) {
        (state, at) = (matched, end);
        if automaton.is_match(state) {
            for i in 0..automaton.match_len(state) {
                let pattern = automaton.match_pattern(state, i);
                f(
                    pattern.as_usize(),
                    end - automaton.pattern_len(pattern),
                    end,
                );
            }
        }
    }
}

/// From `state`, the steps over `bytes[at..]` up to the next special state: it and the
/// offset past the byte that reached it. A loop of its own, with no call in it, so that
/// its state stays in registers.
#[inline]
fn next_special<A: Automaton>(
    automaton: &A,
    mut state: StateID,
    bytes: &[u8],
    mut at: usize,
) -> Option<(StateID, usize)> {
    while let Some(&byte) = bytes.get(at) {
        state = automaton.next_state(Anchored::No, state, byte);
        at += 1;
        if automaton.is_special(state) {
            return Some((state, at));
        }
    }
    None
}

/// Literals one of which every match of the expression `source` (matched on folded text)
/// begins with, cut at their first white space so that they are found in the text made
/// one-spaced too; those holding a capital A–Z are left out, as no folded text holds one.
/// None when there are no such literals (the expression may begin with anything).
fn required_literals(source: &str) -> Option<Vec<String>> {
    let hir = regex_syntax::parse(source).ok()?;
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let mut literals = Vec::new();
    for literal in seq.literals()? {
        let bytes = literal.as_bytes();
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            // Cut inside a character by the extractor's length limit: its whole characters.
            Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).expect("valid up to"),
        };
        let text = text.split(char::is_whitespace).next().unwrap_or_default();
        if text.is_empty() {
            return None;
        }
        if !text.bytes().any(|b| b.is_ascii_uppercase()) && !literals.iter().any(|l| l == text) {
            literals.push(text.to_owned());
        }
    }
    // Every literal held a capital: no folded text can match; it runs anyway (it will not).
    (!literals.is_empty()).then_some(literals)
}

/// Whether `text[start..end]` has a word boundary (`\b`) at both ends: at each, a word
/// character on exactly one side (the text's ends count as non-word).
fn whole_words(text: &str, start: usize, end: usize) -> bool {
    let word = |c: Option<char>| c.is_some_and(word_character);
    let (before, inside, after) = (&text[..start], &text[start..end], &text[end..]);
    word(before.chars().next_back()) != word(inside.chars().next())
        && word(inside.chars().next_back()) != word(after.chars().next())
}

/// `regex_syntax`'s word character (the one `\b` uses), ASCII told by its byte: the crate's
/// own check searches its Unicode table for every character but ASCII word characters, so
/// also for the space and punctuation around most keywords.
fn word_character(c: char) -> bool {
    match u8::try_from(c) {
        Ok(b) if b.is_ascii() => is_word_byte(b),
        _ => is_word_character(c),
    }
}

/// The text with each run of white space made one space (a keyword's words are joined by
/// one); borrowed when it already is so (most messages).
fn one_space(text: &str) -> Cow<'_, str> {
    if one_spaced(text) {
        return Cow::Borrowed(text);
    }
    // The text's ends count as non-word, as white space does: dropping it there changes
    // no boundary.
    Cow::Owned(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Whether every run of white space in `text` is one space. Past ASCII, white space begins
/// with 0xE1–0xE3 (U+1680, U+2000–U+3000) or is U+0085 or U+00A0 (0xC2 0x85, 0xC2 0xA0): a
/// text with none of those and no ASCII white space but the space (most texts) is told by
/// looking for two spaces; the rest, character by character.
fn one_spaced(text: &str) -> bool {
    let tab_to_return = |b: u8| u8::from(b.wrapping_sub(b'\t') <= b'\r' - b'\t');
    // Bit 0: white space other than a space, or perhaps (past ASCII); bit 1: two spaces.
    let flags = each_pair(text.as_bytes(), |a, b| {
        let lead = u8::from(a.wrapping_sub(0xe1) <= 2);
        let latin = u8::from(a == 0xc2) & (u8::from(b == 0x85) | u8::from(b == 0xa0));
        let two = u8::from(a == b' ') & u8::from(b == b' ');
        tab_to_return(a) | lead | latin | two << 1
    });
    if flags & 1 != 0 {
        return one_spaced_by_chars(text);
    }
    flags & 2 == 0
}

/// `odd(byte, next)` or'ed over the bytes, the last one's next taken as a letter: 16 at a
/// time without an early exit, so that the compiler does each 16 at once.
fn each_pair(bytes: &[u8], odd: impl Fn(u8, u8) -> u8) -> u8 {
    const LANES: usize = 16;
    let lanes = |a: &[u8], b: &[u8]| a.iter().zip(b).fold(0, |found, (&a, &b)| found | odd(a, b));
    let mut found = 0;
    let mut at = 0;
    // Whole lanes whose next byte is in the text.
    while at + LANES < bytes.len() {
        found |= lanes(&bytes[at..at + LANES], &bytes[at + 1..=at + LANES]);
        at += LANES;
    }
    // The rest, up to a lane's worth, and the letter after.
    let mut rest = [b'a'; LANES + 1];
    rest[..bytes.len() - at].copy_from_slice(&bytes[at..]);
    found | lanes(&rest[..LANES], &rest[1..])
}

/// [`one_spaced`], character by character.
fn one_spaced_by_chars(text: &str) -> bool {
    let mut previous_space = false;
    text.chars().all(|c| {
        let ok = c == ' ' && !previous_space || !c.is_whitespace();
        previous_space = c == ' ';
        ok
    })
}

/// Lower-case and strip the accents of Latin letters used in Spanish, Portuguese and French.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    fold_into(text, &mut out);
    out
}

/// [`fold`] into `out` (cleared first), for a caller that keeps one buffer.
///
/// Runs of ASCII (most of any text; all of most messages) are copied whole, each character
/// past ASCII folded between them, and the ASCII letters lower-cased at the end in one pass
/// (a folded character is lower-case already, and lower-casing ASCII leaves the other bytes
/// alone). Finding each run byte by byte and lower-casing it on its own cost the routing
/// bench's texts (two of five Spanish, with accents) 367 instructions a message here on
/// average; this way 296, and a known customer's message took ~4% less time (`cargo bench
/// --bench routing`, builds alternating).
pub fn fold_into(text: &str, out: &mut String) {
    out.clear();
    let mut rest = text;
    loop {
        let ascii = ascii_prefix(rest.as_bytes());
        out.push_str(&rest[..ascii]);
        let mut chars = rest[ascii..].chars();
        let Some(c) = chars.next() else { break };
        fold_char(c, out);
        rest = chars.as_str();
    }
    out.make_ascii_lowercase();
}

/// How many of `bytes`' first bytes are ASCII: eight at a time (a byte past ASCII has its
/// high bit set), then one at a time.
fn ascii_prefix(bytes: &[u8]) -> usize {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        if word & HIGH != 0 {
            // The first byte in memory order is the word's lowest.
            return at + (word & HIGH).trailing_zeros() as usize / 8;
        }
        at += 8;
    }
    at + bytes[at..].iter().take_while(|b| b.is_ascii()).count()
}

/// A character past ASCII: lower-cased (Latin-1's letters without the case tables: each
/// capital is its small letter's code less 0x20), then its accent stripped.
fn fold_char(c: char, out: &mut String) {
    match c {
        // U+0080–U+00BF (¿, ¡, «, º …): no capitals among them, no accents.
        '\u{80}'..='\u{bf}' => out.push(c),
        // À–Þ but ×: capitals.
        '\u{c0}'..='\u{de}' if c != '×' => {
            out.push(strip_accent(
                char::from_u32(u32::from(c) + 0x20).expect("Latin-1"),
            ));
        }
        // ß–ÿ and ÷: small letters already.
        '\u{df}'..='\u{ff}' => out.push(strip_accent(c)),
        _ => out.extend(c.to_lowercase().map(strip_accent)),
    }
}

/// A small letter without its accent (Spanish, Portuguese and French letters).
fn strip_accent(l: char) -> char {
    match l {
        'á' | 'à' | 'â' | 'ä' | 'ã' => 'a',
        'é' | 'è' | 'ê' | 'ë' => 'e',
        'í' | 'ì' | 'î' | 'ï' => 'i',
        'ó' | 'ò' | 'ô' | 'ö' | 'õ' => 'o',
        'ú' | 'ù' | 'û' | 'ü' => 'u',
        'ñ' => 'n',
        'ç' => 'c',
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IntentMode;

    fn intent(name: &str, priority: u32, keywords: &[&str], patterns: &[&str]) -> IntentConfig {
        IntentConfig {
            name: name.into(),
            mode: IntentMode::Bot,
            queue: None,
            priority: Some(priority),
            keywords: keywords.iter().map(|s| s.to_string()).collect(),
            patterns: patterns.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn classifier() -> Classifier {
        Classifier::new(
            &[
                intent("hours", 10, &["horario", "opening hours"], &[]),
                intent("status", 10, &["estado del pedido", "order status"], &[]),
                intent("return", 40, &["devolución", "return"], &[]),
                intent(
                    "fraud",
                    80,
                    &["fraude"],
                    &[r"\bno (he|hice) (esa|esta) compra"],
                ),
            ],
            10,
        )
        .unwrap()
    }

    #[test]
    fn matches_spanish_and_english_ignoring_case_and_accents() {
        let c = classifier();
        assert_eq!(c.classify("¿Cuál es el HORARIO?"), Some(0));
        assert_eq!(c.classify("What are your opening   hours?"), Some(0));
        assert_eq!(c.classify("Quiero saber el estado del pedido"), Some(1));
        assert_eq!(c.classify("quiero hacer una DEVOLUCION"), Some(2));
        assert_eq!(c.classify("quiero hacer una devolución"), Some(2));
        assert_eq!(c.classify("yo no hice esta compra"), Some(3));
    }

    /// The word check agrees with `regex_syntax`'s for every character.
    #[test]
    fn word_characters_are_regex_syntax_s() {
        for c in (0..=0x10_ffff).filter_map(char::from_u32) {
            assert_eq!(word_character(c), is_word_character(c), "{c:?}");
        }
    }

    #[test]
    fn whole_words_only() {
        let c = classifier();
        // "returning" is not the keyword "return".
        assert_eq!(c.classify("I am returning home"), None);
        assert_eq!(c.classify("hola"), None);
    }

    #[test]
    fn highest_priority_wins_then_first_configured() {
        let c = classifier();
        // return (40) and order status (10): friction wins.
        assert_eq!(c.classify("order status and a return please"), Some(2));
        // hours and status share priority 10: the first configured wins.
        assert_eq!(c.classify("estado del pedido y horario"), Some(0));
        assert_eq!(c.classify("fraude, quiero una devolución"), Some(3));
        // Keywords ending at the same byte (one state matches both): both count.
        for (phrase, word) in [(40, 10), (10, 40)] {
            let c = Classifier::new(
                &[
                    intent("phrase", phrase, &["mi pedido"], &[]),
                    intent("word", word, &["pedido"], &[]),
                ],
                10,
            )
            .unwrap();
            let best = if phrase > word { 0 } else { 1 };
            assert_eq!(c.classify("es mi pedido"), Some(best), "{phrase} {word}");
        }
    }

    /// Keywords match exactly as `\b…\b` does, on texts with and without non-ASCII
    /// characters around the words, whatever the keyword's ends.
    #[test]
    fn keyword_boundaries_agree_with_word_boundaries() {
        let keywords = [
            "pedido",
            "donde esta mi pedido",
            "return",
            "a que hora",
            "no",
            "¿ayuda?",
            "café",
            "日本",
        ];
        let texts = [
            "¿dónde está mi pedido?",
            "¿donde esta mi pedidó?",
            "pedidos",
            "mi pedido",
            "pedido",
            "«pedido»",
            "no",
            "¿no?",
            "ño",
            "nó",
            "noж",
            "жno",
            "returned",
            "return!",
            "_return",
            "a que  hora abren",
            "a\tque\n hora",
            "a\u{a0}que hora!",
            "  pedido  ",
            "mi\u{2003}pedido.",
            "¿a qué hora?",
            "¿ayuda?",
            "x¿ayuda?",
            "necesito ¿ayuda? ya",
            "un café",
            "cafés",
            "日本",
            "日本語",
            "",
        ];
        // Past 100 patterns the automaton is an NFA: both kinds are checked.
        let fillers: Vec<String> = (0..120).map(|n| format!("filler{n}")).collect();
        for kw in keywords {
            let alone = Classifier::new(&[intent("k", 10, &[kw], &[])], 10).unwrap();
            let mut many = fillers.iter().map(String::as_str).collect::<Vec<_>>();
            many.push(kw);
            let many = Classifier::new(&[intent("k", 10, &many, &[])], 10).unwrap();
            assert!(matches!(alone.automaton, Some(Words::Dfa(_))));
            assert!(matches!(many.automaton, Some(Words::Nfa(_))));
            let words: Vec<_> = fold(kw).split_whitespace().map(regex::escape).collect();
            let classic = regex::Regex::new(&format!(r"\b{}\b", words.join(r"\s+"))).unwrap();
            for text in texts {
                for c in [&alone, &many] {
                    assert_eq!(
                        c.classify(text).is_some(),
                        classic.is_match(&fold(text)),
                        "{kw:?} in {text:?}"
                    );
                }
            }
        }
    }

    /// Walked in halves, a text gives every occurrence a walk in one does, once: patterns
    /// of every length up to the longest, overlapping and repeated, in texts of every
    /// length around where halves begin, occurrences across the split included. Both kinds
    /// of automaton.
    #[test]
    fn halves_find_what_one_walk_finds() {
        let words: Vec<String> = [
            "a",
            "ab",
            "ba",
            "abab",
            "bbb",
            "ab ba",
            "aaaaaaaaaaaaaaaaaaaa",
        ]
        .map(String::from)
        .into();
        let longest = words.iter().map(String::len).max().unwrap();
        let fillers = (0..120).map(|n| format!("filler{n}"));
        let many: Vec<String> = words.iter().cloned().chain(fillers).collect();
        let (dfa, nfa) = (Words::new(&words).unwrap(), Words::new(&many).unwrap());
        assert!(matches!(dfa, Words::Dfa(_)) && matches!(nfa, Words::Nfa(_)));
        // Texts from a small alphabet (a few generators' worth of each length).
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (seed >> 33) as usize
        };
        let mut halved = 0;
        for len in 0..140usize {
            for _ in 0..20 {
                let text: String = (0..len).map(|_| ['a', 'b', ' ', 'x'][next() % 4]).collect();
                for words in [&dfa, &nfa] {
                    let (mut one, mut halves) = (Vec::new(), Vec::new());
                    match words {
                        Words::Dfa(a) => each_match(a, &text, |p, s, e| one.push((p, s, e))),
                        Words::Nfa(a) => each_match(a, &text, |p, s, e| one.push((p, s, e))),
                    }
                    words.each_match(&text, longest, |p, s, e| halves.push((p, s, e)));
                    halves.sort_unstable();
                    one.sort_unstable();
                    assert_eq!(halves, one, "{text:?}");
                }
                halved += usize::from((len + 1).saturating_sub(longest) / 2 >= HALF);
            }
        }
        assert!(halved > 1_000, "{halved} texts walked in halves");
    }

    /// Folding as first written: lower-case each character with the Unicode tables, then
    /// strip its accent (Latin-1's capitals are lower-cased without the tables).
    fn fold_by_tables(text: &str) -> String {
        text.chars()
            .flat_map(char::to_lowercase)
            .map(strip_accent)
            .collect()
    }

    /// Every character, alone and between ASCII, folds as the Unicode tables say; and one
    /// buffer reused gives what a fresh one does.
    #[test]
    fn folding_agrees_with_the_unicode_tables_for_every_character() {
        let mut buf = String::new();
        // Runs of ASCII longer than a word, the character at every offset within one.
        let long = "HOLA buenas Tardes";
        for c in (0..=0x10_ffff).filter_map(char::from_u32) {
            let cut = c as usize % 17;
            for text in [
                c.to_string(),
                format!("Ab{c}Cd{c}{c} É"),
                format!("{}{c}{long}{c}", &long[..cut]),
            ] {
                fold_into(&text, &mut buf);
                assert_eq!(buf, fold_by_tables(&text), "{text:?}");
                // What `required_literals` relies on: no folded text holds a capital A–Z.
                assert!(!buf.bytes().any(|b| b.is_ascii_uppercase()), "{text:?}");
            }
        }
        assert_eq!(
            fold("¿Dónde ESTÁ mi PEDIDO, Ñandú?"),
            "¿donde esta mi pedido, nandu?"
        );
    }

    /// The ASCII prefix is found exactly, whatever the first byte past ASCII's offset within
    /// a word, and a text with none is ASCII whole.
    #[test]
    fn the_ascii_prefix_ends_at_the_first_byte_past_ascii() {
        for len in 0..=20 {
            let ascii = "x".repeat(len);
            assert_eq!(ascii_prefix(ascii.as_bytes()), len);
            for at in 0..=len {
                let text = format!("{}é{}", &ascii[..at], &ascii[at..]);
                assert_eq!(ascii_prefix(text.as_bytes()), at, "{text:?}");
            }
        }
    }

    /// The byte-wise check agrees with the check by characters on every text of up to five
    /// characters from spaces, other white space (ASCII and each lead byte of Unicode's),
    /// letters and punctuation (ASCII and not).
    #[test]
    fn one_spaced_agrees_with_the_check_by_characters() {
        // Every white space character past ASCII is one of those looked for.
        for c in (0x80..=0x10_ffff).filter_map(char::from_u32) {
            let lead = c.to_string().as_bytes()[0];
            assert!(
                !c.is_whitespace()
                    || matches!(lead, 0xe1..=0xe3)
                    || matches!(c, '\u{85}' | '\u{a0}'),
                "{c:?}"
            );
        }
        let alphabet = [
            ' ', 'a', '\t', '\u{a0}', 'ñ', '¿', '\u{85}', '\u{2003}', '\u{3000}', '’',
        ];
        let mut texts = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = texts
                .iter()
                .flat_map(|t| alphabet.map(|c| format!("{t}{c}")))
                .collect();
            for text in &longer {
                // Alone, and moved across the checks' lanes of 16 bytes.
                for text in [
                    text.clone(),
                    format!("ab cd efg hij {text}"),
                    format!("{text} kl"),
                ] {
                    assert_eq!(one_spaced(&text), one_spaced_by_chars(&text), "{text:?}");
                }
            }
            texts = longer;
        }
    }

    /// An expression runs only on texts holding one of its required literals, and classifies
    /// every text as the expression alone does on the folded text: expressions with literals
    /// (in any case, after white space, non-ASCII, in alternatives) and without.
    #[test]
    fn expressions_match_as_alone_whether_or_not_their_literals_gate_them() {
        let patterns = [
            (
                r"\bquiero (hablar|poner) (con|una) (un )?(humano|persona|queja)",
                true,
            ),
            (r"\bno (he|hice) (esa|esta) compra", true),
            ("QUIERO  Hablar", true),
            (r"kilo|SOS", true),
            (r"(reclamo|queja)\s+formal", true),
            (r"\d{5}", false),
            (r"^\s*hola", false),
            (r"(a|.*)b", false),
            (r"\s+adios", false),
            ("café", true),
            ("CAFÉ|cafe", true),
        ];
        let texts = [
            "Quiero hablar con un humano",
            "quiero  poner una queja",
            "quiero\thablar con una persona",
            "yo no hice esta compra",
            "no he esa compra",
            "QUIERO HABLAR",
            "Quiero  hablar ya",
            "quiero hablar",
            "un \u{212a}ilo de SOS", // the Kelvin sign folds to k
            "ſos",
            "reclamo   formal",
            "Queja\nformal",
            "pedido 48213",
            "  hola",
            "ab",
            "b",
            "x  adios",
            "adios",
            "un café",
            "un cafe",
            "",
        ];
        for (p, literals) in patterns {
            let c = Classifier::new(&[intent("p", 10, &[], &[p])], 10).unwrap();
            assert_eq!(c.patterns[0].2.is_some(), literals, "{p:?} gated");
            let alone = regex::Regex::new(&format!("(?i:{p})")).unwrap();
            for text in texts {
                assert_eq!(
                    c.classify(text).is_some(),
                    alone.is_match(&fold(text)),
                    "{p:?} on {text:?}"
                );
            }
        }
        assert_eq!(
            required_literals(r"(?i:\bquiero (hablar|poner))"),
            Some(vec!["quiero".to_owned()])
        );
        // With keywords: an expression's literal that is also a keyword gates it and still
        // counts as the keyword.
        let c = Classifier::new(
            &[
                intent("word", 10, &["queja"], &[]),
                intent("phrase", 20, &[], &[r"queja formal"]),
            ],
            10,
        )
        .unwrap();
        assert_eq!(c.classify("una queja formal"), Some(1));
        assert_eq!(c.classify("una queja"), Some(0));
        assert_eq!(c.classify("formal"), None);
    }

    #[test]
    fn no_rules_match_nothing() {
        let c = Classifier::new(&[], 10).unwrap();
        assert_eq!(c.classify("anything"), None);
    }
}
