//! A hash index of positions: the keys stay where they are kept anyway (the slab's values, the
//! de-duplication window's queue), and the index holds only a `u32` position for each, so a
//! slot is 4 bytes and a control byte (hashbrown's `HashTable`). A `HashMap` from key to
//! position repeats the key in every slot: with a `u64` id and a `u32` position a slot is 16
//! bytes, and a table just past a doubling is under half full, so ~35 bytes an entry where
//! this takes ~10.
//!
//! The owner supplies the hashes (from its own per-process random state, so hash flooding
//! stays out of reach) and says which position holds a key (`is`): the lookup reads the key
//! from the owner's storage, which is where the caller goes next anyway.
use hashbrown::HashTable;

#[derive(Debug, Default)]
pub struct Positions(HashTable<u32>);

impl Positions {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// The position, among those filed under `hash`, that `is` accepts.
    pub fn find(&self, hash: u64, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        self.0.find(hash, |&at| is(at)).copied()
    }

    /// Files `at` under `hash`; the caller knows no other position holds its key.
    /// `hash_of(position)` rehashes the entries when the table grows.
    pub fn insert(&mut self, hash: u64, at: u32, hash_of: impl Fn(u32) -> u64) {
        self.0.insert_unique(hash, at, |&p| hash_of(p));
    }

    /// Forgets `at` (filed under `hash`); false if it was not there.
    pub fn remove(&mut self, hash: u64, at: u32) -> bool {
        match self.0.find_entry(hash, |&p| p == at) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// The key filed under `hash` at `from` now lives at `to`.
    pub fn moved(&mut self, hash: u64, from: u32, to: u32) {
        if let Some(p) = self.0.find_mut(hash, |&p| p == from) {
            *p = to;
        }
    }

    pub fn shrink_to_fit(&mut self, hash_of: impl Fn(u32) -> u64) {
        self.0.shrink_to_fit(|&p| hash_of(p));
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys kept outside the index, hashed badly on purpose (many share a hash) so that
    /// `is` has to tell them apart.
    #[test]
    fn finds_moves_and_forgets_positions_of_keys_kept_elsewhere() {
        let mut keys: Vec<u64> = Vec::new();
        let mut ix = Positions::default();
        let hash = |k: u64| k % 7;
        for k in 0..1_000u64 {
            keys.push(k * 3);
            let at = (keys.len() - 1) as u32;
            ix.insert(hash(k * 3), at, |p| hash(keys[p as usize]));
        }
        let find =
            |ix: &Positions, keys: &[u64], k: u64| ix.find(hash(k), |p| keys[p as usize] == k);
        assert_eq!(ix.len(), 1_000);
        assert_eq!(find(&ix, &keys, 300), Some(100));
        assert_eq!(find(&ix, &keys, 301), None);
        // Remove key 300 (position 100) as a slab does: the last key moves into the hole.
        assert!(ix.remove(hash(300), 100));
        assert!(!ix.remove(hash(300), 100), "already gone");
        let last = keys.pop().unwrap();
        keys[100] = last;
        ix.moved(hash(last), keys.len() as u32, 100);
        assert_eq!(find(&ix, &keys, 300), None);
        assert_eq!(find(&ix, &keys, last), Some(100));
        assert_eq!(ix.len(), 999);
        for (at, &k) in keys.iter().enumerate() {
            assert_eq!(find(&ix, &keys, k), Some(at as u32), "key {k}");
        }
        ix.shrink_to_fit(|p| hash(keys[p as usize]));
        assert_eq!(find(&ix, &keys, 999 * 3 - 3), Some(998));
    }
}
