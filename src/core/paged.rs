//! A `Vec` in pages: a [`super::dense::Dense`] map's entries (the slab's conversations among
//! them). A `Vec` of hundreds of thousands of values doubles its capacity to grow, so it holds
//! up to twice what it uses, and while it moves into the new allocation the old one is held
//! too (three times, for a moment). Here only the first page grows by doubling; past it values
//! go into pages of a fixed size, allocated one at a time, so the room to spare is under one
//! page whatever the count. Positions are `usize`s as in a `Vec`; `swap_remove` keeps the
//! values dense.
use std::ops::{Index, IndexMut};

/// Values per page: 1,024 conversations are ~110 KB, small against a tenant that needs more
/// than one page.
const PAGE: usize = 1 << 10;

#[derive(Debug)]
pub struct Paged<T> {
    /// Every page but the last is full; none is empty.
    pages: Vec<Vec<T>>,
    /// The last full-size page emptied, kept for the next one needed: a count going back and
    /// forth across a page's edge (conversations opened and swept) allocates nothing.
    spare: Option<Vec<T>>,
    len: usize,
}

impl<T> Default for Paged<T> {
    fn default() -> Self {
        Self {
            pages: Vec::new(),
            spare: None,
            len: 0,
        }
    }
}

impl<T> Paged<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn capacity(&self) -> usize {
        self.pages
            .iter()
            .chain(&self.spare)
            .map(Vec::capacity)
            .sum()
    }

    pub fn get(&self, at: usize) -> Option<&T> {
        (at < self.len).then(|| &self[at])
    }

    pub fn push(&mut self, value: T) {
        match self.pages.last_mut() {
            Some(page) if page.len() < PAGE => {
                if page.len() == page.capacity() {
                    // Only the first page grows (the later ones start full size).
                    page.reserve_exact(page.len().min(PAGE - page.len()));
                }
                page.push(value);
            }
            _ => {
                let mut page = match self.pages.is_empty() {
                    true => Vec::with_capacity(4),
                    false => self
                        .spare
                        .take()
                        .unwrap_or_else(|| Vec::with_capacity(PAGE)),
                };
                page.push(value);
                self.pages.push(page);
            }
        }
        self.len += 1;
    }

    /// Removes the value at `at`, moving the last one into its place.
    pub fn swap_remove(&mut self, at: usize) -> T {
        assert!(at < self.len, "position {at} of {}", self.len);
        let last_page = self.pages.last_mut().expect("not empty");
        let mut value = last_page.pop().expect("no page is empty");
        if last_page.is_empty() {
            let page = self.pages.pop().expect("the last page");
            // Emptied whole, nothing is kept.
            self.spare = (!self.pages.is_empty()).then_some(page);
        }
        self.len -= 1;
        if at < self.len {
            std::mem::swap(&mut self[at], &mut value);
        }
        value
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.pages.iter().flatten()
    }

    pub fn shrink_to_fit(&mut self) {
        self.spare = None;
        if let [page] = self.pages.as_mut_slice() {
            page.shrink_to_fit();
        }
        self.pages.shrink_to_fit();
    }
}

impl<T> Index<usize> for Paged<T> {
    type Output = T;

    fn index(&self, at: usize) -> &T {
        &self.pages[at / PAGE][at % PAGE]
    }
}

impl<T> IndexMut<usize> for Paged<T> {
    fn index_mut(&mut self, at: usize) -> &mut T {
        &mut self.pages[at / PAGE][at % PAGE]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes and swap-removes against a `Vec` doing the same, across page boundaries.
    #[test]
    fn behaves_as_a_vec_across_pages() {
        let mut paged = Paged::default();
        let mut vec = Vec::new();
        let mut seed = 7u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000u64 {
            // Mostly pushes at first, mostly removals later: the length crosses pages both ways.
            let remove = !vec.is_empty() && next() % 100 < if round < 10_000 { 30 } else { 70 };
            if remove {
                let at = (next() % vec.len() as u64) as usize;
                assert_eq!(paged.swap_remove(at), vec.swap_remove(at));
            } else {
                paged.push(round);
                vec.push(round);
            }
            assert_eq!(paged.len(), vec.len());
            if round % 997 == 0 {
                assert!(paged.iter().eq(vec.iter()));
                assert!(
                    (0..vec.len()).all(|i| paged[i] == vec[i] && paged.get(i) == Some(&vec[i]))
                );
                assert_eq!(paged.get(vec.len()), None);
                // Spare room: under a page past the first, and the spare page.
                assert!(paged.capacity() < paged.len().max(PAGE) + 2 * PAGE);
            }
        }
        while !vec.is_empty() {
            assert_eq!(paged.swap_remove(0), vec.swap_remove(0));
        }
        assert_eq!((paged.len(), paged.capacity()), (0, 0));
    }

    #[test]
    fn the_first_page_grows_from_small() {
        let mut paged = Paged::default();
        paged.push(1u8);
        assert_eq!(paged.capacity(), 4);
        for i in 0..PAGE as u32 {
            paged.push(i as u8);
        }
        assert_eq!(paged.capacity(), 2 * PAGE);
        // Back and forth across the edge: the emptied page is kept, not allocated again.
        for _ in 0..3 {
            paged.swap_remove(PAGE);
            assert_eq!((paged.len(), paged.capacity()), (PAGE, 2 * PAGE));
            paged.push(0);
            assert_eq!((paged.len(), paged.capacity()), (PAGE + 1, 2 * PAGE));
        }
        paged.swap_remove(0);
        paged.shrink_to_fit();
        assert_eq!((paged.len(), paged.capacity()), (PAGE, PAGE));
    }
}
