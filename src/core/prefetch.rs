//! Cache-line prefetch hints, for the shard's few reads and writes of memory it has not
//! touched for a while (a known customer's context, between two of its messages, is cold):
//! asked for as soon as the address is known, the line arrives while the shard classifies
//! the text, instead of the shard waiting for it when it writes. A hint changes no value and
//! cannot fail; on targets other than x86_64 it does nothing.

/// Starts loading the cache line that holds `items[at]` (nothing when `at` is past the end).
#[inline(always)]
pub fn line<T>(items: &[T], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(item) = items.get(at) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch reads nothing the program sees and never faults (the address is
        // an item of `items` anyway); SSE, the instruction's feature, is in every x86_64
        // target.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(item).cast()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (items, at);
}
