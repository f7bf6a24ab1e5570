//! A first-in first-out queue in pages: the de-duplication window's ids (up to
//! `limits.dedup_max_ids`, 1,000,000 by default, of 24 bytes), the quotas' log of sends and
//! their rolling count's events. A `VecDeque` doubles its buffer to grow, copying what it
//! holds while the old buffer is held too: at 2¹⁹ window ids a 12.6 MB copy, 6–12 ms of the
//! shard's time (the slowest messages of `cargo bench --bench stalls`), and 37.8 MB for that
//! moment; at 2¹⁹ sends in the log, ~90 ms. Here only the first page grows by doubling; past
//! it values go into pages of a fixed size allocated one at a time, a page is dropped once
//! every value in it has left, and nothing is ever copied again. The room to spare is under
//! two pages.
use std::collections::VecDeque;
use std::ops::{Index, IndexMut};

/// Values per page: 4,096 of the window's 24-byte ids are 96 KB.
const PAGE: usize = 1 << 12;

#[derive(Debug)]
pub struct Queue<T> {
    /// Values leave from the first page's front and join at the last page's back; every page
    /// between them holds `PAGE` values. No page is empty.
    pages: VecDeque<VecDeque<T>>,
    len: usize,
    /// The last full-size page emptied, kept for the next one needed: a queue going back and
    /// forth across a page's edge allocates nothing.
    spare: Option<VecDeque<T>>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self {
            pages: VecDeque::new(),
            len: 0,
            spare: None,
        }
    }
}

impl<T> Queue<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, at: usize) -> Option<&T> {
        let (page, i) = self.locate(at)?;
        Some(&self.pages[page][i])
    }

    pub fn get_mut(&mut self, at: usize) -> Option<&mut T> {
        let (page, i) = self.locate(at)?;
        Some(&mut self.pages[page][i])
    }

    pub fn front(&self) -> Option<&T> {
        self.get(0)
    }

    /// The page and the place in it of the value `at` places from the front.
    fn locate(&self, at: usize) -> Option<(usize, usize)> {
        if at >= self.len {
            return None;
        }
        let first = self.pages[0].len();
        Some(match at.checked_sub(first) {
            None => (0, at),
            Some(past) => (1 + past / PAGE, past % PAGE),
        })
    }

    pub fn push_back(&mut self, value: T) {
        match self.pages.back_mut() {
            Some(page) if page.len() < PAGE => {
                if page.len() == page.capacity() {
                    // Only a first page grows (the later ones start full size).
                    page.reserve_exact(page.len().min(PAGE - page.len()));
                }
                page.push_back(value);
            }
            _ => {
                let mut page = match (self.pages.is_empty(), self.spare.take()) {
                    (_, Some(spare)) => spare,
                    (true, None) => VecDeque::with_capacity(4),
                    (false, None) => VecDeque::with_capacity(PAGE),
                };
                page.push_back(value);
                self.pages.push_back(page);
            }
        }
        self.len += 1;
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let first = self.pages.front_mut()?;
        let value = first.pop_front().expect("no page is empty");
        self.len -= 1;
        if first.is_empty() {
            let page = self.pages.pop_front().expect("looked at above");
            if page.capacity() >= PAGE {
                self.spare = Some(page);
            }
        }
        Some(value)
    }

    /// How many values from the front satisfy `pred`, which holds for a prefix of the queue
    /// and not after it (a binary search, as `VecDeque::partition_point`).
    pub fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        let (mut low, mut high) = (0, self.len);
        while low < high {
            let mid = low + (high - low) / 2;
            if pred(&self[mid]) {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        low
    }

    /// The values, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.pages.iter().flatten()
    }

    pub fn clear(&mut self) {
        self.pages.clear();
        self.len = 0;
    }

    /// Gives back the spare page.
    pub fn shrink_to_fit(&mut self) {
        self.spare = None;
        self.pages.shrink_to_fit();
    }
}

impl<T> FromIterator<T> for Queue<T> {
    fn from_iter<I: IntoIterator<Item = T>>(values: I) -> Self {
        let mut queue = Queue::default();
        for value in values {
            queue.push_back(value);
        }
        queue
    }
}

/// The value `at` places from the front (below `len()`).
impl<T> Index<usize> for Queue<T> {
    type Output = T;

    fn index(&self, at: usize) -> &T {
        let len = self.len;
        self.get(at)
            .unwrap_or_else(|| panic!("position {at} of {len}"))
    }
}

impl<T> IndexMut<usize> for Queue<T> {
    fn index_mut(&mut self, at: usize) -> &mut T {
        let len = self.len;
        self.get_mut(at)
            .unwrap_or_else(|| panic!("position {at} of {len}"))
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
                // Values changed in place, by position; and found by a binary search (the
                // values are increasing).
                for at in (0..model.len()).step_by(1_009) {
                    *queue.get_mut(at).expect("below len") += 1;
                    assert_eq!(queue[at], model[at] + 1);
                    queue[at] -= 1;
                    let value = model[at];
                    assert_eq!(queue.partition_point(|&v| v < value), at);
                }
                assert_eq!(queue.partition_point(|_| true), model.len());
                let copy: Queue<u64> = model.iter().copied().collect();
                assert!(copy.iter().eq(model.iter()));
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
