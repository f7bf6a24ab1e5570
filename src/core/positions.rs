//! A hash index of positions (or other small handles): the keys stay where they are kept
//! anyway (the slab's values, the de-duplication window's queue, a conversation's first
//! phone), and the index holds only the handle beside 32 bits of the key's hash, in one slot
//! of 8 bytes (16 for a 64-bit handle). A `HashMap` from key to position repeats the key in
//! every slot.
//!
//! Open addressing with linear probing: a key is filed in the first free slot from its home
//! (the low bits of its hash), and a removal shifts back the entries after it that may take
//! its place, so no removal leaves a tombstone and a table whose entries churn at a steady
//! size never fills up. A cold lookup reads one line of the index, then the key where its
//! owner keeps it (where the caller goes next anyway): the slot holds the hash bits it is
//! checked by and the handle together (hashbrown's `HashTable`, used before, keeps a slot's
//! control byte and its handle in two arrays, two lines apart). The 32 bits kept are a key's
//! home in any table of up to 2³² slots, so a table grows, shrinks or is emptied without
//! reading a single key again. A table is at most three quarters full.
//!
//! The owner supplies the hashes (from its own per-process random state, so hash flooding
//! stays out of reach) and says which handle holds a key (`is`). [`Positions::prefetch`] asks
//! for a key's home line ahead of the lookup.
//!
//! **Growth without a stall.** A full table is not rehashed at once (at 917,504
//! conversations that stood a shard still for ~0.25 s for each index): a table twice the size
//! takes the new entries, and the old one's are moved over as its slots are walked,
//! [`MOVED_PER_INSERT`] at each insert, while lookups try the new table and then the old. An
//! entry left in the old table never moves (a removal there leaves a mark, not a shift), so
//! the walk meets each once. A new table is asked of the allocator zeroed (a free slot is all
//! zeros): its pages are faulted in as they are used, not written all at once. A table left
//! under a quarter full after a peak shrinks the same way ([`Positions::shrink_gradually`]),
//! its walk also moved on by its owner's ticks ([`Positions::settle`]).
use std::marker::PhantomData;

use super::prefetch;

/// Slots of the old table walked (their entries moved over) at each insert while a table
/// grows: a growth is over after a sixteenth as many inserts as the old table had slots, so
/// the new table (room for twice the old's entries) is never full before the old one is empty.
const MOVED_PER_INSERT: usize = 16;
/// The smallest table, in slots.
const MIN_SLOTS: usize = 8;

/// A slot's tag: free.
const FREE: u32 = 0;
/// A slot's tag: an entry taken out of a table being emptied by a growth (found by no key,
/// passed over by lookups, never reused).
const GONE: u32 = 1;

/// The tag a hash files its key under: its low 32 bits (2 when they are below 2, which are
/// the marks above). A key's home slot is its tag modulo the table's slots.
fn tag(hash: u64) -> u32 {
    (hash as u32).max(2)
}

/// A handle the index files: kept beside the tag in the slot's word when it fits in 32 bits
/// (a position), else in a word of its own (a 64-bit id).
pub trait Handle: Copy + Eq {
    /// Words a slot takes: 1 or 2.
    const WORDS: usize;
    fn to_word(self) -> u64;
    fn from_word(word: u64) -> Self;
}

impl Handle for u32 {
    const WORDS: usize = 1;
    fn to_word(self) -> u64 {
        u64::from(self)
    }
    fn from_word(word: u64) -> Self {
        word as u32
    }
}

impl Handle for u64 {
    const WORDS: usize = 2;
    fn to_word(self) -> u64 {
        self
    }
    fn from_word(word: u64) -> Self {
        word
    }
}

/// One open-addressing table: `slots` slots (a power of two, or none), each `T::WORDS` words,
/// the tag in the low half of the first.
#[derive(Debug)]
struct Table<T> {
    words: Vec<u64>,
    slots: usize,
    len: usize,
    handle: PhantomData<T>,
}

impl<T: Handle> Table<T> {
    fn with_slots(slots: usize) -> Self {
        debug_assert!(slots == 0 || slots.is_power_of_two());
        assert!(slots <= 1 << 32, "a tag addresses at most 2³² slots");
        Self {
            words: vec![0; slots * T::WORDS],
            slots,
            len: 0,
            handle: PhantomData,
        }
    }

    /// Entries it takes before it grows: three quarters of its slots.
    fn room(&self) -> usize {
        self.slots / 4 * 3
    }

    fn home(&self, tag: u32) -> usize {
        tag as usize & (self.slots - 1)
    }

    fn next(&self, i: usize) -> usize {
        (i + 1) & (self.slots - 1)
    }

    fn tag(&self, i: usize) -> u32 {
        self.words[i * T::WORDS] as u32
    }

    fn handle(&self, i: usize) -> T {
        match T::WORDS {
            1 => T::from_word(self.words[i] >> 32),
            _ => T::from_word(self.words[i * 2 + 1]),
        }
    }

    fn set(&mut self, i: usize, tag: u32, at: T) {
        match T::WORDS {
            1 => self.words[i] = u64::from(tag) | at.to_word() << 32,
            _ => {
                self.words[i * 2] = u64::from(tag);
                self.words[i * 2 + 1] = at.to_word();
            }
        }
    }

    /// The slot whose tag is `tag` and whose handle `is` accepts.
    fn find(&self, tag: u32, mut is: impl FnMut(T) -> bool) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mut i = self.home(tag);
        loop {
            match self.tag(i) {
                FREE => return None,
                t if t == tag && is(self.handle(i)) => return Some(i),
                _ => i = self.next(i),
            }
        }
    }

    /// Files `at` in the first free slot from its home (the table has room: below `room`).
    fn insert(&mut self, tag: u32, at: T) {
        debug_assert!(self.len < self.slots - 1);
        let mut i = self.home(tag);
        while self.tag(i) != FREE {
            i = self.next(i);
        }
        self.set(i, tag, at);
        self.len += 1;
    }

    /// Empties slot `i`, shifting back each entry after it (up to the next free slot) whose
    /// home allows it to take the hole: every entry stays reachable from its home without
    /// crossing a free slot.
    fn take_out(&mut self, i: usize) {
        let mask = self.slots - 1;
        let mut hole = i;
        let mut j = i;
        loop {
            j = self.next(j);
            let tag = self.tag(j);
            if tag == FREE {
                break;
            }
            // The entry at `j` may move to `hole` if the hole lies between its home and `j`.
            if j.wrapping_sub(self.home(tag)) & mask >= j.wrapping_sub(hole) & mask {
                let at = self.handle(j);
                self.set(hole, tag, at);
                hole = j;
            }
        }
        self.words[hole * T::WORDS..][..T::WORDS].fill(0);
        self.len -= 1;
    }

    /// Marks slot `i`'s entry gone without moving any other (a table being walked by a
    /// growth).
    fn mark_gone(&mut self, i: usize) {
        let at = self.handle(i);
        self.set(i, GONE, at);
        self.len -= 1;
    }

    /// The live entries, as (tag, handle).
    fn entries(&self) -> impl Iterator<Item = (u32, T)> + '_ {
        (0..self.slots)
            .filter(|&i| self.tag(i) > GONE)
            .map(|i| (self.tag(i), self.handle(i)))
    }

    fn prefetch(&self, tag: u32) {
        if self.slots > 0 {
            prefetch::line(&self.words, self.home(tag) * T::WORDS);
        }
    }
}

impl<T: Handle> Default for Table<T> {
    fn default() -> Self {
        Self::with_slots(0)
    }
}

#[derive(Debug)]
pub struct Positions<T: Handle = u32> {
    table: Table<T>,
    /// The table before the last growth (or shrink), while its entries are moved over.
    growing: Option<Growing<T>>,
}

#[derive(Debug)]
struct Growing<T> {
    old: Table<T>,
    /// Slots below this were walked: their entries are in the new table.
    walked: usize,
}

impl<T: Handle> Default for Positions<T> {
    fn default() -> Self {
        Self {
            table: Table::default(),
            growing: None,
        }
    }
}

impl<T: Handle> Positions<T> {
    pub fn len(&self) -> usize {
        self.table.len + self.growing.as_ref().map_or(0, |g| g.old.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries it takes before it grows.
    pub fn capacity(&self) -> usize {
        self.table.room()
    }

    /// The handle, among those filed under `hash`, that `is` accepts.
    pub fn find(&self, hash: u64, mut is: impl FnMut(T) -> bool) -> Option<T> {
        let tag = tag(hash);
        if let Some(i) = self.table.find(tag, &mut is) {
            return Some(self.table.handle(i));
        }
        let old = &self.growing.as_ref()?.old;
        old.find(tag, is).map(|i| old.handle(i))
    }

    /// The first handle filed under `hash`'s tag, unchecked against its key: maybe another
    /// key's. For a hint (what to prefetch) only.
    pub fn guess(&self, hash: u64) -> Option<T> {
        self.find(hash, |_| true)
    }

    /// Starts loading the line a lookup of `hash` reads first (a hint: changes nothing).
    pub fn prefetch(&self, hash: u64) {
        let tag = tag(hash);
        self.table.prefetch(tag);
        if let Some(g) = &self.growing {
            g.old.prefetch(tag);
        }
    }

    /// Files `at` under `hash`; the caller knows no other handle holds its key.
    pub fn insert(&mut self, hash: u64, at: T) {
        if self.table.len >= self.table.room() {
            // Never while growing (see MOVED_PER_INSERT), but a growth would end first.
            self.move_over(usize::MAX);
            let slots = (self.table.slots * 2).max(MIN_SLOTS);
            let old = std::mem::replace(&mut self.table, Table::with_slots(slots));
            if old.len > 0 {
                self.growing = Some(Growing { old, walked: 0 });
            }
        }
        if self.growing.is_some() {
            self.move_over(MOVED_PER_INSERT);
        }
        self.table.insert(tag(hash), at);
    }

    /// Forgets `at` (filed under `hash`); false if it was not there.
    pub fn remove(&mut self, hash: u64, at: T) -> bool {
        let tag = tag(hash);
        if let Some(i) = self.table.find(tag, |p| p == at) {
            self.table.take_out(i);
            return true;
        }
        if let Some(g) = &mut self.growing
            && let Some(i) = g.old.find(tag, |p| p == at)
        {
            g.old.mark_gone(i);
            return true;
        }
        false
    }

    /// The key filed under `hash` at `from` is now held by `to`.
    pub fn moved(&mut self, hash: u64, from: T, to: T) {
        let tag = tag(hash);
        if let Some(i) = self.table.find(tag, |p| p == from) {
            self.table.set(i, tag, to);
        } else if let Some(g) = &mut self.growing
            && let Some(i) = g.old.find(tag, |p| p == from)
        {
            g.old.set(i, tag, to);
        }
    }

    /// Begins giving back room after a peak, once the entries fill under a quarter of the
    /// table's room: a smaller table takes them over a few at a time, as in a growth (remade
    /// at once, a table of 8,388,608 slots with 1,000,000 entries left stood the shard still
    /// for ~28 ms). The smaller table has room for the entries and for the inserts that may
    /// come while the old one is walked ([`MOVED_PER_INSERT`] slots each, and
    /// [`Positions::settle`]). Nothing while a table is walked, or when it would not shrink.
    pub fn shrink_gradually(&mut self) {
        if self.growing.is_some() || self.table.len >= self.table.room() / 4 {
            return;
        }
        let room = self.table.len + self.table.slots.div_ceil(MOVED_PER_INSERT);
        let slots = (room.div_ceil(3) * 4).next_power_of_two().max(MIN_SLOTS);
        if slots >= self.table.slots {
            return;
        }
        let old = std::mem::replace(&mut self.table, Table::with_slots(slots));
        if old.len > 0 {
            self.growing = Some(Growing { old, walked: 0 });
        }
    }

    /// Slots held, those of a table being emptied included.
    #[cfg(test)]
    pub fn slots(&self) -> usize {
        self.table.slots + self.growing.as_ref().map_or(0, |g| g.old.slots)
    }

    /// Walks up to `slots` more slots of a table being emptied (after a growth or a shrink),
    /// moving their entries over: an index that takes no inserts still ends its walk.
    pub fn settle(&mut self, slots: usize) {
        self.move_over(slots);
    }

    /// Ends a growth, and remakes the table at the smallest size that holds its entries.
    pub fn shrink_to_fit(&mut self) {
        self.move_over(usize::MAX);
        let len = self.table.len;
        let slots = match len {
            0 => 0,
            _ => (len.div_ceil(3) * 4).next_power_of_two().max(MIN_SLOTS),
        };
        if slots < self.table.slots {
            let old = std::mem::replace(&mut self.table, Table::with_slots(slots));
            for (tag, at) in old.entries() {
                self.table.insert(tag, at);
            }
        }
    }

    pub fn clear(&mut self) {
        self.table.words.fill(0);
        self.table.len = 0;
        self.growing = None;
    }

    /// Walks up to `count` more slots of the old table, moving their entries to the new one;
    /// drops the old table once walked.
    fn move_over(&mut self, count: usize) {
        let Positions { table, growing } = self;
        let Some(g) = growing else {
            return;
        };
        let to = g.walked.saturating_add(count).min(g.old.slots);
        for i in g.walked..to {
            let tag = g.old.tag(i);
            if tag > GONE {
                table.insert(tag, g.old.handle(i));
                g.old.mark_gone(i);
            }
        }
        g.walked = to;
        if to == g.old.slots {
            debug_assert_eq!(g.old.len, 0, "every old entry was walked");
            *growing = None;
        }
    }
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
        fn push(&mut self, k: u64) {
            self.keys.push(k);
            let at = (self.keys.len() - 1) as u32;
            self.ix.insert(hash(k), at);
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
        o.ix.shrink_to_fit();
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

    /// The index against a map from key to handle, through inserts, removals, handles moved
    /// and shrinks, with hashes from a space so small that keys share tags and homes (long
    /// runs of occupied slots that wrap around the table's end), among them hashes whose low
    /// bits are the free and gone marks. Every step is checked for every key, and the slots
    /// for the invariant a lookup relies on: each entry is reachable from its home.
    #[test]
    fn agrees_with_a_map_whatever_the_hashes_share() {
        for (space, seed) in [(3u64, 1u64), (64, 2), (1 << 20, 3)] {
            let hash = move |k: u64| match k % 7 {
                0 => 0,
                1 => 1,
                _ => (k % space).wrapping_mul(0x9e37_79b9_7f4a_7c15) << 32 >> 32,
            };
            let mut ix: Positions<u64> = Positions::default();
            let mut model: std::collections::HashMap<u64, u64> = Default::default();
            let mut state = seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
            let mut next = move || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let find = |ix: &Positions<u64>, model: &std::collections::HashMap<_, _>, k| {
                ix.find(hash(k), |id| model.get(&k) == Some(&id))
            };
            let (mut shrinks, mut gradual) = (0, 0);
            for step in 0..8_000u64 {
                let k = next() % 300;
                // A hint, safe at every state (no table, growing, shrunk): nothing to show.
                ix.prefetch(hash(k));
                // Stretches of mostly inserts, then of only removals: tables grow, then are
                // left under a quarter full.
                let draining = (step / 1_000) % 2 == 1;
                match next() % 10 {
                    0..=4 if !draining => {
                        if let std::collections::hash_map::Entry::Vacant(e) = model.entry(k) {
                            let id = *e.insert(step);
                            ix.insert(hash(k), id);
                        }
                    }
                    0..=7 => {
                        let removed = model.remove(&k);
                        let gone = removed.is_some_and(|id| ix.remove(hash(k), id));
                        assert_eq!(gone, removed.is_some(), "step {step}: remove {k}");
                    }
                    8 => {
                        if let Some(id) = model.get_mut(&k) {
                            let to = 1_000_000 + step;
                            ix.moved(hash(k), *id, to);
                            *id = to;
                        }
                    }
                    _ if next() % 50 == 0 => {
                        ix.shrink_to_fit();
                        shrinks += 1;
                    }
                    _ if next() % 7 == 0 => {
                        let slots = ix.table.slots;
                        ix.shrink_gradually();
                        if ix.table.slots < slots {
                            gradual += 1;
                        }
                    }
                    _ if next() % 3 == 0 => ix.settle((next() % 8) as usize),
                    _ => {}
                }
                assert_eq!(ix.len(), model.len(), "step {step}");
                if step % 97 == 0 || (ix.growing.is_some() && step % 5 == 0) {
                    for key in 0..300 {
                        assert_eq!(
                            find(&ix, &model, key),
                            model.get(&key).copied(),
                            "key {key}"
                        );
                    }
                    reachable(&ix.table);
                }
            }
            assert!(shrinks > 0);
            assert!(gradual > 0, "no table shrank a step at a time");
            for (&k, &id) in model.clone().iter() {
                assert!(ix.remove(hash(k), id));
                model.remove(&k);
                reachable(&ix.table);
            }
            assert!(ix.is_empty());
            ix.shrink_to_fit();
            assert_eq!(ix.table.slots, 0, "an empty index keeps no table");
        }
    }

    /// Every entry of a table (not one being walked by a growth) lies at the end of a run of
    /// taken slots that begins at its home.
    fn reachable<T: Handle>(t: &Table<T>) {
        let mut live = 0;
        for i in 0..t.slots {
            let tag = t.tag(i);
            assert_ne!(tag, GONE, "no marks outside a growth");
            if tag == FREE {
                continue;
            }
            live += 1;
            let mut j = t.home(tag);
            while j != i {
                assert_ne!(t.tag(j), FREE, "slot {i} cut off from its home by {j}");
                j = t.next(j);
            }
        }
        assert_eq!(live, t.len);
    }
}
