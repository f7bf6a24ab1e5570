//! The binaries' allocator settings. mimalloc (the global allocator of `switchboard`,
//! `switchboard-load` and the memory bench) keeps freed memory for a second before it gives
//! it back to the OS, and asks for transparent huge pages (counted whole in RSS, zeroed 2 MiB
//! at a time): in the memory bench a customer's RSS ran ~110 bytes above its live heap
//! (~37 with the settings below). [`tune`] sets two of its options, each unless the
//! environment sets it (mimalloc reads `MIMALLOC_<OPTION>` at start-up; an operator's choice
//! stands):
//!
//! - `purge_delay` 10 ms (mimalloc's default is 1,000): freed memory goes back to the OS
//!   within ~10 ms of allocator activity instead of a second;
//! - `allow_thp` 0 (default 1): no transparent huge pages (and the process flag that says so,
//!   as mimalloc sets it when the variable is given).
//!
//! The figures (memory bench, the Kafka path's RSS and CPU) are in `load-tests/RESULTS.md`.
use std::ffi::{c_int, c_long};

/// mimalloc's option numbers: `mi_option_t` in the `mimalloc.h` (v3) that `libmimalloc-sys`
/// vendors, which exports no constants for these two. A test checks each names its option by
/// its default.
const PURGE_DELAY: c_int = 15;
const ALLOW_THP: c_int = 43;

/// The settings: (environment variable that overrides, option, value).
const SETTINGS: [(&str, c_int, c_long); 2] = [
    ("MIMALLOC_PURGE_DELAY", PURGE_DELAY, 10),
    ("MIMALLOC_ALLOW_THP", ALLOW_THP, 0),
];

/// Applies the settings. Call it first thing in `main`, before any other thread starts
/// (mimalloc's option setter is not thread-safe).
pub fn tune() {
    for (variable, option, value) in SETTINGS {
        if std::env::var_os(variable).is_some() {
            continue;
        }
        // SAFETY: a plain store into mimalloc's option table, for an option number the
        // vendored header defines (checked by the test below), made before other threads
        // exist, as the function's contract asks.
        unsafe { libmimalloc_sys::mi_option_set(option, value) };
        if option == ALLOW_THP {
            no_huge_pages();
        }
    }
}

/// What mimalloc does at start-up when `allow_thp` is 0, which it read before `tune` ran: the
/// option alone stops it asking for huge pages in memory it maps from now on, not in the
/// arena it mapped at start-up. The process flag covers every mapping, at its next fault.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE takes integer arguments only and changes a flag
    // of this process; an error (an old kernel) leaves huge pages allowed, which is harmless.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers name the options meant: each reads as its option's documented default
    /// (1,000 ms; THP allowed) in a process that has not tuned them. Skipped for one the
    /// environment sets.
    #[test]
    fn the_option_numbers_name_purge_delay_and_allow_thp() {
        for (variable, option, default) in [
            ("MIMALLOC_PURGE_DELAY", PURGE_DELAY, 1_000),
            ("MIMALLOC_ALLOW_THP", ALLOW_THP, 1),
        ] {
            if std::env::var_os(variable).is_some() {
                continue;
            }
            // SAFETY: a read of mimalloc's option table; test threads only read it.
            let got = unsafe { libmimalloc_sys::mi_option_get(option) };
            assert_eq!(got, default, "{variable}: option {option}");
        }
    }
}
