//! One shard's task: it serves the shard's queue one request at a time (commands, ticks,
//! subscriptions), hands the effects to the sender and to the live streams, and feeds the
//! provider's answers back in.
use super::*;

type Subscribers<T> = Vec<mpsc::Sender<Result<T, Lagged>>>;

pub(super) struct ShardTask {
    pub(super) shard: Shard,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) sender: Arc<dyn Sender>,
    /// The shard's own queue, for provider results of dispatched sends.
    pub(super) feedback: mpsc::WeakSender<Request>,
    pub(super) agents: HashMap<(TenantId, AgentId), Subscribers<AgentEvent>>,
    pub(super) bots: HashMap<(TenantId, Arc<str>), Subscribers<BotEvent>>,
    pub(super) statuses: HashMap<TenantId, Subscribers<SendStatusEvent>>,
    /// Reused between commands so the hot path does not allocate a fresh vector.
    pub(super) effects: Vec<Effect>,
    /// Cuts being taken (`Command::BeginCut`): who waits for each tenant's.
    pub(super) cuts: HashMap<TenantId, CutCopying>,
    /// The time paced cuts may take of the shard's.
    pub(super) cut_share: CutShare,
    /// Handles to the per-message metrics.
    pub(super) series: telemetry::RoutingSeries,
}

/// A cut being copied.
pub(super) struct CutCopying {
    reply: oneshot::Sender<Result<Reply, CoreError>>,
    paced: bool,
    /// The shard's time spent copying it so far.
    spent: Duration,
}

/// How much of a cut a shard copies between two requests (conversations; see
/// `core::tenant::slab`): a few hundred microseconds.
const CUT_STEP: usize = 1_024;

/// How much it copies at a time when no request waits.
const CUT_STEP_IDLE: usize = 16 * CUT_STEP;

/// Paced cuts are copied within `percent` of the shard's time (`kafka.snapshot_busy_percent`):
/// time to copy accrues as the clock runs, up to [`CutShare::MOST`], and copying spends it.
/// A cut of a million conversations is about a second of copying: at full speed, from a shard
/// that is busy with input, that second is the input's.
pub(super) struct CutShare {
    percent: u32,
    /// Copying time saved up (nanoseconds); below zero after a step that overran it, a debt
    /// repaid before the next step.
    balance: i64,
    since: std::time::Instant,
}

impl CutShare {
    /// The most copying time saved up, so the copying comes in short steps.
    const MOST: Duration = Duration::from_millis(20);

    pub(super) fn new(percent: u32, now: std::time::Instant) -> Self {
        Self {
            percent: percent.clamp(1, 100),
            balance: 0,
            since: now,
        }
    }

    /// The copying time there is at `now`.
    fn credit(&mut self, now: std::time::Instant) -> Duration {
        let accrued = now.saturating_duration_since(self.since) * self.percent / 100;
        self.balance = self
            .balance
            .saturating_add(nanos(accrued))
            .min(nanos(Self::MOST));
        self.since = self.since.max(now);
        Duration::from_nanos(self.balance.max(0).unsigned_abs())
    }

    /// How long after `now` there is copying time again: a debt repaid, and a millisecond's
    /// copying saved up at least.
    fn until_credit(&self, now: std::time::Instant) -> Duration {
        if self.balance > 0 {
            return Duration::ZERO;
        }
        let owed = Duration::from_nanos(self.balance.unsigned_abs()) + Duration::from_millis(1);
        (owed * 100 / self.percent).saturating_sub(now.saturating_duration_since(self.since))
    }

    fn spend(&mut self, spent: Duration) {
        self.balance = self.balance.saturating_sub(nanos(spent));
    }
}

impl ShardTask {
    pub(super) async fn run(
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
                biased;
                request = rx.recv() => match request {
                    Some(request) => {
                        self.serve(request);
                        self.step_cuts(CUT_STEP);
                    }
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
                // Nothing else to do: copy more of the cuts being taken (paced ones when
                // their share of the time allows).
                () = rest(self.cut_rest()), if !self.cuts.is_empty() => {
                    self.step_cuts(CUT_STEP_IDLE);
                    // Always ready: let the worker's other tasks run between steps.
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    /// Copies more of the cuts being taken (paced ones within their share of the time) and
    /// answers those finished.
    fn step_cuts(&mut self, budget: usize) {
        if self.cuts.is_empty() {
            return;
        }
        let paced = self.cuts_paced();
        let began = crate::clock::monotonic();
        if paced && self.cut_share.credit(began).is_zero() {
            return;
        }
        let done = self.shard.step_cuts(budget);
        let spent = began.elapsed();
        if paced {
            self.cut_share.spend(spent);
        }
        // Each cut copied in this step is charged the step's time (several at once: each is
        // charged all of it, an upper bound).
        for cut in self.cuts.values_mut() {
            cut.spent += spent;
        }
        for (tenant, cut) in done {
            if let Some(c) = self.cuts.remove(&tenant) {
                let _ = c.reply.send(Ok(Reply::Cut(Box::new(cut), c.spent)));
            }
        }
    }

    /// How long the shard, idle, waits before copying more of its cuts: none when one is not
    /// paced or the paced ones have time left.
    fn cut_rest(&self) -> Duration {
        match self.cuts_paced() {
            true => self.cut_share.until_credit(crate::clock::monotonic()),
            false => Duration::ZERO,
        }
    }

    /// Whether every cut being copied is paced (one a revoke or a shutdown waits for is
    /// copied at full speed, and the others with it).
    fn cuts_paced(&self) -> bool {
        self.cuts.values().all(|c| c.paced)
    }

    fn serve(&mut self, request: Request) {
        match request {
            Request::Command {
                command: command @ Command::BeginCut { paced, .. },
                reply,
            } => {
                let tenant = command.tenant().cloned();
                match (self.command(command), tenant) {
                    // Answered when the cut is copied (`step_cuts`).
                    (Ok(_), Some(tenant)) => {
                        let spent = Duration::ZERO;
                        self.cuts.insert(
                            tenant,
                            CutCopying {
                                reply,
                                paced,
                                spent,
                            },
                        );
                    }
                    (result, _) => {
                        let _ = reply.send(result);
                    }
                }
            }
            Request::Command { command, reply } => {
                let result = self.command(command);
                // The caller may have gone (deadline, cancelled): the command still happened.
                let _ = reply.send(result);
            }
            Request::Batch { commands, reply } => {
                let now = self.clock.now();
                let results = (commands.into_iter())
                    .map(|c| self.command_at(now, c))
                    .collect();
                let _ = reply.send(results);
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

    /// Runs one command, counts it, and hands its effects on.
    fn command(&mut self, command: Command) -> Result<Reply, CoreError> {
        let now = self.clock.now();
        self.command_at(now, command)
    }

    /// [`ShardTask::command`] at `now` (a batch's commands share their clock reading).
    fn command_at(&mut self, now: Timestamp, command: Command) -> Result<Reply, CoreError> {
        let tenant = command.tenant().cloned();
        if let Command::RestoreState { tenant, .. } = &command {
            // The tenant was taken over or handed over: its streams end, and their
            // subscribers reconnect (to whichever replica owns it now).
            self.agents.retain(|(t, _), _| t != tenant);
            self.bots.retain(|(t, _), _| t != tenant);
            self.statuses.remove(tenant);
            // A cut being taken of the tenant it was ends unanswered (its caller hears so).
            self.cuts.remove(tenant);
        }
        if let Command::ProviderResult {
            tenant,
            outcome: ProviderOutcome::Failed { code },
            ..
        } = &command
        {
            telemetry::provider_error(tenant.as_str(), *code);
        }
        let channel = match &command {
            Command::Ingest(m) => Some(m.channel),
            _ => None,
        };
        let watch = Stopwatch::start();
        let result = self.shard.handle(now, command, &mut self.effects);
        if let Some(channel) = channel {
            self.series.inbound(&result, watch.elapsed(), channel);
        }
        if let (Ok(Reply::Send { admission, .. }), Some(t)) = (&result, &tenant) {
            telemetry::admission(t.as_str(), admission);
        }
        if let (Ok(Reply::Decision(d)), Some(t)) = (&result, &tenant)
            && !d.duplicate
        {
            self.series.decision(t, d, channel);
        }
        self.deliver(now);
        result
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
            telemetry::tenant_series(tenant_name.as_str());
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
                | Effect::SpamRateAlert { .. }
                | Effect::CustomerHeld { .. }
                | Effect::Consent { .. }
                | Effect::BotConversationsEnded { .. } => {}
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

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Ready after `wait` (at once for none).
async fn rest(wait: Duration) {
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_copying_gets_its_share_of_the_time_in_short_steps() {
        let (t0, ms) = (crate::clock::monotonic(), Duration::from_millis);
        let mut share = CutShare::new(10, t0);
        assert_eq!(share.credit(t0), Duration::ZERO);
        assert_eq!(
            share.until_credit(t0),
            ms(10),
            "a millisecond's copying at 10%"
        );
        // 100 ms on: a tenth of it to copy.
        assert_eq!(share.credit(t0 + ms(100)), ms(10));
        assert_eq!(share.until_credit(t0 + ms(100)), Duration::ZERO);
        // A step that overran the 10 ms by 2: the debt is repaid first (20 ms), then a
        // millisecond's copying saved up (10 ms).
        share.spend(ms(12));
        assert_eq!(share.credit(t0 + ms(100)), Duration::ZERO);
        assert_eq!(share.until_credit(t0 + ms(104)), ms(26));
        assert_eq!(share.credit(t0 + ms(120)), Duration::ZERO, "still repaying");
        assert_eq!(share.credit(t0 + ms(130)), ms(1));
        // An idle second saves up no more than a short step's worth.
        assert_eq!(share.credit(t0 + ms(1_130)), CutShare::MOST);
    }
}
