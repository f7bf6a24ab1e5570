//! A `SendRequest` as the gRPC API and the sends topic receive it: protobuf decode, the API's
//! validation, then the quotas' admission.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

#[path = "shared.rs"]
mod shared;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = switchboard::proto::SendRequest::decode(data) else {
        return;
    };
    if let Ok(send) = switchboard::wire::send_in(request) {
        shared::handle(switchboard::core::Command::Send(send));
    }
});
