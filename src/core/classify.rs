//! Intent classification from configured rules: keywords (whole words or phrases) and regular
//! expressions, matched against the text lower-cased with Spanish/Portuguese/French accents
//! removed, so "DEVOLUCIÓN", "devolución" and "devolucion" are one keyword.
//!
//! All rules of a tenant compile into one `RegexSet`: one pass over the text whatever the number
//! of rules. When several intents match, the highest priority wins, then the first configured.
use regex::RegexSet;

use crate::config::IntentConfig;

#[derive(Debug, Clone)]
pub struct Classifier {
    set: RegexSet,
    /// For each pattern of `set`, the index of the intent it belongs to.
    intent_of_pattern: Vec<usize>,
    /// Priority of each intent, to break ties between several matches.
    priority: Vec<u32>,
}

impl Classifier {
    /// `default_priority` is used for intents that set none. Patterns were validated by
    /// `Config::validate`; an error here is still returned rather than panicking.
    pub fn new(intents: &[IntentConfig], default_priority: u32) -> Result<Self, regex::Error> {
        let mut patterns = Vec::new();
        let mut intent_of_pattern = Vec::new();
        for (i, intent) in intents.iter().enumerate() {
            for kw in &intent.keywords {
                patterns.push(keyword_pattern(kw));
                intent_of_pattern.push(i);
            }
            for p in &intent.patterns {
                patterns.push(format!("(?i:{p})"));
                intent_of_pattern.push(i);
            }
        }
        Ok(Self {
            set: RegexSet::new(&patterns)?,
            intent_of_pattern,
            priority: intents
                .iter()
                .map(|i| i.priority.unwrap_or(default_priority))
                .collect(),
        })
    }

    /// The index of the winning intent, if any matched.
    pub fn classify(&self, text: &str) -> Option<usize> {
        if self.intent_of_pattern.is_empty() {
            return None;
        }
        let folded = fold(text);
        let mut best: Option<usize> = None;
        for p in self.set.matches(&folded).iter() {
            let i = self.intent_of_pattern[p];
            best = match best {
                Some(b) if self.priority[b] > self.priority[i] => Some(b),
                Some(b) if self.priority[b] == self.priority[i] && b <= i => Some(b),
                _ => Some(i),
            };
        }
        best
    }
}

/// A keyword matches as whole words; inner spaces match any run of white space.
fn keyword_pattern(keyword: &str) -> String {
    let words: Vec<String> = fold(keyword)
        .split_whitespace()
        .map(regex::escape)
        .collect();
    format!(r"\b{}\b", words.join(r"\s+"))
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

    #[test]
    fn no_rules_match_nothing() {
        let c = Classifier::new(&[], 10).unwrap();
        assert_eq!(c.classify("anything"), None);
    }
}
