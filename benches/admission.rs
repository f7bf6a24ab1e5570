//! Outbound admission cost against its anchor, governor's raw keyed `check_key` over the same
//! customer keys (shared/design/PERFORMANCE.md), for 10,000 and 1,000,000 customers.
//!
//! `admission_*` runs `Quotas::send` for a business-initiated utility template: the number's
//! bucket, the pair bucket, the rolling 24-hour count, the batch decision, the send record and
//! its idempotency key, and the dispatch and status effects. Time advances 1 ms per send;
//! customers come round in turn, so every pair has long refilled when it comes back. The
//! anchor does one keyed `check_key` per send on the same keys with the same clock and hasher.
//!
//! After criterion, a sample of single calls gives p50 and p99 for both (each timed with
//! `Instant`, whose own cost, about 20-30 ns, is included in both).
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use governor::clock::FakeRelativeClock;
use governor::{Quota, RateLimiter};
use switchboard::clock::Timestamp;
use switchboard::config::{Category, Config};
use switchboard::core::identity::normalize;
use switchboard::core::quota::{Quotas, SendRequest};
use switchboard::model::{CustomerNumber, TenantId};

#[path = "support/allocator.rs"]
mod allocator;

const SIZES: [usize; 2] = [10_000, 1_000_000];

fn customers(n: usize) -> Vec<CustomerNumber> {
    (0..n)
        .map(|i| normalize(&format!("+346{i:08}"), phonenumber::country::Id::ES).expect("valid"))
        .collect()
}

fn quotas() -> Quotas {
    let config = Config::from_toml_str(
        r#"
        [[tenants]]
        id = "bench"
        default_region = "ES"
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
        max_tracked_sends = 100000
        "#,
    )
    .expect("valid");
    let t = &config.tenants[0];
    Quotas::new(
        TenantId::new("bench"),
        &t.numbers,
        &t.quotas,
        24 * 3_600_000,
        1_000,
    )
}

struct Admitter {
    quotas: Quotas,
    customers: Vec<CustomerNumber>,
    now: u64,
    i: usize,
    effects: Vec<switchboard::core::Effect>,
    key: String,
}

impl Admitter {
    fn new(n: usize) -> Self {
        let mut a = Self {
            quotas: quotas(),
            customers: customers(n),
            now: 1_700_000_000_000,
            i: 0,
            effects: Vec::with_capacity(4),
            key: String::with_capacity(24),
        };
        // Every customer once: the measured loop runs on warm state.
        for _ in 0..n {
            a.admit();
        }
        a
    }

    fn admit(&mut self) {
        use std::fmt::Write;
        self.now += 1;
        self.i = (self.i + 1) % self.customers.len();
        self.key.clear();
        let _ = write!(self.key, "k{}", self.now);
        let request = SendRequest {
            from: "N".into(),
            to: self.customers[self.i].clone(),
            category: Category::Utility,
            content: "order_update".into(),
            template: None,
            priority: None,
            idempotency_key: self.key.clone(),
            valid_for_ms: None,
            window_open: false,
            tag: None,
            send_at: None,
        };
        let answer = self
            .quotas
            .send(Timestamp(self.now), request, &mut self.effects)
            .expect("valid request");
        black_box(answer);
        self.effects.clear();
    }
}

type Raw = RateLimiter<
    CustomerNumber,
    governor::state::keyed::HashMapStateStore<CustomerNumber, foldhash::fast::RandomState>,
    FakeRelativeClock,
    governor::middleware::NoOpMiddleware<governor::nanos::Nanos>,
>;

struct Anchor {
    limiter: Raw,
    clock: FakeRelativeClock,
    customers: Vec<CustomerNumber>,
    i: usize,
}

impl Anchor {
    fn new(n: usize) -> Self {
        let clock = FakeRelativeClock::default();
        let quota = Quota::with_period(Duration::from_secs(6))
            .expect("positive")
            .allow_burst(NonZeroU32::new(2).expect("non-zero"));
        let mut a = Self {
            limiter: RateLimiter::hashmap_with_clock_and_hasher(
                quota,
                clock.clone(),
                foldhash::fast::RandomState::default(),
            ),
            clock,
            customers: customers(n),
            i: 0,
        };
        for _ in 0..n {
            a.check();
        }
        a
    }

    fn check(&mut self) {
        self.clock.advance(Duration::from_millis(1));
        self.i = (self.i + 1) % self.customers.len();
        let _ = black_box(self.limiter.check_key(&self.customers[self.i]));
    }
}

fn percentiles(mut f: impl FnMut(), samples: usize) -> (u128, u128) {
    let mut ns: Vec<u128> = (0..samples)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos()
        })
        .collect();
    ns.sort_unstable();
    (ns[samples / 2], ns[samples * 99 / 100])
}

fn bench(c: &mut Criterion) {
    for n in SIZES {
        let mut group = c.benchmark_group("admission");
        group.throughput(Throughput::Elements(1));
        let mut anchor = Anchor::new(n);
        group.bench_function(BenchmarkId::new("raw_check_key", n), |b| {
            b.iter(|| anchor.check())
        });
        let mut admitter = Admitter::new(n);
        group.bench_function(BenchmarkId::new("full_admission", n), |b| {
            b.iter(|| admitter.admit())
        });
        group.finish();
        let (a50, a99) = percentiles(|| anchor.check(), 200_000);
        let (f50, f99) = percentiles(|| admitter.admit(), 200_000);
        println!(
            "latency n={n}: raw_check_key p50 {a50} ns p99 {a99} ns; full_admission p50 {f50} ns p99 {f99} ns"
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
