//! Sending and waiting for a send's state through `Outbound`, for the edges' tests. Every wait
//! is bounded (60 s), never asserted on.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use switchboard::proto::{self, outbound_client::OutboundClient};
use tonic::transport::Channel;

const BOUND: Duration = Duration::from_secs(60);

/// Sends `request`, retrying while the tenant's partition is not served yet (start-up).
pub async fn send(
    outbound: &mut OutboundClient<Channel>,
    request: proto::SendRequest,
) -> proto::SendResponse {
    let deadline = Instant::now() + BOUND;
    loop {
        match outbound.send(request.clone()).await {
            Ok(r) => return r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(s) => panic!("send refused: {s:?}"),
        }
    }
}

/// Polls the send's status until `done` holds, or the bound passes; the last status.
pub async fn status_until(
    outbound: &mut OutboundClient<Channel>,
    tenant: &str,
    send_id: &str,
    done: impl Fn(&proto::SendStatus) -> bool,
) -> proto::SendStatus {
    let deadline = Instant::now() + BOUND;
    loop {
        let s = outbound
            .get_status(proto::SendRef {
                tenant: tenant.into(),
                send_id: send_id.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
