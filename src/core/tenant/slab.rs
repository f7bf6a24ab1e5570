//! Conversations by id, packed in a [`Dense`] map (the values in pages, a hash index of their
//! positions). A hash map holding the values themselves keeps up to twice as many slots as
//! entries (its load factor after a doubling), so each ~100-byte conversation would cost up
//! to ~200; here the spare room is in 8-byte index slots and under one page of values.
//! A removal moves the last value into the hole: positions are not stable, ids are.
//!
//! **Cuts without stopping** (Kafka mode's snapshots): once `track`ed, the slab records which
//! conversations changed or went since the last cut. A cut ([`Slab::begin_cut`]) owes a copy
//! of each of those and of the `Slice` it names, each *as it was when the cut began*; the copies
//! are taken a few at a time ([`Slab::step`]) while the shard goes on, and a conversation about
//! to change (or go) before its turn is copied first (copy on write). So a cut costs the
//! shard a flag, not a copy of every conversation. What changed, what a cut owes and what it
//! copied are bits in a byte beside each value (moved with it), not sets of ids: under a
//! backlog nearly every conversation is in them.
use std::ops::Index;

use super::super::dense::Dense;
use crate::model::ConversationId;

#[derive(Debug)]
pub(super) struct Slab<V> {
    values: Dense<ConversationId, V>,
    /// The [`CHANGED`], [`OWED`] and [`COPIED`] bits of the value at the same position.
    flags: Vec<u8>,
    /// Change tracking for cuts; None until [`Slab::track`] (nothing reads it otherwise).
    tracking: Option<Box<Tracking<V>>>,
}

/// A value [`Slab::remove`] took out, from position `at`.
#[derive(Debug)]
pub(super) struct Removed<V> {
    pub value: V,
    pub at: usize,
    /// The position of the value now at `at`, when one moved there (the last).
    pub moved_from: Option<usize>,
}

/// Which untouched conversations a cut copies besides the changed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slice {
    /// Every one: the cut stands alone.
    All,
    /// Those whose id is `round` modulo `spread`: over `spread` cuts in a row, every
    /// conversation is copied at least once.
    Round { round: u64, spread: u64 },
}

impl Slice {
    fn covers(self, id: ConversationId) -> bool {
        match self {
            Slice::All => true,
            Slice::Round { round, spread } => id.0 % spread.max(1) == round % spread.max(1),
        }
    }
}

/// Changed (or new) since the current cut began (kept only while tracked).
const CHANGED: u8 = 1;
/// Changed before the current cut began: the cut owes it whatever the slice.
const OWED: u8 = 2;
/// Copied into the current cut (never twice: a later copy could be newer than the cut).
const COPIED: u8 = 4;

#[derive(Debug)]
struct Tracking<V> {
    /// Removed since the current cut began.
    removed: Vec<ConversationId>,
    cut: Option<Pending<V>>,
}

/// A cut being copied.
#[derive(Debug)]
struct Pending<V> {
    slice: Slice,
    /// Conversations created after the cut began have ids from here on: never in it.
    new_from: ConversationId,
    /// Positions below this were scanned (what they owed is copied).
    cursor: usize,
    copies: Vec<(ConversationId, V)>,
    removed: Vec<ConversationId>,
}

/// A value a cut copies. `share` may first rearrange the value, never what it means, so
/// that the copy shares its big parts instead of duplicating them (a conversation seals its
/// context): under load a cut copies nearly every value, and it is held until written.
pub(super) trait Share: Clone {
    fn share(&mut self) -> Self;
}

/// A finished cut's conversations: copies as they were when it began, and the ids removed
/// since the cut before it.
#[derive(Debug)]
pub struct CutCopy<V> {
    pub copies: Vec<(ConversationId, V)>,
    pub removed: Vec<ConversationId>,
}

impl<V> Default for Slab<V> {
    fn default() -> Self {
        Self {
            values: Dense::default(),
            flags: Vec::new(),
            tracking: None,
        }
    }
}

impl<V: Share> Slab<V> {
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn contains_key(&self, id: &ConversationId) -> bool {
        self.values.contains_key(id)
    }

    pub fn get(&self, id: &ConversationId) -> Option<&V> {
        self.values.get(id)
    }

    pub fn get_mut(&mut self, id: &ConversationId) -> Option<&mut V> {
        let at = self.values.position(id)?;
        self.changing(at);
        Some(self.values.value_mut(at))
    }

    /// Adds or replaces the value of `id`.
    pub fn insert(&mut self, id: ConversationId, value: V) {
        match self.values.position(&id) {
            Some(at) => {
                self.changing(at);
                *self.values.value_mut(at) = value;
            }
            None => {
                self.push_new(id, value);
            }
        }
    }

    /// Adds the value of `id`, an id no value has (a new conversation's); its position.
    pub fn push_new(&mut self, id: ConversationId, value: V) -> usize {
        debug_assert!(!self.values.contains_key(&id), "{id:?} is new");
        self.values.push_new(id, value);
        self.flags
            .push(if self.tracking.is_some() { CHANGED } else { 0 });
        self.values.len() - 1
    }

    /// Starts loading what a lookup of `id` reads first: its index slot (a hint).
    pub fn prefetch(&self, id: &ConversationId) {
        self.values.prefetch(id);
    }

    /// Starts loading `id`'s value, once its index slot is loaded (a hint).
    pub fn prefetch_value(&self, id: &ConversationId) {
        self.values.prefetch_entry(id);
    }

    /// Where `id`'s value is now (a removal may move it).
    pub fn position(&self, id: &ConversationId) -> Option<usize> {
        self.values.position(id)
    }

    /// The id and value at position `at` (below `len()`).
    pub fn at(&self, at: usize) -> (&ConversationId, &V) {
        let (id, value) = &self.values[at];
        (id, value)
    }

    /// Makes position `at`, found through another index (a phone number's), the one the next
    /// lookup by id tries first.
    pub fn remember(&self, at: usize) {
        self.values.remember(at);
    }

    /// Removes `id`'s value. The last value moves into its place: an index of positions
    /// kept beside the slab (the first phones') must follow it (see [`Removed`]).
    pub fn remove(&mut self, id: &ConversationId) -> Option<Removed<V>> {
        let at = self.values.position(id)?;
        self.preserve(at);
        let last = self.values.len() - 1;
        if let Some(cut) = self.tracking.as_ref().and_then(|t| t.cut.as_ref())
            && at < cut.cursor
            && last >= cut.cursor
        {
            // The last value moves below the scan: copy it now if the cut owes it.
            self.preserve(last);
        }
        let (_, value) = self.values.remove_at(at);
        self.flags.swap_remove(at);
        if let Some(t) = &mut self.tracking {
            t.removed.push(*id);
        }
        Some(Removed {
            value,
            at,
            moved_from: (at < last).then_some(last),
        })
    }

    /// Gives back room after a peak (see [`Dense::shrink_gradually`]).
    pub fn shrink_gradually(&mut self) {
        self.values.shrink_gradually();
        if self.flags.len() < self.flags.capacity() / 4 {
            self.flags.shrink_to_fit();
        }
    }

    /// Walks on the index's table being emptied, if any, by up to `slots` slots.
    pub fn settle(&mut self, slots: usize) {
        self.values.settle(slots);
    }

    #[cfg(test)]
    pub fn index_slots(&self) -> usize {
        self.values.index_slots()
    }

    pub fn keys(&self) -> impl Iterator<Item = &ConversationId> {
        self.values.iter().map(|(id, _)| id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ConversationId, &V)> {
        self.values.iter()
    }

    /// True once changes are recorded.
    pub fn tracked(&self) -> bool {
        self.tracking.is_some()
    }

    /// Records changes from now on, for cuts.
    pub fn track(&mut self) {
        self.tracking.get_or_insert_with(|| {
            Box::new(Tracking {
                removed: Vec::new(),
                cut: None,
            })
        });
    }

    /// Begins a cut: it owes every conversation changed since the last one and those of
    /// `slice`, as they are now (ids from `new_from` on are created later). Untracked until
    /// now, the cut takes every conversation (nothing says what changed) and tracking starts.
    /// One cut at a time: the one before must be finished ([`Slab::step`]).
    pub fn begin_cut(&mut self, slice: Slice, new_from: ConversationId) {
        debug_assert!(
            self.tracking.as_ref().is_none_or(|t| t.cut.is_none()),
            "one cut at a time"
        );
        let slice = if self.tracking.is_none() {
            Slice::All
        } else {
            slice
        };
        self.track();
        // What changed is owed; nothing is copied yet (one pass over a byte a conversation).
        let mut changed = 0;
        for f in &mut self.flags {
            *f = if *f & CHANGED != 0 { OWED } else { 0 };
            changed += usize::from(*f != 0);
        }
        // Room for what the cut will likely copy, taken once: grown by doubling, the copies
        // of a big tenant's cut could hold up to as much again unused.
        let expected = match slice {
            Slice::All => self.values.len(),
            Slice::Round { spread, .. } => {
                let rest = (self.values.len() - changed) as u64 / spread.max(1);
                changed + usize::try_from(rest + rest / 8 + 16).unwrap_or(usize::MAX)
            }
        };
        let t = self.tracking.as_mut().expect("tracking");
        t.cut = Some(Pending {
            slice,
            new_from,
            cursor: 0,
            copies: Vec::with_capacity(expected.min(self.values.len())),
            removed: std::mem::take(&mut t.removed),
        });
    }

    /// Copies up to about `budget` conversations of the cut being taken (scanning counts a
    /// sixteenth of a copy); the finished cut once it owes nothing more.
    pub fn step(&mut self, budget: usize) -> Option<CutCopy<V>> {
        let Slab {
            values,
            flags,
            tracking,
            ..
        } = self;
        let cut = tracking.as_mut()?.cut.as_mut()?;
        let mut spent = 0usize;
        while spent < budget && cut.cursor < values.len() {
            let at = cut.cursor;
            let id = values[at].0;
            if cut.owes(at, &id, flags[at]) {
                cut.copies.push((id, values.value_mut(at).share()));
                flags[at] |= COPIED;
                spent += 16;
            }
            spent += 1;
            cut.cursor += 1;
        }
        if cut.cursor < values.len() {
            return None;
        }
        let cut = tracking.as_mut()?.cut.take()?;
        Some(CutCopy {
            copies: cut.copies,
            removed: cut.removed,
        })
    }

    /// The value at `at` is about to change: recorded for the next cut, and copied first if
    /// the cut being taken owes it.
    fn changing(&mut self, at: usize) {
        self.preserve(at);
        if self.tracking.is_some() {
            self.flags[at] |= CHANGED;
        }
    }

    /// Copies the value at `at` into the cut being taken if the cut owes it and has not got
    /// it yet.
    fn preserve(&mut self, at: usize) {
        let Some(cut) = self.tracking.as_mut().and_then(|t| t.cut.as_mut()) else {
            return;
        };
        let id = self.values[at].0;
        if at >= cut.cursor && cut.owes(at, &id, self.flags[at]) {
            cut.copies.push((id, self.values.value_mut(at).share()));
            self.flags[at] |= COPIED;
        }
    }
}

impl<V> Pending<V> {
    /// Whether the cut owes a copy of `id` (at `at`, with `flags`) that it has not taken.
    /// Below the cursor everything owed was copied already.
    fn owes(&self, at: usize, id: &ConversationId, flags: u8) -> bool {
        at >= self.cursor
            && flags & COPIED == 0
            && (flags & OWED != 0 || (id.0 < self.new_from.0 && self.slice.covers(*id)))
    }
}

impl<V: Share> Index<&ConversationId> for Slab<V> {
    type Output = V;

    fn index(&self, id: &ConversationId) -> &V {
        self.get(id)
            .expect("a conversation the caller knows exists")
    }
}

impl<V: Share> FromIterator<(ConversationId, V)> for Slab<V> {
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

    impl Share for u64 {
        fn share(&mut self) -> Self {
            *self
        }
    }

    fn id(n: u64) -> ConversationId {
        ConversationId(n)
    }

    #[test]
    fn removal_moves_the_last_value_and_keeps_every_id_found() {
        let mut s: Slab<u64> = (1..=5).map(|n| (id(n), n * 10)).collect();
        let removed = s.remove(&id(2)).expect("there");
        assert_eq!(
            (removed.value, removed.at, removed.moved_from),
            (20, 1, Some(4))
        );
        assert_eq!(
            s.position(&id(5)),
            Some(1),
            "the last value moved into the hole"
        );
        assert_eq!(s.at(1), (&id(5), &50));
        assert!(s.remove(&id(2)).is_none());
        // The last value (4, at 3) goes: nothing moves.
        let removed = s.remove(&id(4)).expect("there");
        assert_eq!(
            (removed.value, removed.at, removed.moved_from),
            (40, 3, None)
        );
        s.insert(id(4), 40);
        assert_eq!(s.position(&id(4)), Some(3));
        assert_eq!(s.len(), 4);
        for n in [1, 3, 4, 5] {
            assert_eq!(s[&id(n)], n * 10, "conversation {n}");
        }
        s.insert(id(3), 33);
        assert_eq!(s.get(&id(3)), Some(&33));
        assert_eq!(s.len(), 4);
    }

    /// Copy on write while a cut is copied: values changed, removed, or moved under the scan
    /// by a removal are saved as they were when the cut began; new ones are not in it.
    #[test]
    fn a_cut_saves_each_owed_value_as_it_was_when_it_began() {
        let mut s: Slab<u64> = (0..10).map(|n| (id(n), n)).collect();
        s.track();
        *s.get_mut(&id(3)).unwrap() += 100; // changed before the cut: owed (odd, off slice)
        s.remove(&id(5)); // removed before the cut: listed
        // The slice: even ids. The last value is id 8 (9 moved into 5's hole).
        s.begin_cut(
            Slice::Round {
                round: 0,
                spread: 2,
            },
            id(10),
        );
        // Positions 0 to 3 scanned: 0 and 2 copied (the slice), 3 copied (owed).
        assert!(s.step(17 + 1 + 17 + 1).is_none());
        // Removing id 1 (position 1, under the scan) moves the last value (id 8, unscanned
        // and owed) there: it is copied before it moves.
        s.remove(&id(1));
        *s.get_mut(&id(8)).unwrap() = 800;
        *s.get_mut(&id(6)).unwrap() = 600; // owed, not scanned yet: copied before it changes
        s.insert(id(10), 10); // new: not in this cut
        s.remove(&id(4)); // owed: copied before it goes
        let cut = loop {
            if let Some(cut) = s.step(2) {
                break cut;
            }
        };
        let mut copies = cut.copies.clone();
        copies.sort();
        let expect = [(0, 0), (2, 2), (3, 103), (4, 4), (6, 6), (8, 8)];
        assert_eq!(copies, expect.map(|(i, v)| (id(i), v)).to_vec());
        assert_eq!(cut.removed, vec![id(5)]);
        // The next cut owes what changed during this one, and lists what went.
        s.begin_cut(
            Slice::Round {
                round: 1,
                spread: 2,
            },
            id(11),
        );
        let next = s.step(usize::MAX).expect("done");
        let mut ids: Vec<u64> = next.copies.iter().map(|(i, _)| i.0).collect();
        ids.sort();
        assert_eq!(
            ids,
            [3, 6, 7, 8, 9, 10],
            "changed (6, 8, 10), the odd slice (3, 7, 9)"
        );
        let mut gone: Vec<u64> = next.removed.iter().map(|i| i.0).collect();
        gone.sort();
        assert_eq!(gone, [1, 4]);
    }
}
