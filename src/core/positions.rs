//! A hash index of positions (or other small handles): the keys stay where they are kept
//! anyway (the slab's values, the de-duplication window's queue, a conversation's first
//! phone), and the index holds only the handle, so a slot is 4 or 8 bytes and a control byte
//! (hashbrown's `HashTable`). A `HashMap` from key to position repeats the key in every slot:
//! with a `u64` id and a `u32` position a slot is 16 bytes, and a table just past a doubling
//! is under half full, so ~35 bytes an entry where this takes ~10.
//!
//! The owner supplies the hashes (from its own per-process random state, so hash flooding
//! stays out of reach) and says which handle holds a key (`is`): the lookup reads the key
//! from the owner's storage, which is where the caller goes next anyway.
//!
//! **Growth without a stall.** A table that doubles in place rehashes every entry at once,
//! and here each rehash reads the key from the owner's storage (a cache miss or two): at
//! 917,504 conversations a shard stood still for ~0.25 s for each of its three indexes, all
//! at once. So a full table is not grown in place: a table twice the size takes the new
//! entries, and the old one's are moved over [`MOVED_PER_INSERT`] at each insert, while
//! lookups try the new table and then the old. Every entry the old table still holds is one
//! it held when the growth began, unchanged (a removal takes it out, a move of its handle
//! moves it over), so moving each handle listed then moves them all.
use hashbrown::HashTable;

/// Entries moved from the old table at each insert while a table grows (a few microseconds):
/// a growth is over after a sixteenth as many inserts as the old table held, so two tables
/// are kept (and lookups that miss try both) only briefly, and the new table (room for twice
/// the old's entries) is never full before the old one is empty.
const MOVED_PER_INSERT: usize = 16;

#[derive(Debug)]
pub struct Positions<T = u32> {
    table: HashTable<T>,
    /// What `table` could hold when it was made: removals leave tombstones that use up its
    /// room, so it can fill with far fewer entries.
    made_for: usize,
    /// The table before the last growth, while its entries are moved over.
    growing: Option<Growing<T>>,
}

#[derive(Debug)]
struct Growing<T> {
    old: HashTable<T>,
    /// Every handle `old` held when the growth began, those not yet looked at.
    listed: Vec<T>,
}

impl<T> Default for Positions<T> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
            made_for: 0,
            growing: None,
        }
    }
}

impl<T: Copy + Eq> Positions<T> {
    pub fn len(&self) -> usize {
        self.table.len() + self.growing.as_ref().map_or(0, |g| g.old.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.table.capacity() + self.growing.as_ref().map_or(0, |g| g.old.capacity())
    }

    /// The handle, among those filed under `hash`, that `is` accepts.
    pub fn find(&self, hash: u64, mut is: impl FnMut(T) -> bool) -> Option<T> {
        match self.table.find(hash, |&at| is(at)) {
            Some(&at) => Some(at),
            None => self.growing.as_ref()?.old.find(hash, |&at| is(at)).copied(),
        }
    }

    /// Files `at` under `hash`; the caller knows no other handle holds its key.
    /// `hash_of(handle)` is the hash a handle's key files it under, None for a handle that
    /// holds no key now (the index asks it of handles it listed when it began to grow).
    pub fn insert(&mut self, hash: u64, at: T, hash_of: impl Fn(T) -> Option<u64>) {
        if self.growing.is_none() && self.table.len() == self.table.capacity() {
            self.grow();
        }
        self.move_over(MOVED_PER_INSERT, &hash_of);
        self.table
            .insert_unique(hash, at, |&p| hash_of(p).unwrap_or(0));
    }

    /// Forgets `at` (filed under `hash`); false if it was not there.
    pub fn remove(&mut self, hash: u64, at: T) -> bool {
        if let Ok(entry) = self.table.find_entry(hash, |&p| p == at) {
            entry.remove();
            return true;
        }
        let Some(g) = &mut self.growing else {
            return false;
        };
        match g.old.find_entry(hash, |&p| p == at) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// The key filed under `hash` at `from` is now held by `to`.
    pub fn moved(&mut self, hash: u64, from: T, to: T) {
        if let Some(p) = self.table.find_mut(hash, |&p| p == from) {
            *p = to;
        } else if let Some(g) = &mut self.growing
            && let Ok(entry) = g.old.find_entry(hash, |&p| p == from)
        {
            // Moved over now: the old table keeps only handles as they were listed.
            entry.remove();
            file_moved(&mut self.table, hash, to);
        }
    }

    pub fn shrink_to_fit(&mut self, hash_of: impl Fn(T) -> Option<u64>) {
        self.move_over(usize::MAX, &hash_of);
        self.table.shrink_to_fit(|&p| hash_of(p).unwrap_or(0));
        self.made_for = self.table.capacity();
    }

    pub fn clear(&mut self) {
        self.table.clear();
        self.made_for = self.table.capacity();
        self.growing = None;
    }

    /// Starts growing: a table with room for twice the entries takes the new ones, or one as
    /// large as the full one when tombstones filled it at under half its entries (as
    /// hashbrown would rehash it in place).
    fn grow(&mut self) {
        let len = self.table.len();
        let room = if len < self.made_for / 2 {
            self.made_for
        } else {
            (len * 2).max(4)
        };
        let old = std::mem::replace(&mut self.table, HashTable::with_capacity(room));
        self.made_for = self.table.capacity();
        let listed = old.iter().copied().collect();
        self.growing = Some(Growing { old, listed });
    }

    /// Moves up to `count` listed entries from the old table to the new; drops the old one
    /// once every listed entry was looked at.
    fn move_over(&mut self, count: usize, hash_of: &impl Fn(T) -> Option<u64>) {
        let Some(g) = &mut self.growing else {
            return;
        };
        for _ in 0..count {
            let Some(at) = g.listed.pop() else { break };
            // A handle no longer in the old table (removed, or moved over) is skipped; one
            // still there holds the same key as when it was listed, so its hash finds it.
            let Some(hash) = hash_of(at) else { continue };
            if let Ok(entry) = g.old.find_entry(hash, |&p| p == at) {
                entry.remove();
                file_moved(&mut self.table, hash, at);
            }
        }
        if g.listed.is_empty() {
            debug_assert!(g.old.is_empty(), "every old entry was listed");
            self.growing = None;
        }
    }
}

/// Files an entry moved over from the old table: the new one has room for all of them.
fn file_moved<T>(table: &mut HashTable<T>, hash: u64, at: T) {
    table.insert_unique(hash, at, |_| {
        unreachable!("the new table has room for every old entry")
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys kept outside the index, dense like a slab's values, hashed badly on purpose (four
    /// share each hash) so that `is` has to tell them apart.
    #[derive(Default)]
    struct Owner {
        keys: Vec<u64>,
        ix: Positions,
    }

    fn hash(k: u64) -> u64 {
        (k / 4).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    impl Owner {
        fn hash_of(keys: &[u64]) -> impl Fn(u32) -> Option<u64> + '_ {
            |p| keys.get(p as usize).map(|&k| hash(k))
        }

        fn push(&mut self, k: u64) {
            self.keys.push(k);
            let at = (self.keys.len() - 1) as u32;
            self.ix.insert(hash(k), at, Self::hash_of(&self.keys));
        }

        /// Removes the key at `at` as a slab does: the last key moves into the hole.
        fn swap_remove(&mut self, at: usize) {
            let k = self.keys[at];
            assert!(self.ix.remove(hash(k), at as u32));
            self.keys.swap_remove(at);
            if let Some(&moved) = self.keys.get(at) {
                self.ix
                    .moved(hash(moved), self.keys.len() as u32, at as u32);
            }
        }

        fn find(&self, k: u64) -> Option<u32> {
            self.ix.find(hash(k), |p| self.keys[p as usize] == k)
        }

        fn all_found(&self) {
            assert_eq!(self.ix.len(), self.keys.len());
            for (at, &k) in self.keys.iter().enumerate() {
                assert_eq!(self.find(k), Some(at as u32), "key {k}");
            }
        }
    }

    #[test]
    fn finds_moves_and_forgets_positions_of_keys_kept_elsewhere() {
        let mut o = Owner::default();
        for k in 0..1_000u64 {
            o.push(k * 3);
        }
        assert_eq!(o.ix.len(), 1_000);
        assert_eq!(o.find(300), Some(100));
        assert_eq!(o.find(301), None);
        // Remove key 300 (position 100) as a slab does: the last key moves into the hole.
        assert!(o.ix.remove(hash(300), 100));
        assert!(!o.ix.remove(hash(300), 100), "already gone");
        let last = o.keys.pop().unwrap();
        o.keys[100] = last;
        o.ix.moved(hash(last), o.keys.len() as u32, 100);
        assert_eq!(o.find(300), None);
        assert_eq!(o.find(last), Some(100));
        o.all_found();
        o.ix.shrink_to_fit(Owner::hash_of(&o.keys));
        assert!(o.ix.growing.is_none(), "shrinking finishes a growth");
        o.all_found();
    }

    /// Removals and moves while a table grows (the old table's entries moved over a few at a
    /// time): every key stays found at its position, across many growths, and each growth
    /// ends with the old table empty.
    #[test]
    fn keys_stay_found_while_the_table_grows_under_removals_and_moves() {
        let mut o = Owner::default();
        // A small deterministic generator (xorshift): no crate needed for a test's choices.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut key, mut growths, mut was_growing) = (0u64, 0, false);
        for step in 0..60_000 {
            // Two inserts to each removal: the table keeps growing.
            if next() % 3 == 0 && !o.keys.is_empty() {
                let at = (next() % o.keys.len() as u64) as usize;
                o.swap_remove(at);
            } else {
                key += 1;
                o.push(key);
            }
            let growing = o.ix.growing.is_some();
            if growing && !was_growing {
                growths += 1;
            }
            was_growing = growing;
            if step % 997 == 0 {
                o.all_found();
                // A key that was removed is not found.
                assert_eq!(o.find(u64::MAX), None);
            }
        }
        o.all_found();
        assert!(growths >= 10, "the table grew {growths} times");
    }

    /// A table whose size holds steady while its entries churn fills with tombstones, not
    /// entries: it is remade at its own size, not doubled again and again.
    #[test]
    fn churn_at_a_steady_size_does_not_grow_the_table() {
        let mut o = Owner::default();
        for k in 0..1_000u64 {
            o.push(k);
        }
        let settled = o.ix.capacity();
        for k in 1_000..200_000u64 {
            o.swap_remove((k * 7919 % 1_000) as usize);
            o.push(k);
        }
        o.all_found();
        assert!(
            o.ix.capacity() <= 2 * settled,
            "{} entries, room for {} (was {settled})",
            o.ix.len(),
            o.ix.capacity()
        );
    }
}
