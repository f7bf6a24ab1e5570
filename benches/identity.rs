//! Routing with identities beyond the phone, links and duplicate suggestions, over 1,000,000
//! customers, against its anchor: protobuf decode alone (shared/design/PERFORMANCE.md). Report
//! each `route_*` / `decode_only` from one run.
//!
//! The shard first learns 1,000,000 customers, each from a WhatsApp message carrying a profile
//! name (38,400 distinct Spanish-style names: many alike, the hard case for suggestions), and
//! half of them linked to a web-chat visitor id. Then:
//! - `route_known_phone`: a WhatsApp message from a known customer with their (unchanged)
//!   profile name: the profile is refreshed, the name not compared again.
//! - `route_known_visitor`: a web-chat message from a linked visitor id: found through the
//!   alias index, routed to the customer's one conversation.
//! - `route_new_named`: a customer never seen, with a name: a new conversation, and the name
//!   compared within its blocks (the duplicate suggestion's whole cost).
#[path = "support/names.rs"]
mod names;

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use switchboard::clock::Timestamp;
use switchboard::config::Config;
use switchboard::core::tenant::IdentityRef;
use switchboard::core::{Command, Effect, Shard};
use switchboard::model::TenantId;
use switchboard::proto;

#[path = "support/allocator.rs"]
mod allocator;

const CUSTOMERS: usize = 1_000_000;
const POOL: usize = 100_000;

fn phone(i: usize) -> String {
    format!("+346{:08}", 10_000_000 + i)
}

fn config() -> Config {
    let mut c = Config::from_toml_str(switchboard::config::EMBEDDED_DEFAULT).unwrap();
    c.limits.dedup_max_ids = POOL / 2;
    c
}

fn whatsapp(i: usize, id: String) -> Bytes {
    let m = proto::InboundMessage {
        tenant: "demo".into(),
        customer: phone(i),
        channel: proto::Channel::Whatsapp as i32,
        provider_message_id: id,
        text: "hola buenas tardes, tengo una consulta sobre mi cuenta".into(),
        profile_name: names::name(i),
        ..Default::default()
    };
    Bytes::from(m.encode_to_vec())
}

fn web(visitor: usize, id: String) -> Bytes {
    let m = proto::InboundMessage {
        tenant: "demo".into(),
        channel: proto::Channel::Webchat as i32,
        provider_message_id: id,
        text: "hola, sigo con la consulta de antes".into(),
        visitor_id: format!("v-{visitor}"),
        ..Default::default()
    };
    Bytes::from(m.encode_to_vec())
}

fn decode(bytes: &Bytes) -> switchboard::core::Inbound {
    let m = proto::InboundMessage::decode(bytes.clone()).expect("encoded above");
    switchboard::wire::inbound_in(m).expect("valid")
}

struct Router {
    shard: Shard,
    now: u64,
    effects: Vec<Effect>,
}

impl Router {
    fn route(&mut self, bytes: &Bytes) {
        self.now += 1;
        let reply = self.shard.handle(
            Timestamp(self.now),
            Command::Ingest(decode(bytes)),
            &mut self.effects,
        );
        black_box(reply.expect("valid messages route"));
        self.effects.clear();
    }

    /// A million named customers, every other one linked to a visitor id.
    fn million() -> Self {
        let mut r = Router {
            shard: Shard::new(&config(), |_| true),
            now: 1_700_000_000_000,
            effects: Vec::with_capacity(8),
        };
        let started = std::time::Instant::now();
        for i in 0..CUSTOMERS {
            r.route(&whatsapp(i, format!("setup-{i}")));
        }
        let named = started.elapsed();
        for i in (0..CUSTOMERS).step_by(2) {
            r.now += 1;
            r.shard
                .handle(
                    Timestamp(r.now),
                    Command::Link {
                        tenant: TenantId::new("demo"),
                        a: IdentityRef::Phone(phone(i)),
                        b: IdentityRef::Visitor(format!("v-{i}")),
                        source: "bench".into(),
                        actor: "bench".into(),
                        reason: String::new(),
                    },
                    &mut r.effects,
                )
                .expect("links");
            r.effects.clear();
        }
        let Ok(switchboard::core::Reply::Duplicates(found)) = r.shard.handle(
            Timestamp(r.now),
            Command::SuggestDuplicates {
                tenant: TenantId::new("demo"),
                identity: None,
                limit: usize::MAX,
            },
            &mut r.effects,
        ) else {
            panic!("suggestions");
        };
        eprintln!(
            "setup: {CUSTOMERS} named customers in {named:.1?} ({:.1} µs each, duplicate lookup included), {} links in {:.1?}; {} suggestions kept",
            named.as_secs_f64() * 1e6 / CUSTOMERS as f64,
            CUSTOMERS / 2,
            started.elapsed() - named,
            found.len()
        );
        r
    }
}

fn identities(c: &mut Criterion) {
    let known: Vec<Bytes> = (0..POOL)
        .map(|i| whatsapp((i * 7_919) % CUSTOMERS, format!("known-{i}")))
        .collect();
    let visitors: Vec<Bytes> = (0..POOL)
        .map(|i| web(((i * 7_919) % CUSTOMERS) & !1, format!("web-{i}")))
        .collect();
    let mut g = c.benchmark_group("identity");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("decode_only", |b| {
        b.iter(|| {
            i = (i + 1) % POOL;
            black_box(decode(&known[i]))
        })
    });
    let mut r = Router::million();
    let mut i = 0;
    g.bench_function("route_known_phone", |b| {
        b.iter(|| {
            i = (i + 1) % POOL;
            r.route(&known[i]);
        })
    });
    let mut i = 0;
    g.bench_function("route_known_visitor", |b| {
        b.iter(|| {
            i = (i + 1) % POOL;
            r.route(&visitors[i]);
        })
    });
    // New customers, encoded on the fly (the encode is a small part of the measured time).
    let mut n = CUSTOMERS;
    g.bench_function("route_new_named", |b| {
        b.iter(|| {
            n += 1;
            r.route(&whatsapp(n, format!("new-{n}")));
        })
    });
    g.finish();
}

criterion_group!(benches, identities);
criterion_main!(benches);
