//! The thin runtime around the core: one tokio task per [`Shard`], fed through a bounded
//! channel (the in-process bus), ticking it, and carrying its effects to the agents' and bots'
//! live streams.
//!
//! Each shard task owns its shard *and* its stream subscriptions, so a new subscriber gets the
//! agent's live assignments and then every later event, in order, with no gap and no
//! duplicate. A subscriber that falls `subscriber_buffer` events behind is disconnected with
//! an error instead of making the shard wait: one slow desktop never slows routing.
//!
//! The runtime never decides anything: it reads the time, calls `Shard::handle`, and delivers.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Stopwatch, Timestamp};
use crate::config::Config;
use crate::core::quota::{Dispatch, ProviderOutcome};
use crate::core::{
    Command, ContextMessage, ConversationView, CoreError, Effect, Reason, Reply, Shard,
};
use crate::model::{AgentId, ConversationId, QueueName, TenantId};
use crate::sender::Sender;
use crate::telemetry;

/// What an agent's stream carries.
#[derive(Debug, Clone)]
pub enum AgentEvent {
    Assigned {
        conversation: Box<ConversationView>,
        queue: QueueName,
        reason: Reason,
        waited_ms: u64,
    },
    Message {
        conversation: ConversationId,
        message: ContextMessage,
    },
    Unassigned {
        conversation: ConversationId,
        reason: Reason,
    },
}

/// What a bot's stream carries.
#[derive(Debug, Clone)]
pub struct BotEvent {
    pub conversation: ConversationId,
    pub message: ContextMessage,
    pub reason: Reason,
    pub intent: Option<Arc<str>>,
    pub context: Vec<ContextMessage>,
}

pub use crate::sender::SendStatusEvent;

mod reload;
mod shard;
pub use reload::{ReloadError, Reloader};
use shard::ShardTask;

/// The last item of a stream whose subscriber fell behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged;

pub type AgentStream = mpsc::Receiver<Result<AgentEvent, Lagged>>;
pub type BotStream = mpsc::Receiver<Result<BotEvent, Lagged>>;
pub type StatusStream = mpsc::Receiver<Result<SendStatusEvent, Lagged>>;

/// Why a call did not reach a shard's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("the service is shutting down")]
    Unavailable,
    /// In Kafka mode: the tenant's partition is not served by this replica (now).
    #[error("tenant {tenant:?} (partition {partition}) is not served by this replica: {why}")]
    Elsewhere {
        tenant: String,
        partition: i32,
        why: String,
    },
}

/// Decides whether a call for a tenant is served by this replica (see `kafka::ownership`).
pub trait Serves: Send + Sync {
    fn check(&self, tenant: &TenantId) -> Result<(), CallError>;
}

/// Where each tenant is served (Kafka mode: the consumer group's assignment, see
/// `kafka::ownership`): what forwarding a call to the tenant's owner needs to know.
pub trait Placement: Serves {
    /// The partition a tenant lives on.
    fn partition_of(&self, tenant: &str) -> i32;
    /// The partition's tenants are served here (their state restored).
    fn is_owned(&self, partition: i32) -> bool;
    /// The advertised address of the partition's owner, if known and not this replica.
    fn owner_of(&self, partition: i32) -> Option<String>;
}

enum Request {
    Command {
        command: Command,
        reply: oneshot::Sender<Result<Reply, CoreError>>,
    },
    /// Several commands, run in order, answered together (one hand-off for all).
    Batch {
        commands: Vec<Command>,
        reply: oneshot::Sender<Vec<Result<Reply, CoreError>>>,
    },
    SubscribeAgent {
        tenant: TenantId,
        agent: AgentId,
        tx: mpsc::Sender<Result<AgentEvent, Lagged>>,
        reply: oneshot::Sender<Result<(), CoreError>>,
    },
    SubscribeBot {
        tenant: TenantId,
        bot: String,
        tx: mpsc::Sender<Result<BotEvent, Lagged>>,
        reply: oneshot::Sender<Result<(), CoreError>>,
    },
    SubscribeStatus {
        tenant: TenantId,
        tx: mpsc::Sender<Result<SendStatusEvent, Lagged>>,
        reply: oneshot::Sender<Result<(), CoreError>>,
    },
}

/// The answer to a command handed over with [`Runtime::submit`].
pub struct Answer(oneshot::Receiver<Result<Reply, CoreError>>);

impl Answer {
    pub async fn get(self) -> Result<Reply, CallError> {
        Ok(self.0.await.map_err(|_| CallError::Unavailable)??)
    }
}

/// A handle to the shards: cheap to clone, one per gRPC service. The shard tasks stop when the
/// last handle is dropped.
#[derive(Clone)]
pub struct Runtime {
    shards: Arc<[mpsc::Sender<Request>]>,
    /// Which shard owns each tenant.
    owner: Arc<HashMap<TenantId, usize>>,
    subscriber_buffer: usize,
    /// Checked before each call (gRPC in Kafka mode); None: every tenant is served.
    gate: Option<Arc<dyn Serves>>,
}

impl Runtime {
    /// Starts one task per shard. Tenants are spread over shards in config order.
    /// `close_streams` ends every live stream when cancelled (first step of shutdown); `stop`
    /// ends the shard tasks (last step; they also end when every handle is dropped).
    pub fn start(
        config: &Config,
        clock: Arc<dyn Clock>,
        sender: Arc<dyn Sender>,
        close_streams: CancellationToken,
        stop: CancellationToken,
    ) -> (Runtime, Vec<JoinHandle<()>>) {
        let n = config.runtime.shards.min(config.tenants.len()).max(1);
        let owner: HashMap<TenantId, usize> = config
            .tenants
            .iter()
            .enumerate()
            .map(|(i, t)| (TenantId::new(&t.id), i % n))
            .collect();
        let tick = Duration::from_millis(config.runtime.tick_interval_ms);
        let mut senders = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for index in 0..n {
            let shard = Shard::new(config, |id| owner.get(id) == Some(&index));
            let (tx, rx) = mpsc::channel(config.runtime.shard_queue_capacity);
            // Weak: provider results go back to the shard, but must not keep it alive.
            let feedback = tx.downgrade();
            senders.push(tx);
            let task = ShardTask {
                shard,
                clock: clock.clone(),
                sender: sender.clone(),
                feedback,
                agents: HashMap::new(),
                bots: HashMap::new(),
                statuses: HashMap::new(),
                effects: Vec::new(),
                cuts: HashMap::new(),
                cut_share: shard::CutShare::new(
                    config.kafka.snapshot_busy_percent,
                    crate::clock::monotonic(),
                ),
                series: Default::default(),
            };
            tasks.push(tokio::spawn(task.run(
                rx,
                tick,
                close_streams.clone(),
                stop.clone(),
            )));
        }
        let runtime = Runtime {
            shards: senders.into(),
            owner: Arc::new(owner),
            subscriber_buffer: config.runtime.subscriber_buffer,
            gate: None,
        };
        (runtime, tasks)
    }

    /// A handle whose calls are checked by `gate` first (the Kafka input keeps the ungated one).
    pub fn gated(&self, gate: Arc<dyn Serves>) -> Runtime {
        Runtime {
            gate: Some(gate),
            ..self.clone()
        }
    }

    fn shard_of(&self, tenant: &TenantId) -> Result<&mpsc::Sender<Request>, CoreError> {
        self.owner
            .get(tenant)
            .map(|&i| &self.shards[i])
            .ok_or_else(|| CoreError::NotFound {
                what: "tenant",
                id: tenant.to_string(),
            })
    }

    /// Runs one command on the shard that owns its tenant and waits for the answer. A full
    /// shard queue makes the caller wait: backpressure, not unbounded buffering.
    pub async fn call(&self, command: Command) -> Result<Reply, CallError> {
        let tenant = command.tenant().ok_or(CallError::Unavailable)?.clone();
        let (reply, answer) = oneshot::channel();
        self.ask(&tenant, Request::Command { command, reply }, answer)
            .await
    }

    /// Runs commands on their tenants' shards, in order on each shard, with one hand-off per
    /// shard instead of one per command; the answers come back in the commands' order. For
    /// callers that already hold many commands (the Kafka input's ready records).
    pub async fn call_many(&self, commands: Vec<Command>) -> Vec<Result<Reply, CallError>> {
        let mut answers: Vec<Option<Result<Reply, CallError>>> =
            (0..commands.len()).map(|_| None).collect();
        // Per shard: its commands and where each answer goes.
        let mut per_shard: Vec<(Vec<Command>, Vec<usize>)> =
            (0..self.shards.len()).map(|_| Default::default()).collect();
        for (at, command) in commands.into_iter().enumerate() {
            let shard = command
                .tenant()
                .ok_or(CallError::Unavailable)
                .and_then(|tenant| {
                    if let Some(gate) = &self.gate {
                        gate.check(tenant)?;
                    }
                    self.owner.get(tenant).copied().ok_or_else(|| {
                        CallError::Core(CoreError::NotFound {
                            what: "tenant",
                            id: tenant.to_string(),
                        })
                    })
                });
            match shard {
                Ok(i) => {
                    per_shard[i].0.push(command);
                    per_shard[i].1.push(at);
                }
                Err(e) => answers[at] = Some(Err(e)),
            }
        }
        let mut waiting = Vec::new();
        for (i, (commands, places)) in per_shard.into_iter().enumerate() {
            if commands.is_empty() {
                continue;
            }
            let (reply, answer) = oneshot::channel();
            let sent = self.shards[i]
                .send(Request::Batch { commands, reply })
                .await
                .is_ok();
            waiting.push((sent.then_some(answer), places));
        }
        for (answer, places) in waiting {
            let replies = match answer {
                Some(answer) => answer.await.ok(),
                None => None,
            };
            match replies {
                Some(replies) => {
                    for (at, reply) in places.into_iter().zip(replies) {
                        answers[at] = Some(reply.map_err(CallError::Core));
                    }
                }
                None => {
                    for at in places {
                        answers[at] = Some(Err(CallError::Unavailable));
                    }
                }
            }
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or(Err(CallError::Unavailable)))
            .collect()
    }

    /// The agent's live assignments, then every later event for it.
    pub async fn subscribe_agent(
        &self,
        tenant: TenantId,
        agent: AgentId,
    ) -> Result<AgentStream, CallError> {
        let (tx, rx) = mpsc::channel(self.subscriber_buffer);
        let (reply, answer) = oneshot::channel();
        let request = Request::SubscribeAgent {
            tenant: tenant.clone(),
            agent,
            tx,
            reply,
        };
        self.ask(&tenant, request, answer).await?;
        Ok(rx)
    }

    /// Every message routed to the bot from now on.
    pub async fn subscribe_bot(
        &self,
        tenant: TenantId,
        bot: String,
    ) -> Result<BotStream, CallError> {
        let (tx, rx) = mpsc::channel(self.subscriber_buffer);
        let (reply, answer) = oneshot::channel();
        let request = Request::SubscribeBot {
            tenant: tenant.clone(),
            bot,
            tx,
            reply,
        };
        self.ask(&tenant, request, answer).await?;
        Ok(rx)
    }

    /// Every status change of the tenant's sends from now on.
    pub async fn subscribe_status(&self, tenant: TenantId) -> Result<StatusStream, CallError> {
        let (tx, rx) = mpsc::channel(self.subscriber_buffer);
        let (reply, answer) = oneshot::channel();
        let request = Request::SubscribeStatus {
            tenant: tenant.clone(),
            tx,
            reply,
        };
        self.ask(&tenant, request, answer).await?;
        Ok(rx)
    }

    /// The tenants this runtime serves.
    pub fn tenants(&self) -> Vec<TenantId> {
        let mut t: Vec<TenantId> = self.owner.keys().cloned().collect();
        t.sort();
        t
    }

    /// Sends `request` to the tenant's shard and waits for its answer.
    /// Hands `command` to its shard now (waiting only for room in the shard's queue) and
    /// returns its answer to await later: for a caller that must not wait for the shard (the
    /// Kafka input beginning a cut).
    pub async fn submit(&self, command: Command) -> Result<Answer, CallError> {
        let tenant = command.tenant().ok_or(CallError::Unavailable)?.clone();
        if let Some(gate) = &self.gate {
            gate.check(&tenant)?;
        }
        let (reply, answer) = oneshot::channel();
        self.shard_of(&tenant)?
            .send(Request::Command { command, reply })
            .await
            .map_err(|_| CallError::Unavailable)?;
        Ok(Answer(answer))
    }

    async fn ask<R>(
        &self,
        tenant: &TenantId,
        request: Request,
        answer: oneshot::Receiver<Result<R, CoreError>>,
    ) -> Result<R, CallError> {
        if let Some(gate) = &self.gate {
            gate.check(tenant)?;
        }
        self.shard_of(tenant)?
            .send(request)
            .await
            .map_err(|_| CallError::Unavailable)?;
        Ok(answer.await.map_err(|_| CallError::Unavailable)??)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::core::Inbound;
    use crate::model::{Channel, Presence};

    const CONFIG: &str = r#"
        [runtime]
        subscriber_buffer = 4
        [[tenants]]
        id = "t"
        default_region = "ES"
        default_queue = "q"
        [[tenants.queues]]
        name = "q"
        sla_target_secs = 60
        max_wait_secs = 600
    "#;

    fn ingest(i: usize) -> Command {
        Command::Ingest(Inbound {
            tenant: TenantId::new("t"),
            customer: format!("+3461234{i:04}"),
            channel: Channel::WhatsApp,
            provider_message_id: format!("m{i}"),
            text: "hola".into(),
            business_number: None,
            email: None,
            visitor_id: None,
            profile_name: None,
        })
    }

    /// Many commands over two shards answer in the commands' order, as one call each would,
    /// an unknown tenant's in its place.
    #[tokio::test]
    async fn call_many_answers_in_order_across_shards() {
        let two = format!(
            "[runtime]\nshards = 2\n{}\n{}",
            CONFIG.replace("[runtime]\n        subscriber_buffer = 4", ""),
            CONFIG
                .replace("[runtime]\n        subscriber_buffer = 4", "")
                .replace("id = \"t\"", "id = \"u\"")
        );
        let config = Config::from_toml_str(&two).unwrap();
        let start = || {
            Runtime::start(
                &config,
                Arc::new(SystemClock),
                Arc::new(crate::sender::LogSender),
                CancellationToken::new(),
                CancellationToken::new(),
            )
            .0
        };
        let (many, one) = (start(), start());
        assert_eq!(many.shards.len(), 2);
        let on = |tenant: &str, i: usize| {
            let Command::Ingest(mut m) = ingest(i) else {
                unreachable!()
            };
            m.tenant = TenantId::new(tenant);
            Command::Ingest(m)
        };
        let commands = || (0..12).map(move |i| on(["t", "u", "nobody"][i % 3], i / 2));
        let answers = many.call_many(commands().collect()).await;
        assert_eq!(answers.len(), 12);
        for (i, (answer, command)) in answers.into_iter().zip(commands()).enumerate() {
            let alone = one.call(command).await;
            match (answer, alone) {
                (Ok(Reply::Decision(a)), Ok(Reply::Decision(b))) => {
                    assert_eq!(
                        (a.conversation, a.target),
                        (b.conversation, b.target),
                        "{i}"
                    );
                    assert_eq!(a.duplicate, b.duplicate, "{i}");
                }
                (Err(CallError::Core(CoreError::NotFound { id, .. })), Err(_)) => {
                    assert_eq!((id.as_str(), i % 3), ("nobody", 2));
                }
                (a, b) => panic!("command {i}: {a:?} against {b:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_disconnected_and_routing_goes_on() {
        let config = Config::from_toml_str(CONFIG).unwrap();
        let (runtime, _tasks) = Runtime::start(
            &config,
            Arc::new(SystemClock),
            Arc::new(crate::sender::LogSender),
            CancellationToken::new(),
            CancellationToken::new(),
        );
        let agent = AgentId::new("ana");
        runtime
            .call(Command::RegisterAgent {
                tenant: TenantId::new("t"),
                agent: agent.clone(),
                presence: Presence::Online,
                capacity: 20,
                queues: vec!["q".into()],
            })
            .await
            .unwrap();
        let mut slow = runtime
            .subscribe_agent(TenantId::new("t"), agent.clone())
            .await
            .unwrap();
        // Ten assignments while nobody reads the stream: every message is still routed.
        for i in 0..10 {
            let Reply::Decision(d) = runtime.call(ingest(i)).await.unwrap() else {
                panic!("a decision")
            };
            assert_eq!(d.agent, Some(agent.clone()));
        }
        // Three events fit, the last slot says why the stream ends, then it ends.
        for _ in 0..3 {
            assert!(matches!(
                slow.recv().await,
                Some(Ok(AgentEvent::Assigned { .. }))
            ));
        }
        assert_eq!(slow.recv().await.unwrap().unwrap_err(), Lagged);
        assert!(slow.recv().await.is_none());
        // Ten live assignments do not fit a 4-event buffer as a snapshot: refused, clearly.
        let err = runtime
            .subscribe_agent(TenantId::new("t"), agent)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CallError::Core(CoreError::ResourceExhausted(m)) if m.contains("subscriber_buffer")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn unknown_tenant_is_not_found_before_any_shard() {
        let config = Config::from_toml_str(CONFIG).unwrap();
        let (runtime, _tasks) = Runtime::start(
            &config,
            Arc::new(SystemClock),
            Arc::new(crate::sender::LogSender),
            CancellationToken::new(),
            CancellationToken::new(),
        );
        let err = runtime
            .call(Command::GetAgent {
                tenant: TenantId::new("nobody"),
                agent: AgentId::new("a"),
            })
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            CallError::Core(CoreError::NotFound { what: "tenant", .. })
        ));
    }
}
