//! Memory per tracked customer (shared/design/PERFORMANCE.md): RSS growth while 1,000,000
//! distinct customers are tracked, divided by 1,000,000; then whether it is given back after
//! expiry. Anchor: the RSS before, in the same process.
//!
//! - outbound: a business-initiated send to each customer, so each is in the rolling 24-hour
//!   count and has a pair bucket (send records are bounded to 1 here, to measure the customer
//!   state alone);
//! - inbound: a WhatsApp message from each customer, answered by the bot (no agent online):
//!   a conversation with its window, one message of context, and the message id remembered
//!   for de-duplication.
//!
//! - lifecycle: an opt-in on record for each customer (set through the API), then a marketing
//!   send to each, counted in the per-customer frequency cap; after 24 hours the counts are
//!   swept and the consents kept.
//!
//! Run: `cargo bench --bench memory`. Linux only (reads /proc/self/statm). Each case runs in
//! its own process (see `main`).
#[path = "support/names.rs"]
mod names;

use switchboard::clock::Timestamp;
use switchboard::config::{Category, Config};
use switchboard::core::identity::normalize;
use switchboard::core::quota::{ConsentState, ConsentView, Quotas, SendRequest};
use switchboard::core::{Command, Inbound, Shard};
use switchboard::model::{Channel, TenantId};

/// The service's allocator (see Cargo.toml), counting the bytes asked of it: RSS is what a
/// replica would hold, and moves by ±10% between runs with the allocator's timing; the live
/// heap (bytes allocated and not freed) is exact, the same every run.
#[global_allocator]
static ALLOCATOR: Counting = Counting;

struct Counting;

static LIVE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

// SAFETY: every call is passed to mimalloc unchanged; only the sizes are counted.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as u64, std::sync::atomic::Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size() as u64, std::sync::atomic::Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as u64, std::sync::atomic::Ordering::Relaxed);
        LIVE.fetch_sub(layout.size() as u64, std::sync::atomic::Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new) }
    }
}

/// Bytes allocated and not yet freed.
fn heap() -> u64 {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

/// ", heap +X MB, Y bytes per customer" since `before`.
fn heap_since(before: u64) -> String {
    let grown = heap().saturating_sub(before) as f64;
    format!(
        "; live heap +{:.1} MB, {:.0} bytes per customer",
        grown / 1e6,
        grown / N as f64
    )
}

const N: u64 = 1_000_000;
const DAY: u64 = 24 * 3_600_000;

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn config() -> Config {
    Config::from_toml_str(
        r#"
        [limits]
        dedup_max_ids = 2000000
        [[tenants]]
        id = "m"
        default_region = "ES"
        bot = "bot"
        default_queue = "q"
        [[tenants.queues]]
        name = "q"
        sla_target_secs = 60
        max_wait_secs = 600
        [[tenants.numbers]]
        id = "N"
        mps = 10000
        [tenants.quotas]
        messaging_limit = 100000000
        max_tracked_sends = 1
        "#,
    )
    .expect("valid")
}

/// A business-initiated send of `category` to `to`, its effects dropped.
fn send(
    q: &mut Quotas,
    now: Timestamp,
    to: switchboard::model::CustomerNumber,
    category: Category,
    effects: &mut Vec<switchboard::core::Effect>,
) {
    q.send(
        now,
        SendRequest {
            from: "N".into(),
            to,
            category,
            content: "t".into(),
            template: None,
            priority: None,
            idempotency_key: format!("k{}", now.as_millis()),
            valid_for_ms: None,
            window_open: false,
            tag: None,
            send_at: None,
        },
        effects,
    )
    .expect("valid");
    effects.clear();
}

fn outbound() {
    let c = config();
    let t = &c.tenants[0];
    let mut q = Quotas::new(TenantId::new("m"), &t.numbers, &t.quotas, DAY, 1_000);
    let mut effects = Vec::new();
    let mut now = 1_700_000_000_000u64;
    let mut admit = |q: &mut Quotas, offset: u64, now: &mut u64| {
        for i in 0..N {
            *now += 1;
            let to = normalize(
                &format!("+34{:09}", 600_000_000 + offset + i),
                phonenumber::country::Id::ES,
            )
            .expect("valid");
            send(q, Timestamp(*now), to, Category::Utility, &mut effects);
        }
    };
    let (before, heap_before) = (rss(), heap());
    admit(&mut q, 0, &mut now);
    let peak = rss();
    assert_eq!(q.usage().0, N);
    println!(
        "outbound: {} customers tracked ({} pair buckets): RSS +{:.1} MB, {:.0} bytes per customer{}",
        q.usage().0,
        q.tracked_pairs(),
        (peak - before) as f64 / 1e6,
        (peak - before) as f64 / N as f64,
        heap_since(heap_before)
    );
    now += DAY + 1;
    q.sweep(Timestamp(now));
    let after = rss();
    println!(
        "outbound after expiry and sweep: {} counted, {} pair buckets; RSS {:+.1} MB from the peak ({:.0}% of the growth given back to the OS)",
        q.usage().0,
        q.tracked_pairs(),
        (after as f64 - peak as f64) / 1e6,
        100.0 * (peak - after.min(peak)) as f64 / (peak - before) as f64
    );
    admit(&mut q, N, &mut now);
    let again = rss();
    println!(
        "outbound, a second {N} customers after that: RSS {:+.1} MB over the first peak (memory reused)",
        (again as f64 - peak as f64) / 1e6
    );
}

fn lifecycle() {
    let c = config();
    let t = &c.tenants[0];
    let mut q = Quotas::new(TenantId::new("m"), &t.numbers, &t.quotas, DAY, 1_000);
    let mut effects = Vec::new();
    let mut now = 1_700_000_000_000u64;
    let customer = |i: u64| {
        normalize(
            &format!("+34{:09}", 700_000_000 + i),
            phonenumber::country::Id::ES,
        )
        .expect("valid")
    };
    let (source, actor): (std::sync::Arc<str>, std::sync::Arc<str>) =
        ("crm".into(), "bench".into());
    let (before, heap_before) = (rss(), heap());
    for i in 0..N {
        now += 1;
        let view = ConsentView {
            state: ConsentState::OptedIn,
            source: source.clone(),
            actor: actor.clone(),
            at: Timestamp(now),
        };
        q.set_consent(&customer(i), view, "", &mut effects);
        effects.clear();
    }
    let consented = rss();
    println!(
        "lifecycle: {} consents on record: RSS +{:.1} MB, {:.0} bytes per customer{}",
        q.consents(),
        (consented - before) as f64 / 1e6,
        (consented - before) as f64 / N as f64,
        heap_since(heap_before)
    );
    for i in 0..N {
        now += 1;
        send(
            &mut q,
            Timestamp(now),
            customer(i),
            Category::Marketing,
            &mut effects,
        );
    }
    let peak = rss();
    assert_eq!(
        q.capped_customers() as u64,
        N,
        "every customer counted in the cap"
    );
    println!(
        "lifecycle: then a marketing send to each ({} counted in the frequency cap, {} in the messaging limit): RSS +{:.1} MB, {:.0} bytes per customer with consent, cap count, limit count and pair bucket{}",
        q.capped_customers(),
        q.usage().0,
        (peak - before) as f64 / 1e6,
        (peak - before) as f64 / N as f64,
        heap_since(heap_before)
    );
    now += DAY + 1;
    q.sweep(Timestamp(now));
    let after = rss();
    println!(
        "lifecycle after 24 hours and a sweep: {} capped, {} consents kept; RSS {:+.1} MB from the peak",
        q.capped_customers(),
        q.consents(),
        (after as f64 - peak as f64) / 1e6,
    );
}

fn inbound(profiles: bool) {
    let label = if profiles {
        "inbound with a profile name and a web-chat visitor id"
    } else {
        "inbound"
    };
    let mut shard = Shard::new(&config(), |_| true);
    let mut effects = Vec::new();
    let mut now = 1_700_000_000_000u64;
    let (before, heap_before) = (rss(), heap());
    for i in 0..N {
        now += 1;
        shard
            .handle(
                Timestamp(now),
                Command::Ingest(Inbound {
                    tenant: TenantId::new("m"),
                    customer: format!("+34{:09}", 600_000_000 + i),
                    channel: Channel::WhatsApp,
                    provider_message_id: format!("wamid.HBgLMzQ2MTIzNDU2NzgVAgASGBQz{i:010}"),
                    text: "hola, una pregunta".into(),
                    business_number: None,
                    email: None,
                    visitor_id: profiles.then(|| format!("v-{i}")),
                    profile_name: profiles.then(|| names::name(i as usize)),
                }),
                &mut effects,
            )
            .expect("valid");
        effects.clear();
    }
    let peak = rss();
    let t = shard.tenant("m").unwrap();
    println!(
        "{label}: {} conversations with windows, {} ids remembered: RSS +{:.1} MB, {:.0} bytes per customer{}",
        t.conversation_count(),
        t.remembered_message_ids(),
        (peak - before) as f64 / 1e6,
        (peak - before) as f64 / N as f64,
        heap_since(heap_before)
    );
    // Past retention (72 h) and the dedup ttl (7 days): everything goes.
    now += 8 * DAY;
    shard
        .handle(Timestamp(now), Command::Tick, &mut effects)
        .expect("tick");
    let after = rss();
    let t = shard.tenant("m").unwrap();
    println!(
        "{label} after retention and sweep: {} conversations, {} ids; RSS {:+.1} MB from the peak ({:.0}% of the growth given back to the OS)",
        t.conversation_count(),
        t.remembered_message_ids(),
        (after as f64 - peak as f64) / 1e6,
        100.0 * (peak - after.min(peak)) as f64 / (peak - before) as f64
    );
}

/// Each case runs in a process of its own (this binary again, the case named in
/// `MEMORY_BENCH_CASE`), so what one case freed and the allocator kept is not there for the
/// next to reuse: every figure is from a fresh heap.
fn main() {
    // The allocator as the service sets it (each case's process runs this too).
    switchboard::allocator::tune();
    // `cargo bench` passes --bench; this binary takes no options.
    const CASES: [&str; 4] = ["outbound", "lifecycle", "inbound", "inbound-profiles"];
    match std::env::var("MEMORY_BENCH_CASE").as_deref() {
        Ok("outbound") => outbound(),
        Ok("lifecycle") => lifecycle(),
        Ok("inbound") => inbound(false),
        Ok("inbound-profiles") => inbound(true),
        Ok(other) => panic!("MEMORY_BENCH_CASE={other:?}: not one of {CASES:?}"),
        Err(_) => {
            let me = std::env::current_exe().expect("this binary");
            for case in CASES {
                let status = std::process::Command::new(&me)
                    .env("MEMORY_BENCH_CASE", case)
                    .status()
                    .expect("run a case");
                assert!(status.success(), "case {case}: {status}");
            }
        }
    }
}
