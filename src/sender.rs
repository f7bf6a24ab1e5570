//! Senders carry dispatched messages to the provider and report what it answered. The shard
//! never waits for them: the runtime runs each send as its own task and feeds the outcome
//! back into the shard as a `ProviderResult` command, where the quota reactions happen
//! (back-offs, paused marketing, closed windows).
//!
//! The embedded default, [`LogSender`], logs each message (the customer number masked) and
//! acknowledges it: `cargo run` works with no provider. [`ScriptedSender`] answers from a
//! script, so tests can make the provider return each error code.
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use std::sync::Arc;

use crate::core::quota::{Dispatch, ProviderOutcome, Refusal, SendId, SendState};
use crate::model::TenantId;

/// A status change of one of the tenant's sends: what a sender publishes (the Kafka status
/// topic) and the live gRPC streams carry.
#[derive(Debug, Clone)]
pub struct SendStatusEvent {
    pub tenant: TenantId,
    pub id: SendId,
    pub state: SendState,
    pub reason: Option<Refusal>,
    pub provider_code: Option<u32>,
    pub idempotency_key: Arc<str>,
}

/// Where an admitted send request is written so that it survives a crash (Kafka mode: the
/// sends topic, which the owner replays after the last snapshot; its idempotency key makes
/// the replay a no-op when the send is already in the state). The gRPC API appends each
/// send it admits, each cancel and each consent it sets, before it answers.
pub trait Journal: Send + Sync {
    fn append<'a>(
        &'a self,
        record: Journaled<'a>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// What the journal keeps: admitted sends, and cancels (replayed after them, so a crash right
/// after a cancel's answer cannot bring the send back).
#[derive(Clone, Copy)]
pub enum Journaled<'a> {
    Send(&'a crate::proto::SendRequest),
    Cancel(&'a crate::proto::CancelRequest),
    /// With its time filled in, so a replay sets the same consent.
    Consent(&'a crate::proto::SetConsentRequest),
    Link(&'a crate::proto::LinkRequest),
    /// With its time filled in, like a consent.
    Profile(&'a crate::proto::UpdateProfileRequest),
    /// With its start filled in, so a replay ends it at the same time.
    Pause(&'a crate::proto::PauseRequest),
    Resume(&'a crate::proto::ResumeRequest),
}

pub type SendFuture = Pin<Box<dyn Future<Output = ProviderOutcome> + Send>>;

/// Where dispatched sends go. Both methods are called in the shard task, in effect order and
/// before the reply to the command that caused them, so they must not block: start the work
/// and return (the Kafka sink enqueues a record; its input waits for the broker's ack).
pub trait Sender: Send + Sync + 'static {
    fn send(&self, tenant: &TenantId, message: Dispatch) -> SendFuture;

    /// A send changed state. A sink that publishes status changes (the Kafka status topic)
    /// overrides this; the live gRPC streams get them either way.
    fn status_changed(&self, _event: &SendStatusEvent) {}
}

/// Logs and acknowledges every message.
#[derive(Debug, Default)]
pub struct LogSender;

impl Sender for LogSender {
    fn send(&self, _tenant: &TenantId, m: Dispatch) -> SendFuture {
        tracing::info!(
            id = %m.id,
            from = %m.from,
            to = %m.to,
            category = ?m.category,
            "send (embedded sender: logged, not delivered)"
        );
        Box::pin(std::future::ready(ProviderOutcome::Sent))
    }
}

/// Answers each send with the next scripted outcome, then `Sent` once the script is used up;
/// remembers what it was given.
#[derive(Debug, Default)]
pub struct ScriptedSender {
    script: Mutex<VecDeque<ProviderOutcome>>,
    sent: Mutex<Vec<Dispatch>>,
}

impl ScriptedSender {
    pub fn new(script: impl IntoIterator<Item = ProviderOutcome>) -> Self {
        Self {
            script: Mutex::new(script.into_iter().collect()),
            sent: Mutex::default(),
        }
    }

    /// Every message given to the sender so far.
    pub fn sent(&self) -> Vec<Dispatch> {
        self.sent
            .lock()
            .expect("no panic while holding the lock")
            .clone()
    }
}

impl Sender for ScriptedSender {
    fn send(&self, _tenant: &TenantId, m: Dispatch) -> SendFuture {
        self.sent
            .lock()
            .expect("no panic while holding the lock")
            .push(m);
        let outcome = self
            .script
            .lock()
            .expect("no panic while holding the lock")
            .pop_front()
            .unwrap_or(ProviderOutcome::Sent);
        Box::pin(std::future::ready(outcome))
    }
}
