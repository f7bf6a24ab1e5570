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

type Subscribers<T> = Vec<mpsc::Sender<Result<T, Lagged>>>;

struct ShardTask {
    shard: Shard,
    clock: Arc<dyn Clock>,
    sender: Arc<dyn Sender>,
    /// The shard's own queue, for provider results of dispatched sends.
    feedback: mpsc::WeakSender<Request>,
    agents: HashMap<(TenantId, AgentId), Subscribers<AgentEvent>>,
    bots: HashMap<(TenantId, Arc<str>), Subscribers<BotEvent>>,
    statuses: HashMap<TenantId, Subscribers<SendStatusEvent>>,
    /// Reused between commands so the hot path does not allocate a fresh vector.
    effects: Vec<Effect>,
}

impl ShardTask {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        tick: Duration,
        close_streams: CancellationToken,
        stop: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut streams_open = true;
        loop {
            tokio::select! {
                request = rx.recv() => match request {
                    Some(request) => self.serve(request),
                    None => break, // every Runtime handle is gone
                },
                _ = ticker.tick() => self.tick(),
                () = stop.cancelled() => break,
                _ = close_streams.cancelled(), if streams_open => {
                    streams_open = false;
                    self.agents.clear();
                    self.bots.clear();
                    self.statuses.clear();
                }
            }
        }
    }

    fn serve(&mut self, request: Request) {
        match request {
            Request::Command { command, reply } => {
                let now = self.clock.now();
                let tenant = command.tenant().cloned();
                let is_ingest = matches!(command, Command::Ingest(_));
                if let Command::RestoreState { tenant, .. } = &command {
                    // The tenant was taken over or handed over: its streams end, and their
                    // subscribers reconnect (to whichever replica owns it now).
                    self.agents.retain(|(t, _), _| t != tenant);
                    self.bots.retain(|(t, _), _| t != tenant);
                    self.statuses.remove(tenant);
                }
                if let Command::ProviderResult {
                    tenant,
                    outcome: ProviderOutcome::Failed { code },
                    ..
                } = &command
                {
                    telemetry::provider_error(tenant.as_str(), *code);
                }
                let watch = Stopwatch::start();
                let result = self.shard.handle(now, command, &mut self.effects);
                if is_ingest {
                    telemetry::inbound(&result, watch.elapsed());
                }
                if let (Ok(Reply::Send { admission, .. }), Some(t)) = (&result, &tenant) {
                    telemetry::admission(t.as_str(), admission);
                }
                if let (Ok(Reply::Decision(d)), Some(t)) = (&result, &tenant)
                    && !d.duplicate
                {
                    telemetry::decision(t.as_str(), d);
                }
                self.deliver(now);
                // The caller may have gone (deadline, cancelled): the command still happened.
                let _ = reply.send(result);
            }
            Request::SubscribeAgent {
                tenant,
                agent,
                tx,
                reply,
            } => {
                let result = self.subscribe_agent(tenant, agent, tx);
                let _ = reply.send(result);
            }
            Request::SubscribeBot {
                tenant,
                bot,
                tx,
                reply,
            } => {
                let result = self.subscribe_bot(tenant, bot, tx);
                let _ = reply.send(result);
            }
            Request::SubscribeStatus { tenant, tx, reply } => {
                let result = if self.shard.tenant(tenant.as_str()).is_some() {
                    self.statuses.entry(tenant).or_default().push(tx);
                    Ok(())
                } else {
                    Err(CoreError::NotFound {
                        what: "tenant",
                        id: tenant.to_string(),
                    })
                };
                let _ = reply.send(result);
            }
        }
    }

    fn tick(&mut self) {
        let now = self.clock.now();
        self.shard
            .handle(now, Command::Tick, &mut self.effects)
            .expect("a tick cannot fail");
        self.deliver(now);
        let ids: Vec<TenantId> = self.shard.tenant_ids().cloned().collect();
        for tenant_name in ids {
            let stats = self.shard.handle(
                now,
                Command::QueueStats {
                    tenant: tenant_name.clone(),
                    queue: None,
                },
                &mut self.effects,
            );
            if let Ok(Reply::QueueStats(stats)) = stats {
                telemetry::queue_gauges(&stats);
            }
            if let Some(t) = self.shard.tenant(tenant_name.as_str()) {
                telemetry::quota_gauges(tenant_name.as_str(), t.quotas(), now);
            }
        }
    }

    fn subscribe_agent(
        &mut self,
        tenant: TenantId,
        agent: AgentId,
        tx: mpsc::Sender<Result<AgentEvent, Lagged>>,
    ) -> Result<(), CoreError> {
        let now = self.clock.now();
        let t = self
            .shard
            .tenant(tenant.as_str())
            .ok_or_else(|| CoreError::NotFound {
                what: "tenant",
                id: tenant.to_string(),
            })?;
        let view = t.desk().agent_view(&agent)?;
        // The snapshot: what the agent has now, before any later event.
        for conversation in view.conversations {
            let conversation = t.view(conversation, now)?;
            let queue = conversation
                .queue
                .clone()
                .expect("an assigned conversation has a queue");
            let event = AgentEvent::Assigned {
                conversation: Box::new(conversation),
                queue,
                reason: Reason::AssignedAgent,
                waited_ms: 0,
            };
            if tx.try_send(Ok(event)).is_err() {
                return Err(CoreError::ResourceExhausted(
                    "runtime.subscriber_buffer is smaller than the agent's live assignments".into(),
                ));
            }
        }
        self.agents.entry((tenant, agent)).or_default().push(tx);
        Ok(())
    }

    fn subscribe_bot(
        &mut self,
        tenant: TenantId,
        bot: String,
        tx: mpsc::Sender<Result<BotEvent, Lagged>>,
    ) -> Result<(), CoreError> {
        let t = self
            .shard
            .tenant(tenant.as_str())
            .ok_or_else(|| CoreError::NotFound {
                what: "tenant",
                id: tenant.to_string(),
            })?;
        match t.bot() {
            Some(name) if **name == *bot => {
                let name = name.clone();
                self.bots.entry((tenant, name)).or_default().push(tx);
                Ok(())
            }
            _ => Err(CoreError::NotFound {
                what: "bot",
                id: bot,
            }),
        }
    }

    /// Hands a message to the sender on its own task; the outcome comes back as a command.
    fn dispatch(&self, tenant: TenantId, send: Dispatch) {
        let id = send.id;
        let outcome = self.sender.send(&tenant, send);
        let feedback = self.feedback.clone();
        tokio::spawn(async move {
            let outcome = outcome.await;
            if outcome == ProviderOutcome::Handed {
                return; // the provider's answer comes later (a status webhook)
            }
            let Some(shard) = feedback.upgrade() else {
                return; // shutting down: the send's state stays `dispatched`
            };
            let (reply, _) = oneshot::channel();
            let command = Command::ProviderResult {
                tenant,
                id,
                outcome,
            };
            let _ = shard.send(Request::Command { command, reply }).await;
        });
    }

    /// Carries the effects of the last command to telemetry and the live streams.
    fn deliver(&mut self, now: Timestamp) {
        let mut effects = std::mem::take(&mut self.effects);
        for effect in effects.drain(..) {
            telemetry::effect(&effect);
            match effect {
                Effect::Assigned {
                    tenant,
                    agent,
                    conversation,
                    queue,
                    reason,
                    waited_ms,
                } => {
                    let key = (tenant, agent);
                    if !self.agents.contains_key(&key) {
                        continue;
                    }
                    let Some(view) = self
                        .shard
                        .tenant(key.0.as_str())
                        .and_then(|t| t.view(conversation, now).ok())
                    else {
                        continue;
                    };
                    send_all(
                        &mut self.agents,
                        key,
                        AgentEvent::Assigned {
                            conversation: Box::new(view),
                            queue,
                            reason,
                            waited_ms,
                        },
                        "agent",
                    );
                }
                Effect::Unassigned {
                    tenant,
                    agent,
                    conversation,
                    reason,
                } => send_all(
                    &mut self.agents,
                    (tenant, agent),
                    AgentEvent::Unassigned {
                        conversation,
                        reason,
                    },
                    "agent",
                ),
                Effect::AgentMessage {
                    tenant,
                    agent,
                    conversation,
                    message,
                } => send_all(
                    &mut self.agents,
                    (tenant, agent),
                    AgentEvent::Message {
                        conversation,
                        message,
                    },
                    "agent",
                ),
                Effect::BotMessage {
                    tenant,
                    bot,
                    conversation,
                    message,
                    reason,
                    intent,
                } => {
                    let key = (tenant, bot);
                    if !self.bots.contains_key(&key) {
                        continue;
                    }
                    let context = self
                        .shard
                        .tenant(key.0.as_str())
                        .and_then(|t| t.view(conversation, now).ok())
                        .map(|v| v.context)
                        .unwrap_or_default();
                    send_all(
                        &mut self.bots,
                        key,
                        BotEvent {
                            conversation,
                            message,
                            reason,
                            intent,
                            context,
                        },
                        "bot",
                    );
                }
                Effect::Dispatch { tenant, send } => self.dispatch(tenant, send),
                Effect::SendStatus {
                    tenant,
                    id,
                    state,
                    reason,
                    provider_code,
                    idempotency_key,
                } => {
                    let event = SendStatusEvent {
                        tenant: tenant.clone(),
                        id,
                        state,
                        reason,
                        provider_code,
                        idempotency_key,
                    };
                    self.sender.status_changed(&event);
                    send_all(&mut self.statuses, tenant, event, "status");
                }
                Effect::Queued { .. }
                | Effect::SlaBreached { .. }
                | Effect::Escalated { .. }
                | Effect::BatchMode { .. }
                | Effect::ShadowRefusal { .. }
                | Effect::SpamRateAlert { .. } => {}
            }
        }
        self.effects = effects;
    }
}

/// Sends `event` to every subscriber of `key`. A subscriber with one free slot left gets
/// `Lagged` in it and is dropped; a closed one is dropped.
fn send_all<K: std::hash::Hash + Eq, T: Clone>(
    subscribers: &mut HashMap<K, Subscribers<T>>,
    key: K,
    event: T,
    kind: &'static str,
) {
    let Some(list) = subscribers.get_mut(&key) else {
        return;
    };
    list.retain(|tx| {
        if tx.is_closed() {
            return false;
        }
        if tx.capacity() <= 1 {
            let _ = tx.try_send(Err(Lagged));
            telemetry::stream_disconnected(kind);
            return false;
        }
        tx.try_send(Ok(event.clone())).is_ok()
    });
    if list.is_empty() {
        subscribers.remove(&key);
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
        })
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

/// Re-reads the config file the service started with and hands each tenant its new quotas.
/// A file that does not load or validate changes nothing.
pub struct Reloader {
    runtime: Runtime,
    /// None: the service runs on the embedded config, which cannot change.
    path: Option<std::path::PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(
        "the service runs on the embedded demo config: there is no file to reload; start it with SWITCHBOARD_CONFIG"
    )]
    NoFile,
    #[error("config file refused, the running limits stay: {0}")]
    Invalid(#[from] crate::config::ConfigError),
    #[error("tenant {tenant}: {error}; the running limits stay for it")]
    Tenant { tenant: TenantId, error: CallError },
}

impl Reloader {
    pub fn new(runtime: Runtime, path: Option<std::path::PathBuf>) -> Self {
        Self { runtime, path }
    }

    /// Applies the file's quotas and numbers; returns what it did, per tenant.
    pub async fn reload(&self, actor: &str) -> Result<Vec<String>, ReloadError> {
        let path = self.path.as_deref().ok_or(ReloadError::NoFile)?;
        let config = Config::load(Some(path))?;
        let served = self.runtime.tenants();
        let mut notes = Vec::new();
        for t in &config.tenants {
            let tenant = TenantId::new(&t.id);
            if !served.contains(&tenant) {
                notes.push(format!(
                    "tenant {}: new in the file; adding a tenant needs a restart",
                    t.id
                ));
                continue;
            }
            self.runtime
                .call(Command::ReloadQuotas {
                    tenant: tenant.clone(),
                    numbers: t.numbers.clone(),
                    quotas: t.quotas.clone(),
                    actor: actor.to_owned(),
                })
                .await
                .map_err(|error| ReloadError::Tenant {
                    tenant: tenant.clone(),
                    error,
                })?;
            notes.push(format!("tenant {}: quotas and numbers reloaded", t.id));
        }
        for tenant in served {
            if !config.tenants.iter().any(|t| t.id == tenant.as_str()) {
                notes.push(format!(
                    "tenant {tenant}: gone from the file; removing a tenant needs a restart"
                ));
            }
        }
        tracing::info!(actor, ?notes, "configuration reloaded");
        Ok(notes)
    }
}
