//! Cache-line prefetch hints, for the shard's few reads and writes of memory it has not
//! touched for a while (a known customer's context, between two of its messages, is cold):
//! asked for as soon as the address is known, the line arrives while the shard classifies
//! the text, instead of the shard waiting for it when it writes. A hint changes no value and
//! cannot fail; on targets other than x86_64 it does nothing.

/// Starts loading the cache line that holds `items[at]` (nothing when `at` is past the end).
#[inline(always)]
pub fn line<T>(items: &[T], at: usize) {
    if let Some(item) = items.get(at) {
        address(std::ptr::from_ref(item).cast());
    }
}

/// Starts loading every cache line `value` spans.
#[inline(always)]
pub fn whole<T>(value: &T) {
    let start: *const u8 = std::ptr::from_ref(value).cast();
    let first = start as usize & !(LINE - 1);
    let end = start as usize + std::mem::size_of::<T>();
    for line in (first..end).step_by(LINE) {
        // Within `value`'s span, or the start of the line it begins in.
        address(
            start
                .wrapping_add(line.saturating_sub(start as usize))
                .cast(),
        );
    }
}

/// A cache line's bytes (x86_64's, and most others').
const LINE: usize = 64;

#[inline(always)]
fn address(at: *const i8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch reads nothing the program sees and never faults (callers pass an
        // address inside a value they hold); SSE, the instruction's feature, is in every
        // x86_64 target.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}
