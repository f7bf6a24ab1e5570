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

use crate::core::quota::{Dispatch, ProviderOutcome};
use crate::model::TenantId;
use crate::runtime::SendStatusEvent;

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
