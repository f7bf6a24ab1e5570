//! A map kept dense: its entries side by side in pages ([`Paged`]), found through a hash
//! index of their positions ([`Positions`]: the key is read from the entry it finds).
//!
//! A `HashMap` keeps its entries in its slots, and a table just past a doubling is under half
//! full: with a customer's number and a time (32 bytes) an entry cost up to ~70 bytes. Here it
//! costs its 32 and an 8-byte slot of the index, about twice that at worst. A removal moves the
//! last entry into the hole, so positions change and keys do not. Positions are exposed
//! ([`Dense::position`], indexing, [`Dense::remove_at`]) for owners that keep something
//! beside each entry (the conversations' slab keeps a byte of cut flags).
use std::cell::Cell;
use std::hash::{BuildHasher, Hash};

use super::paged::Paged;
use super::positions::Positions;

#[derive(Debug)]
pub struct Dense<K, V> {
    index: Positions,
    /// Hashes keys for `index` (randomly seeded per process).
    hasher: foldhash::fast::RandomState,
    entries: Paged<(K, V)>,
    /// The position last found: the one a lookup tries first, checked by its key (one message
    /// looks its conversation up several times; a removal that moved it only costs the probe).
    recent: Cell<u32>,
}

impl<K, V> Default for Dense<K, V> {
    fn default() -> Self {
        Self {
            index: Positions::default(),
            hasher: foldhash::fast::RandomState::default(),
            entries: Paged::default(),
            recent: Cell::new(0),
        }
    }
}

impl<K: Hash + Eq, V> Dense<K, V> {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entries the pages have room for.
    pub fn capacity(&self) -> usize {
        self.entries.capacity()
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        let at = self.position(key)?;
        Some(&self.entries[at].1)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.position(key).is_some()
    }

    /// Adds or replaces the value of `key`; the value replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.position(&key) {
            Some(at) => Some(std::mem::replace(self.value_mut(at), value)),
            None => {
                self.push_new(key, value);
                None
            }
        }
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        let at = self.position(key)?;
        Some(self.remove_at(at).1)
    }

    /// Where `key`'s entry is now (a removal may move it).
    pub fn position(&self, key: &K) -> Option<usize> {
        let recent = self.recent.get();
        if self
            .entries
            .get(recent as usize)
            .is_some_and(|(k, _)| k == key)
        {
            return Some(recent as usize);
        }
        let entries = &self.entries;
        let at = self.index.find(self.hasher.hash_one(key), |at| {
            entries[at as usize].0 == *key
        })?;
        self.recent.set(at);
        Some(at as usize)
    }

    /// Starts loading the index line a lookup of `key` reads first (a hint).
    pub fn prefetch(&self, key: &K) {
        self.index.prefetch(self.hasher.hash_one(key));
    }

    /// Starts loading the entry of `key`, found by the index alone (its line loaded by
    /// [`Dense::prefetch`] earlier), without reading a key to check it: a hint.
    pub fn prefetch_entry(&self, key: &K) {
        if let Some(at) = self.index.guess(self.hasher.hash_one(key))
            && let Some(entry) = self.entries.get(at as usize)
        {
            super::prefetch::whole(entry);
        }
    }

    /// Makes position `at`, found by the caller through an index of its own, the one the
    /// next lookup tries first.
    pub fn remember(&self, at: usize) {
        self.recent.set(at as u32);
    }

    /// The value at position `at` (its key stays as it is: the index files it by it).
    pub fn value_mut(&mut self, at: usize) -> &mut V {
        &mut self.entries[at].1
    }

    /// Adds an entry the caller knows is not there, at position `len()`.
    pub fn push_new(&mut self, key: K, value: V) {
        let at = u32::try_from(self.entries.len()).expect("under 2³² entries");
        let hash = self.hasher.hash_one(&key);
        self.entries.push((key, value));
        self.index.insert(hash, at);
    }

    /// Removes the entry at `at`, moving the last one into its place.
    pub fn remove_at(&mut self, at: usize) -> (K, V) {
        let last = self.entries.len() - 1;
        let (key, value) = self.entries.swap_remove(at);
        self.index.remove(self.hasher.hash_one(&key), at as u32);
        if let Some((moved, _)) = self.entries.get(at) {
            let hash = self.hasher.hash_one(moved);
            self.index.moved(hash, last as u32, at as u32);
        }
        (key, value)
    }

    /// Keeps the entries `keep` accepts. Walked from the end: a removal moves the last entry,
    /// already looked at, into the hole.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) {
        for at in (0..self.entries.len()).rev() {
            let (key, value) = &self.entries[at];
            if !keep(key, value) {
                self.remove_at(at);
            }
        }
    }

    pub fn shrink_to_fit(&mut self) {
        self.index.shrink_to_fit();
        self.entries.shrink_to_fit();
    }

    /// Gives back room after a peak: the index shrinks a step at a time once under a quarter
    /// full ([`Positions::shrink_gradually`]); the pages already go as they empty, and the
    /// spare one goes when under a quarter of them is used.
    pub fn shrink_gradually(&mut self) {
        self.index.shrink_gradually();
        if self.entries.len() < self.entries.capacity() / 4 {
            self.entries.shrink_to_fit();
        }
    }

    /// Walks on the index's table being emptied, if any, by up to `slots` slots.
    pub fn settle(&mut self, slots: usize) {
        self.index.settle(slots);
    }

    /// The index's slots, a table being emptied included.
    #[cfg(test)]
    pub fn index_slots(&self) -> usize {
        self.index.slots()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }
}

/// The entry at a position (below `len()`).
impl<K, V> std::ops::Index<usize> for Dense<K, V> {
    type Output = (K, V);

    fn index(&self, at: usize) -> &(K, V) {
        &self.entries[at]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map against a `HashMap` through inserts, replacements and removals (each removal
    /// moving the last entry), across several page sizes' worth and back.
    #[test]
    fn a_dense_map_agrees_with_a_hash_map() {
        let mut dense: Dense<u64, u64> = Dense::default();
        let mut model = std::collections::HashMap::new();
        let mut x = 7u64;
        for step in 0..30_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let key = (x >> 33) % 5_000;
            if step < 20_000 && !x.is_multiple_of(3) {
                assert_eq!(
                    dense.insert(key, step),
                    model.insert(key, step),
                    "insert {key}"
                );
            } else {
                assert_eq!(dense.remove(&key), model.remove(&key), "remove {key}");
            }
            assert_eq!(dense.len(), model.len());
        }
        for key in 0..5_000 {
            assert_eq!(dense.get(&key), model.get(&key), "key {key}");
            assert_eq!(dense.contains_key(&key), model.contains_key(&key));
        }
        let mut values: Vec<u64> = dense.values().copied().collect();
        values.sort();
        let mut all: Vec<(u64, u64)> = dense.iter().map(|(k, v)| (*k, *v)).collect();
        all.sort();
        let mut expected: Vec<(u64, u64)> = model.into_iter().collect();
        expected.sort();
        assert_eq!(all, expected);
        let mut model_values: Vec<u64> = expected.iter().map(|&(_, v)| v).collect();
        model_values.sort();
        assert_eq!(values, model_values);
        dense.retain(|k, _| k % 3 != 0);
        let kept: std::collections::HashMap<u64, u64> = expected
            .iter()
            .copied()
            .filter(|(k, _)| k % 3 != 0)
            .collect();
        assert_eq!(dense.len(), kept.len());
        for key in 0..5_000 {
            assert_eq!(dense.get(&key), kept.get(&key), "key {key} after retain");
        }
        for (k, _) in &expected {
            dense.remove(k);
        }
        assert_eq!(dense.len(), 0);
        dense.shrink_to_fit();
        assert_eq!(dense.get(&1), None);
    }
}
