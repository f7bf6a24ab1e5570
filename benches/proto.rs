//! Protobuf encode and decode of the API messages on the hot paths (`InboundMessage`,
//! `RoutingDecision`, `SendRequest`, `SendResponse`), each against its anchor in the same
//! run: copying the same number of bytes (`copy_*`). Report `encode_*/copy_*` and
//! `decode_*/copy_*` from one run.
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use switchboard::proto;

#[path = "support/allocator.rs"]
mod allocator;

fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let inbound = proto::InboundMessage {
        tenant: "demo".into(),
        customer: "+34612345678".into(),
        channel: proto::Channel::Whatsapp as i32,
        provider_message_id: "wamid.HBgLMzQ2MTIzNDU2NzgVAgASGBQzQTdGMzQ5QjZFNkI0NUE5RjI1NwA="
            .into(),
        text: "Hola, ¿cuál es el horario de la tienda de Gran Vía este sábado?".into(),
        business_number: String::new(),
        ..Default::default()
    };
    let decision = proto::RoutingDecision {
        conversation_id: "c-48213".into(),
        target: proto::Target::Queue as i32,
        reason: proto::Reason::SlaOk as i32,
        detail: "estimated wait 40 s within the 60 s SLA of support".into(),
        intent: "store_hours".into(),
        queue: "support".into(),
        queue_position: 3,
        estimated_wait_ms: 40_000,
        window_open: true,
        window_expires_at_ms: 1_763_740_800_000,
        provider_message_id: inbound.provider_message_id.clone(),
        ..Default::default()
    };
    let send = proto::SendRequest {
        tenant: "demo".into(),
        from: "106540352242922".into(),
        to: "+34612345678".into(),
        category: proto::Category::Utility as i32,
        content: "order_shipped:48213".into(),
        template: None,
        priority: 0,
        idempotency_key: "order-48213-shipped".into(),
        valid_for_ms: 0,
        ..Default::default()
    };
    let response = proto::SendResponse {
        send_id: "s-1048576".into(),
        admission: proto::Admission::Queued as i32,
        estimated_release_at_ms: 1_763_740_860_000,
        ..Default::default()
    };
    vec![
        ("inbound", inbound.encode_to_vec()),
        ("decision", decision.encode_to_vec()),
        ("send_request", send.encode_to_vec()),
        ("send_response", response.encode_to_vec()),
    ]
}

fn bench(c: &mut Criterion) {
    for (name, bytes) in messages() {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function("copy", |b| {
            b.iter(|| black_box(black_box(&bytes[..]).to_vec()))
        });
        macro_rules! codec {
            ($t:ty) => {{
                let message = <$t>::decode(&bytes[..]).expect("decodes");
                group.bench_function("decode", |b| {
                    b.iter(|| <$t>::decode(black_box(&bytes[..])).expect("decodes"))
                });
                group.bench_function("encode", |b| b.iter(|| black_box(&message).encode_to_vec()));
            }};
        }
        match name {
            "inbound" => codec!(proto::InboundMessage),
            "decision" => codec!(proto::RoutingDecision),
            "send_request" => codec!(proto::SendRequest),
            _ => codec!(proto::SendResponse),
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
