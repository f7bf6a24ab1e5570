//! Intent classification from configured rules: keywords (whole words or phrases) and regular
//! expressions, matched against the text lower-cased with Spanish/Portuguese/French accents
//! removed, so "DEVOLUCIÓN", "devolución" and "devolucion" are one keyword.
//!
//! A tenant's keywords compile into one `RegexSet` (one pass over the text whatever their
//! number, on the `regex` crate's DFAs); its regular expressions are matched one by one, each
//! skipping texts without its literal words. When several intents match, the highest priority
//! wins, then the first configured.
use regex::{Regex, RegexSet};

use crate::config::IntentConfig;

#[derive(Debug, Clone)]
pub struct Classifier {
    /// Every keyword of every intent in one set, with ASCII word boundaries: a Unicode `\b`
    /// keeps the `regex` crate off its DFAs on any non-ASCII text, such as "¿dónde…?" (its
    /// PikeVM: 14 µs a message against 0.3 µs here). On folded text the ASCII boundaries
    /// find every match the Unicode ones find (and, beside a non-ASCII letter, a few more),
    /// so on ASCII text they are the answer and on other text each hit is confirmed by
    /// `exact`.
    keywords: RegexSet,
    /// The same keywords, then the configured expressions, in one set: on ASCII text (most
    /// messages) one pass on the DFA answers everything.
    everything: RegexSet,
    /// Each keyword's intent, the keyword with Unicode word boundaries, and whether a hit on
    /// ASCII text needs it too (an end of the keyword is not an ASCII letter, digit or `_`).
    exact: Vec<(usize, Regex, bool)>,
    /// The configured expressions, each on its own with its intent. Not in a set, for the
    /// same reason: a lone expression first looks for its literal words ("quiero") and is
    /// done at once when they are absent.
    patterns: Vec<(usize, Regex)>,
    /// Priority of each intent, to break ties between several matches.
    priority: Vec<u32>,
}

impl Classifier {
    /// `default_priority` is used for intents that set none. Patterns were validated by
    /// `Config::validate`; an error here is still returned rather than panicking.
    pub fn new(intents: &[IntentConfig], default_priority: u32) -> Result<Self, regex::Error> {
        let mut keywords = Vec::new();
        let mut exact = Vec::new();
        let mut patterns = Vec::new();
        for (i, intent) in intents.iter().enumerate() {
            for kw in &intent.keywords {
                let (ascii, unicode, always) = keyword_patterns(kw);
                keywords.push(ascii);
                exact.push((i, Regex::new(&unicode)?, always));
            }
            for p in &intent.patterns {
                patterns.push((i, Regex::new(&format!("(?i:{p})"))?));
            }
        }
        let expressions = patterns.iter().map(|(_, p): &(usize, Regex)| p.as_str());
        Ok(Self {
            everything: RegexSet::new(keywords.iter().map(String::as_str).chain(expressions))?,
            keywords: RegexSet::new(&keywords)?,
            exact,
            patterns,
            priority: intents
                .iter()
                .map(|i| i.priority.unwrap_or(default_priority))
                .collect(),
        })
    }

    /// The index of the winning intent, if any matched.
    pub fn classify(&self, text: &str) -> Option<usize> {
        if self.exact.is_empty() && self.patterns.is_empty() {
            return None;
        }
        let folded = fold(text);
        let ascii = folded.is_ascii();
        if ascii {
            let intent = |k: usize| match self.exact.get(k) {
                Some(&(i, ref exact, always)) => (!always || exact.is_match(&folded)).then_some(i),
                None => Some(self.patterns[k - self.exact.len()].0),
            };
            return self
                .everything
                .matches(&folded)
                .into_iter()
                .filter_map(intent)
                .reduce(|b, i| self.better(b, i));
        }
        let keywords = self
            .keywords
            .matches(&folded)
            .into_iter()
            .map(|k| &self.exact[k])
            .filter(|(_, exact, always)| (ascii && !always) || exact.is_match(&folded))
            .map(|&(i, _, _)| i);
        let patterns = self
            .patterns
            .iter()
            .filter(|(_, p)| p.is_match(&folded))
            .map(|&(i, _)| i);
        keywords.chain(patterns).reduce(|b, i| self.better(b, i))
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

/// A keyword matches as whole words; inner spaces match any run of white space. Two
/// patterns: with ASCII word boundaries (`(?-u:\b)`) for the set, and with Unicode ones, the
/// definition; and whether every hit needs the definition (an end of the keyword is not an
/// ASCII word character: no boundary is written there in the set's pattern).
fn keyword_patterns(keyword: &str) -> (String, String, bool) {
    let folded = fold(keyword);
    let words = folded
        .split_whitespace()
        .map(regex::escape)
        .collect::<Vec<_>>()
        .join(r"\s+");
    let ascii_word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let edge = |c| if ascii_word(c) { r"(?-u:\b)" } else { "" };
    let (first, last) = (
        folded.trim().chars().next(),
        folded.trim().chars().next_back(),
    );
    let ascii = format!("{}{words}{}", edge(first), edge(last));
    let always = !ascii_word(first) || !ascii_word(last);
    (ascii, format!(r"\b{words}\b"), always)
}

/// Lower-case and strip the accents of Latin letters used in Spanish, Portuguese and French.
pub fn fold(text: &str) -> String {
    // Most messages are plain ASCII: one pass, no per-character case tables.
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c.to_ascii_lowercase());
            continue;
        }
        for l in c.to_lowercase() {
            out.push(match l {
                'á' | 'à' | 'â' | 'ä' | 'ã' => 'a',
                'é' | 'è' | 'ê' | 'ë' => 'e',
                'í' | 'ì' | 'î' | 'ï' => 'i',
                'ó' | 'ò' | 'ô' | 'ö' | 'õ' => 'o',
                'ú' | 'ù' | 'û' | 'ü' => 'u',
                'ñ' => 'n',
                'ç' => 'c',
                other => other,
            });
        }
    }
    out
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

    #[test]
    fn no_rules_match_nothing() {
        let c = Classifier::new(&[], 10).unwrap();
        assert_eq!(c.classify("anything"), None);
    }
}
