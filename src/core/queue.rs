//! A first-in first-out queue in pages: the de-duplication window's ids, up to
//! `limits.dedup_max_ids` (1,000,000 by default) of 24 bytes. A `VecDeque` doubles its buffer
//! to grow, copying what it holds while the old buffer is held too: at 2¹⁹ ids a 12.6 MB copy,
//! 6–12 ms of the shard's time (the slowest messages of `cargo bench --bench stalls`), and
//! 37.8 MB for that moment. Here only the first page grows by doubling; past it values go into
//! pages of a fixed size allocated one at a time, a page is dropped once every value in it
//! has left, and nothing is ever copied again. The room to spare is under two pages.
use std::collections::VecDeque;
use std::ops::Index;

/// Values per page: 4,096 of the window's 24-byte ids are 96 KB.
const PAGE: usize = 1 << 12;

#[derive(Debug)]
pub struct Queue<T> {
    /// Every page but the last holds `PAGE` values; the first page's values before `head`
    /// have left. No page is without a value still queued.
    pages: VecDeque<Vec<T>>,
    head: usize,
    len: usize,
    /// The last full-size page emptied, kept for the next one needed: a queue going back and
    /// forth across a page's edge allocates nothing.
    spare: Option<Vec<T>>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self {
            pages: VecDeque::new(),
            head: 0,
            len: 0,
            spare: None,
        }
    }
}

impl<T: Copy> Queue<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, at: usize) -> Option<&T> {
        (at < self.len).then(|| &self[at])
    }

    pub fn front(&self) -> Option<&T> {
        self.get(0)
    }

    pub fn push_back(&mut self, value: T) {
        match self.pages.back_mut() {
            Some(page) if page.len() < PAGE => {
                if page.len() == page.capacity() {
                    // Only a first page grows (the later ones start full size).
                    page.reserve_exact(page.len().min(PAGE - page.len()));
                }
                page.push(value);
            }
            _ => {
                let mut page = match (self.pages.is_empty(), self.spare.take()) {
                    (_, Some(spare)) => spare,
                    (true, None) => Vec::with_capacity(4),
                    (false, None) => Vec::with_capacity(PAGE),
                };
                page.push(value);
                self.pages.push_back(page);
            }
        }
        self.len += 1;
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let first = self.pages.front()?;
        let value = first[self.head];
        self.head += 1;
        self.len -= 1;
        if self.head == first.len() {
            let mut page = self.pages.pop_front().expect("looked at above");
            self.head = 0;
            if page.capacity() == PAGE {
                page.clear();
                self.spare = Some(page);
            }
        }
        Some(value)
    }

    /// The values, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.pages.iter().flatten().skip(self.head)
    }

    pub fn clear(&mut self) {
        self.pages.clear();
        (self.head, self.len) = (0, 0);
    }

    /// Gives back the spare page.
    pub fn shrink_to_fit(&mut self) {
        self.spare = None;
        self.pages.shrink_to_fit();
    }
}

/// The value `at` places from the front (below `len()`).
impl<T> Index<usize> for Queue<T> {
    type Output = T;

    fn index(&self, at: usize) -> &T {
        assert!(at < self.len, "position {at} of {}", self.len);
        let at = self.head + at;
        &self.pages[at / PAGE][at % PAGE]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The queue against a `VecDeque` through runs of pushes and pops that cross pages' edges
    /// both ways, empty it, and grow a first page again; every value checked by position,
    /// by iteration and at the front.
    #[test]
    fn agrees_with_a_vec_deque_across_pages() {
        let mut queue = Queue::default();
        let mut model = VecDeque::new();
        let mut x = 11u64;
        let mut next = 0u64;
        for step in 0..400 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let run = (x >> 33) as usize % (3 * PAGE);
            // Mostly growth at first, then mostly shrinking, then back and forth.
            let push = match step {
                0..=99 => !x.is_multiple_of(3),
                100..=199 => x.is_multiple_of(3),
                _ => x.is_multiple_of(2),
            };
            for _ in 0..run {
                if push {
                    queue.push_back(next);
                    model.push_back(next);
                    next += 1;
                } else {
                    assert_eq!(queue.pop_front(), model.pop_front());
                }
            }
            assert_eq!(queue.len(), model.len());
            assert_eq!(queue.front(), model.front());
            for at in (0..model.len())
                .step_by(997)
                .chain(model.len().checked_sub(1))
            {
                assert_eq!(queue[at], model[at], "position {at}");
            }
            assert_eq!(queue.get(model.len()), None);
            if step % 50 == 0 {
                assert!(queue.iter().eq(model.iter()));
                queue.shrink_to_fit();
            }
            let pages = queue.pages.len();
            assert!(
                pages <= model.len().div_ceil(PAGE) + 1,
                "{pages} pages for {} values",
                model.len()
            );
        }
        queue.clear();
        assert_eq!(queue.len(), 0);
        assert_eq!(queue.pop_front(), None);
        queue.push_back(7);
        assert_eq!((queue.front(), queue.len()), (Some(&7), 1));
    }
}
