//! Conversations by id, packed: the values in one dense `Vec` and a small hash index of
//! id → position. A hash map holding the values themselves keeps up to twice as many slots
//! as entries (its load factor after a doubling), so each ~90-byte conversation would cost
//! up to ~180; here the spare room is in 12-byte index slots and the values' `Vec` only.
//! A removal moves the last value into the hole (`swap_remove`): positions are not stable,
//! ids are.
use std::ops::Index;

use super::super::Map;
use crate::model::ConversationId;

#[derive(Debug)]
pub(super) struct Slab<V> {
    index: Map<ConversationId, u32>,
    values: Vec<(ConversationId, V)>,
}

impl<V> Default for Slab<V> {
    fn default() -> Self {
        Self {
            index: Map::default(),
            values: Vec::new(),
        }
    }
}

impl<V> Slab<V> {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn capacity(&self) -> usize {
        self.values.capacity()
    }

    pub fn contains_key(&self, id: &ConversationId) -> bool {
        self.index.contains_key(id)
    }

    pub fn get(&self, id: &ConversationId) -> Option<&V> {
        let at = *self.index.get(id)?;
        Some(&self.values[at as usize].1)
    }

    pub fn get_mut(&mut self, id: &ConversationId) -> Option<&mut V> {
        let at = *self.index.get(id)?;
        Some(&mut self.values[at as usize].1)
    }

    /// Adds or replaces the value of `id`.
    pub fn insert(&mut self, id: ConversationId, value: V) {
        use std::collections::hash_map::Entry;
        match self.index.entry(id) {
            Entry::Occupied(e) => self.values[*e.get() as usize].1 = value,
            Entry::Vacant(e) => {
                let at = u32::try_from(self.values.len()).expect("under 2³² conversations");
                e.insert(at);
                self.values.push((id, value));
            }
        }
    }

    pub fn remove(&mut self, id: &ConversationId) -> Option<V> {
        let at = self.index.remove(id)? as usize;
        let (_, value) = self.values.swap_remove(at);
        if let Some((moved, _)) = self.values.get(at) {
            self.index.insert(*moved, at as u32);
        }
        Some(value)
    }

    /// Keeps the values `keep` says to keep: one pass, and index updates only for what is
    /// removed or moved into a hole (a sweep forgets a few of many).
    pub fn retain(&mut self, mut keep: impl FnMut(&ConversationId, &mut V) -> bool) {
        let mut at = 0;
        while at < self.values.len() {
            let (id, v) = &mut self.values[at];
            if keep(id, v) {
                at += 1;
            } else {
                let id = *id;
                self.remove(&id);
            }
        }
    }

    pub fn shrink_to_fit(&mut self) {
        self.index.shrink_to_fit();
        self.values.shrink_to_fit();
    }

    pub fn keys(&self) -> impl Iterator<Item = &ConversationId> {
        self.values.iter().map(|(id, _)| id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ConversationId, &V)> {
        self.values.iter().map(|(id, v)| (id, v))
    }
}

impl<V> Index<&ConversationId> for Slab<V> {
    type Output = V;

    fn index(&self, id: &ConversationId) -> &V {
        self.get(id)
            .expect("a conversation the caller knows exists")
    }
}

impl<V> FromIterator<(ConversationId, V)> for Slab<V> {
    fn from_iter<I: IntoIterator<Item = (ConversationId, V)>>(values: I) -> Self {
        let mut slab = Self::default();
        for (id, v) in values {
            slab.insert(id, v);
        }
        slab
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> ConversationId {
        ConversationId(n)
    }

    #[test]
    fn removal_moves_the_last_value_and_keeps_every_id_found() {
        let mut s: Slab<u64> = (1..=5).map(|n| (id(n), n * 10)).collect();
        assert_eq!(s.remove(&id(2)), Some(20));
        assert_eq!(s.remove(&id(2)), None);
        assert_eq!(s.len(), 4);
        for n in [1, 3, 4, 5] {
            assert_eq!(s[&id(n)], n * 10, "conversation {n}");
        }
        s.insert(id(3), 33);
        assert_eq!(s.get(&id(3)), Some(&33));
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn retain_rebuilds_the_index() {
        let mut s: Slab<u64> = (1..=6).map(|n| (id(n), n)).collect();
        s.retain(|_, v| *v % 2 == 0);
        assert_eq!(s.len(), 3);
        assert!(!s.contains_key(&id(1)));
        for n in [2, 4, 6] {
            assert_eq!(s.get(&id(n)), Some(&n));
        }
        let mut keys: Vec<u64> = s.keys().map(|k| k.0).collect();
        keys.sort();
        assert_eq!(keys, [2, 4, 6]);
    }
}
