//! Intent classification from configured rules: keywords (whole words or phrases) and regular
//! expressions, matched against the text lower-cased with Spanish/Portuguese/French accents
//! removed, so "DEVOLUCIÓN", "devolución" and "devolucion" are one keyword.
//!
//! A tenant's keywords compile into one Aho-Corasick automaton (one pass over the text
//! whatever their number, reporting every occurrence of every keyword), each occurrence
//! then checked for word boundaries exactly as `\b…\b` would; its regular expressions are
//! matched one by one, each skipping texts without its literal words. When several intents
//! match, the highest priority wins, then the first configured.
use std::borrow::Cow;
use std::cell::RefCell;

use aho_corasick::AhoCorasick;
use regex::Regex;
use regex_syntax::is_word_character;

use crate::config::IntentConfig;

#[derive(Debug, Clone)]
pub struct Classifier {
    /// Every keyword of every intent, folded, its words joined by one space: matched on the
    /// folded text with each run of white space made one space. None: no keywords.
    keywords: Option<AhoCorasick>,
    /// Each keyword's intent, by the automaton's pattern number.
    keyword_intent: Vec<usize>,
    /// The configured expressions, each on its own with its intent: a lone expression first
    /// looks for its literal words ("quiero") and is done at once when they are absent.
    patterns: Vec<(usize, Regex)>,
    /// Priority of each intent, to break ties between several matches.
    priority: Vec<u32>,
}

impl Classifier {
    /// `default_priority` is used for intents that set none. Patterns were validated by
    /// `Config::validate`; an error here is still returned rather than panicking.
    pub fn new(intents: &[IntentConfig], default_priority: u32) -> Result<Self, regex::Error> {
        let mut keywords = Vec::new();
        let mut keyword_intent = Vec::new();
        let mut patterns = Vec::new();
        for (i, intent) in intents.iter().enumerate() {
            for kw in &intent.keywords {
                let words = fold(kw).split_whitespace().collect::<Vec<_>>().join(" ");
                if !words.is_empty() {
                    keywords.push(words);
                    keyword_intent.push(i);
                }
            }
            for p in &intent.patterns {
                patterns.push((i, Regex::new(&format!("(?i:{p})"))?));
            }
        }
        let keywords = match keywords.is_empty() {
            true => None,
            false => Some(
                AhoCorasick::new(&keywords)
                    .map_err(|e| regex::Error::Syntax(format!("keywords: {e}")))?,
            ),
        };
        Ok(Self {
            keywords,
            keyword_intent,
            patterns,
            priority: intents
                .iter()
                .map(|i| i.priority.unwrap_or(default_priority))
                .collect(),
        })
    }

    /// The index of the winning intent, if any matched.
    pub fn classify(&self, text: &str) -> Option<usize> {
        if self.keywords.is_none() && self.patterns.is_empty() {
            return None;
        }
        thread_local! {
            /// The folded text: one buffer a thread, not an allocation a message.
            static FOLDED: RefCell<String> = const { RefCell::new(String::new()) };
        }
        FOLDED.with_borrow_mut(|folded| {
            fold_into(text, folded);
            let spaced = one_space(folded);
            let keywords = self.keywords.iter().flat_map(|ac| {
                ac.find_overlapping_iter(spaced.as_ref())
                    .filter(|m| whole_words(&spaced, m.start(), m.end()))
                    .map(|m| self.keyword_intent[m.pattern().as_usize()])
            });
            let patterns = self
                .patterns
                .iter()
                .filter(|(_, p)| p.is_match(folded))
                .map(|&(i, _)| i);
            keywords.chain(patterns).reduce(|b, i| self.better(b, i))
        })
    }

    /// Of two matching intents: the higher priority, then the first configured.
    fn better(&self, b: usize, i: usize) -> usize {
        match self.priority[b].cmp(&self.priority[i]) {
            std::cmp::Ordering::Greater => b,
            std::cmp::Ordering::Less => i,
            std::cmp::Ordering::Equal => b.min(i),
        }
    }
}

/// Whether `text[start..end]` has a word boundary (`\b`) at both ends: at each, a word
/// character on exactly one side (the text's ends count as non-word).
fn whole_words(text: &str, start: usize, end: usize) -> bool {
    let word = |c: Option<char>| c.is_some_and(is_word_character);
    let (before, inside, after) = (&text[..start], &text[start..end], &text[end..]);
    word(before.chars().next_back()) != word(inside.chars().next())
        && word(inside.chars().next_back()) != word(after.chars().next())
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
/// with 0xE1–0xE3 (U+1680, U+2000–U+3000) or is U+0085 or U+00A0: a text with none of those
/// and no ASCII white space but the space (most texts) is told by looking for two spaces; the
/// rest, character by character.
fn one_spaced(text: &str) -> bool {
    // One flag byte, comparisons only, no early exit: the compiler checks many bytes at once.
    const OTHER: u8 = 1;
    const C2: u8 = 2;
    let seen = text.as_bytes().iter().fold(0u8, |seen, &b| {
        let tab_to_return = b.wrapping_sub(b'\t') <= b'\r' - b'\t';
        let lead = b.wrapping_sub(0xe1) <= 2;
        seen | (u8::from(tab_to_return | lead) * OTHER) | (u8::from(b == 0xc2) * C2)
    });
    if seen & OTHER != 0 || seen & C2 != 0 && (text.contains('\u{85}') || text.contains('\u{a0}')) {
        return one_spaced_by_chars(text);
    }
    !text.contains("  ")
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
pub fn fold_into(text: &str, out: &mut String) {
    out.clear();
    if text.is_ascii() {
        // Most messages: one copy, lower-cased in place.
        out.push_str(text);
        out.make_ascii_lowercase();
        return;
    }
    let mut rest = text;
    while !rest.is_empty() {
        // Runs of ASCII (most of any text) are copied and lower-cased whole.
        let ascii = rest
            .bytes()
            .position(|b| !b.is_ascii())
            .unwrap_or(rest.len());
        let start = out.len();
        out.push_str(&rest[..ascii]);
        out[start..].make_ascii_lowercase();
        let mut chars = rest[ascii..].chars();
        if let Some(c) = chars.next() {
            fold_char(c, out);
        }
        rest = chars.as_str();
    }
}

/// A character past ASCII: lower-cased (Latin-1's letters without the case tables: each
/// capital is its small letter's code less 0x20), then its accent stripped.
fn fold_char(c: char, out: &mut String) {
    match c {
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
        for kw in keywords {
            let c = Classifier::new(&[intent("k", 10, &[kw], &[])], 10).unwrap();
            let words: Vec<_> = fold(kw).split_whitespace().map(regex::escape).collect();
            let classic = Regex::new(&format!(r"\b{}\b", words.join(r"\s+"))).unwrap();
            for text in texts {
                assert_eq!(
                    c.classify(text).is_some(),
                    classic.is_match(&fold(text)),
                    "{kw:?} in {text:?}"
                );
            }
        }
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
        for c in (0..=0x10_ffff).filter_map(char::from_u32) {
            for text in [c.to_string(), format!("Ab{c}Cd{c}{c} É")] {
                fold_into(&text, &mut buf);
                assert_eq!(buf, fold_by_tables(&text), "{text:?}");
            }
        }
        assert_eq!(
            fold("¿Dónde ESTÁ mi PEDIDO, Ñandú?"),
            "¿donde esta mi pedido, nandu?"
        );
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
                assert_eq!(one_spaced(text), one_spaced_by_chars(text), "{text:?}");
            }
            texts = longer;
        }
    }

    #[test]
    fn no_rules_match_nothing() {
        let c = Classifier::new(&[], 10).unwrap();
        assert_eq!(c.classify("anything"), None);
    }
}
