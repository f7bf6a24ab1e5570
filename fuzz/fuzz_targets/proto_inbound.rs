//! An `InboundMessage` as the gRPC API and the inbound topic receive it: protobuf decode, the
//! API's validation, then the core (identity, de-duplication, classification, routing).
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

#[path = "shared.rs"]
mod shared;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = switchboard::proto::InboundMessage::decode(data) else {
        return;
    };
    if let Ok(inbound) = switchboard::wire::inbound_in(message) {
        shared::handle(switchboard::core::Command::Ingest(inbound));
    }
});
