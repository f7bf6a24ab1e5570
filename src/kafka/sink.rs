//! The Kafka sink: in Kafka mode the shards' sends and status changes leave through topics.
//! A dispatch goes to `kafka.dispatch_topic` for the egress that calls the Cloud API, and the
//! send stays `dispatched` until a status webhook reports what the provider did; every status
//! change goes to `kafka.status_topic`. Both are produced through the outbox from the shard
//! task, before the reply to the command that caused them, so the input that caused them
//! stores its offset only once they are acknowledged.
use std::sync::Arc;

use prost::Message as _;
use rdkafka::message::{Header, OwnedHeaders};

use super::outbox::Outbox;
use crate::core::quota::{Dispatch, ProviderOutcome};
use crate::model::TenantId;
use crate::sender::{SendFuture, SendStatusEvent, Sender};
use crate::wire::webhook::callback_data;

/// Admitted gRPC sends, written to the sends topic keyed by tenant (see `sender::Journal`).
pub struct SendsJournal {
    pub outbox: Arc<Outbox>,
    pub topic: String,
    pub timeout: std::time::Duration,
}

impl crate::sender::Journal for SendsJournal {
    fn append<'a>(
        &'a self,
        record: crate::sender::Journaled<'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        use crate::sender::Journaled;
        Box::pin(async move {
            let kind = |kind: &str| {
                Some(OwnedHeaders::new().insert(Header {
                    key: super::KIND_HEADER,
                    value: Some(kind),
                }))
            };
            let (tenant, payload, headers) = match record {
                Journaled::Send(r) => (&r.tenant, r.encode_to_vec(), None),
                Journaled::Cancel(r) => (&r.tenant, r.encode_to_vec(), kind(super::KIND_CANCEL)),
                Journaled::Consent(r) => (&r.tenant, r.encode_to_vec(), kind(super::KIND_CONSENT)),
                Journaled::Link(r) => (&r.tenant, r.encode_to_vec(), kind(super::KIND_LINK)),
                Journaled::Profile(r) => (&r.tenant, r.encode_to_vec(), kind(super::KIND_PROFILE)),
                Journaled::Pause(r) => (&r.tenant, r.encode_to_vec(), kind(super::KIND_PAUSE)),
                Journaled::Resume(r) => (&r.tenant, r.encode_to_vec(), kind(super::KIND_RESUME)),
            };
            let seq = self
                .outbox
                .produce(&self.topic, Some(tenant.as_bytes()), &payload, headers);
            self.outbox.settled(seq, self.timeout).await
        })
    }
}

pub struct KafkaSink {
    pub outbox: Arc<Outbox>,
    pub dispatch_topic: String,
    pub status_topic: String,
}

impl Sender for KafkaSink {
    fn send(&self, tenant: &TenantId, m: Dispatch) -> SendFuture {
        let record = crate::wire::dispatch_out(tenant, &m, callback_data(tenant, m.id));
        let key = Some(tenant.as_str().as_bytes());
        self.outbox
            .produce(&self.dispatch_topic, key, &record.encode_to_vec(), None);
        Box::pin(std::future::ready(ProviderOutcome::Handed))
    }

    fn status_changed(&self, event: &SendStatusEvent) {
        let record = crate::wire::status_event_out(event.clone());
        let key = Some(event.tenant.as_str().as_bytes());
        self.outbox
            .produce(&self.status_topic, key, &record.encode_to_vec(), None);
    }
}
