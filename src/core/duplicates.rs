//! Duplicate customer suggestions: customers whose names are alike (normalised Levenshtein
//! similarity of the folded names, `strsim`) are suggested as possibly the same person, for a
//! person to link (`Customers.Link`); never merged automatically.
//!
//! Nothing scans every customer. A name is compared only when it is set or changes, and only
//! with the names in its two *blocks*: the first three letters of its first and last words,
//! and their last three letters ("maria jose perez" is in `mar…per` and `ria…rez`). Two names
//! a few edits apart share one block unless the edits touch both the beginnings and the ends
//! of both words. Each block keeps its most recent `max_candidates` names, which bounds the
//! work per name (at most twice that many comparisons) and the index's memory.
use std::collections::VecDeque;
use std::hash::BuildHasher;

use crate::config::customers::DuplicatesConfig;
use crate::model::ConversationId;

use super::Map;
use super::classify::fold;

/// Two customers whose names are alike.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Suggestion {
    /// The customer named earlier.
    pub a: ConversationId,
    /// The customer whose name, when set, was found like `a`'s.
    pub b: ConversationId,
    pub similarity: f64,
}

#[derive(Debug)]
pub struct Duplicates {
    config: DuplicatesConfig,
    /// Each named customer's folded name.
    names: Map<ConversationId, Box<str>>,
    blocks: Map<u64, VecDeque<ConversationId>>,
    /// Oldest first, at most `max_suggestions`.
    suggestions: VecDeque<Suggestion>,
}

/// Lower-cased, accents removed, one space between words.
pub fn fold_name(name: &str) -> String {
    fold(name).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Normalised Levenshtein similarity (1 - distance / the longer length, in characters) when
/// it is at least `min`. Most pairs are settled without the distance: equal names are 1, and
/// two lower bounds of the distance (the length difference, and the letters one name has
/// that the other lacks) rule out the rest cheaply.
fn similarity(a: &str, b: &str, min: f64) -> Option<f64> {
    if a == b {
        return Some(1.0);
    }
    let (la, lb) = (a.chars().count(), b.chars().count());
    let longer = la.max(lb);
    let allowed = ((1.0 - min) * longer as f64 + 1e-9).floor() as usize;
    if la.abs_diff(lb) > allowed || letters_apart(a, b) > allowed {
        return None;
    }
    let s = 1.0 - strsim::levenshtein(a, b) as f64 / longer as f64;
    (s >= min).then_some(s)
}

/// A lower bound of the edit distance: of the letters (a-z, the rest counted together) one
/// name has more of than the other, the larger total. Each edit changes it by at most one.
fn letters_apart(a: &str, b: &str) -> usize {
    let mut count = [0i32; 27];
    let bucket = |c: char| match c {
        'a'..='z' => c as usize - 'a' as usize,
        _ => 26,
    };
    for c in a.chars() {
        count[bucket(c)] += 1;
    }
    for c in b.chars() {
        count[bucket(c)] -= 1;
    }
    let more: i32 = count.iter().filter(|n| **n > 0).sum();
    let fewer: i32 = -count.iter().filter(|n| **n < 0).sum::<i32>();
    more.max(fewer) as usize
}

/// The two blocks of a folded name.
fn blocks(folded: &str) -> [u64; 2] {
    let first = folded.split(' ').next().unwrap_or_default();
    let last = folded.rsplit(' ').next().unwrap_or_default();
    // The first and last three characters of a word, as slices of it.
    fn head(w: &str) -> &str {
        &w[..w.char_indices().nth(3).map_or(w.len(), |(i, _)| i)]
    }
    fn tail(w: &str) -> &str {
        &w[w.char_indices().rev().nth(2).map_or(0, |(i, _)| i)..]
    }
    let hash = |kind: char, a: &str, b: &str| {
        foldhash::fast::FixedState::with_seed(0x5eed).hash_one((kind, a, b))
    };
    [
        hash('h', head(first), head(last)),
        hash('t', tail(first), tail(last)),
    ]
}

impl Duplicates {
    pub fn new(config: &DuplicatesConfig) -> Self {
        Self {
            config: config.clone(),
            names: Map::default(),
            blocks: Map::default(),
            suggestions: VecDeque::new(),
        }
    }

    /// Takes reloaded settings; the names indexed stay (blocks shrink to a smaller
    /// `max_candidates` as names are added).
    pub fn configure(&mut self, config: &DuplicatesConfig) {
        self.config = config.clone();
    }

    /// Customer `id` is now called `name`: indexed, and compared with the names in its
    /// blocks; the pairs alike enough are kept as suggestions. Returns how many were found.
    pub fn named(&mut self, id: ConversationId, name: &str) -> usize {
        if !self.config.enabled {
            return 0;
        }
        let folded = fold_name(name);
        if folded.is_empty() || self.names.get(&id).is_some_and(|n| **n == *folded) {
            return 0;
        }
        let found = self.alike(id, &folded);
        self.index(id, folded);
        for &(other, similarity) in &found {
            if self.suggestions.len() == self.config.max_suggestions {
                self.suggestions.pop_front();
            }
            self.suggestions.push_back(Suggestion {
                a: other,
                b: id,
                similarity,
            });
        }
        found.len()
    }

    /// Indexes a folded name without comparing it (a restore rebuilds the index this way).
    fn index(&mut self, id: ConversationId, folded: String) {
        for key in blocks(&folded) {
            let block = self.blocks.entry(key).or_default();
            if !block.contains(&id) {
                if block.len() == self.config.max_candidates {
                    block.pop_front();
                }
                block.push_back(id);
            }
        }
        self.names.insert(id, folded.into_boxed_str());
    }

    /// The customers other than `id` in the blocks of `folded` whose names are alike, with
    /// their similarity: the first block's in order, then the second's not in the first. A
    /// block never holds an id twice, and names alike are often in both blocks (a one-word
    /// name always is), so each candidate's name is looked up and compared once.
    fn alike(&self, id: ConversationId, folded: &str) -> Vec<(ConversationId, f64)> {
        let [first, second] = blocks(folded).map(|key| self.blocks.get(&key));
        let mut in_first: Vec<ConversationId> = first.into_iter().flatten().copied().collect();
        in_first.sort_unstable();
        let second = second
            .into_iter()
            .flatten()
            .filter(|c| in_first.binary_search(c).is_err());
        first
            .into_iter()
            .flatten()
            .chain(second)
            .filter(|&&other| other != id)
            .filter_map(|&other| {
                let theirs = self.names.get(&other)?; // None: forgotten since
                similarity(folded, theirs, self.config.min_similarity).map(|s| (other, s))
            })
            .collect()
    }

    /// Puts back a customer's name from a snapshot: indexed, not compared (the suggestions
    /// are restored as they were).
    pub fn restore_name(&mut self, id: ConversationId, name: &str) {
        let folded = fold_name(name);
        if self.config.enabled && !folded.is_empty() {
            self.index(id, folded);
        }
    }

    /// The customers whose names are like `id`'s now, most alike first.
    pub fn similar(&self, id: ConversationId) -> Vec<(ConversationId, f64)> {
        let Some(name) = self.names.get(&id) else {
            return Vec::new();
        };
        let mut found = self.alike(id, name);
        found.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        found
    }

    /// The suggestions kept, newest first, between customers still known and not yet linked.
    pub fn suggestions(&self) -> impl Iterator<Item = &Suggestion> {
        self.suggestions.iter().rev().filter(|s| {
            s.a != s.b && self.names.contains_key(&s.a) && self.names.contains_key(&s.b)
        })
    }

    /// The customer is forgotten (or merged into another).
    pub fn forget(&mut self, id: ConversationId) {
        self.names.remove(&id);
    }

    /// Drops forgotten customers from the blocks, once enough were forgotten to be worth it.
    pub fn sweep(&mut self) {
        let entries: usize = self.blocks.values().map(VecDeque::len).sum();
        if entries <= 2 * (2 * self.names.len()).max(1_024) {
            return;
        }
        let names = &self.names;
        self.blocks.retain(|_, block| {
            block.retain(|id| names.contains_key(id));
            !block.is_empty()
        });
        self.suggestions
            .retain(|s| names.contains_key(&s.a) && names.contains_key(&s.b));
    }

    pub fn saved_suggestions(&self) -> impl Iterator<Item = &Suggestion> {
        self.suggestions.iter()
    }

    /// Puts back suggestions saved in a snapshot (the names are indexed from the profiles).
    pub fn restore_suggestions(&mut self, saved: Vec<Suggestion>) {
        self.suggestions = saved.into();
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Duplicates {
        Duplicates::new(&DuplicatesConfig::default())
    }

    #[test]
    fn alike_names_are_suggested_and_others_are_not() {
        let mut d = index();
        let c = ConversationId;
        assert_eq!(d.named(c(1), "María José Pérez"), 0);
        assert_eq!(
            d.named(c(2), "Maria Jose Perez"),
            1,
            "accents aside, the same name"
        );
        assert_eq!(d.named(c(3), "María Pérez"), 0);
        assert_eq!(d.named(c(4), "Mario Gómez"), 0);
        assert_eq!(d.named(c(5), "Maria Jose Peres"), 2, "one edit from both");
        let s: Vec<(u64, u64)> = d.suggestions().map(|s| (s.a.0, s.b.0)).collect();
        assert_eq!(s, [(2, 5), (1, 5), (1, 2)], "newest first");
        assert!(d.suggestions().all(|s| s.similarity >= 0.8));
        // "María Pérez" and "Mario Gómez" are not alike (0.64), and none is compared when
        // the lengths alone rule it out.
        assert_eq!(similarity("maria perez", "mario gomez", 0.8), None);
        assert!(strsim::normalized_levenshtein("maria perez", "mario gomez") < 0.8);
        assert_eq!(similarity("ana", "anastasia", 0.8), None);
        assert_eq!(
            similarity("pérez", "perez", 0.8),
            Some(0.8),
            "by characters, not bytes"
        );
        // The cheap bound never rules out a pair the distance would keep.
        for (x, y) in [
            ("maria jose perez", "maria jose peres"),
            ("maria garcia lopez", "maria garcia lopes"),
            ("ana ruiz", "ana ruis"),
            ("carlos sanz gil", "carlos sanz gil"),
        ] {
            assert!(letters_apart(x, y) <= strsim::levenshtein(x, y));
            assert_eq!(
                similarity(x, y, 0.8),
                Some(strsim::normalized_levenshtein(x, y)).filter(|s| *s >= 0.8)
            );
        }
        assert_eq!(letters_apart("maria garcia lopez", "maria garcia ruiz"), 4);
        assert_eq!(d.similar(c(3)), vec![]);
        let like_1: Vec<u64> = d.similar(c(1)).iter().map(|(c, _)| c.0).collect();
        assert_eq!(like_1, [2, 5]);
        // The same name again is no news; a forgotten customer is not suggested.
        assert_eq!(d.named(c(2), "maria  jose perez"), 0);
        d.forget(c(5));
        assert_eq!(d.suggestions().count(), 1);
    }

    #[test]
    fn each_block_keeps_its_most_recent_names_only() {
        let mut d = Duplicates::new(&DuplicatesConfig {
            max_candidates: 2,
            ..DuplicatesConfig::default()
        });
        let c = ConversationId;
        d.named(c(1), "Ana Ruiz");
        d.named(c(2), "Ana Ruiz");
        d.named(c(3), "Ana Ruiz");
        // Ana 1 left both blocks: the fourth is compared with 2 and 3 only.
        assert_eq!(d.named(c(4), "Ana Ruiz"), 2);
        assert!(d.blocks.values().all(|b| b.len() <= 2));
        // A one-word name is in both its blocks with every name like it: each is found once.
        d.named(c(5), "Load");
        d.named(c(6), "Load");
        assert_eq!(d.named(c(7), "Load"), 2);
        // Indexed, 7 pushed 5 out of both blocks.
        assert_eq!(d.similar(c(7)), vec![(c(6), 1.0)]);
    }
}
