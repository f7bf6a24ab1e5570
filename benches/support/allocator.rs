//! The service's global allocator (mimalloc, as `src/main.rs` declares it), for the benches
//! that measure switchboard's code: its figures are then the shipped binary's. A bench with a
//! `main` of its own also calls `switchboard::allocator::tune()` for the options the service
//! sets at start; criterion writes the others' `main`, so they run on mimalloc's defaults.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
