//! Driving a run over gRPC: the load models (open loop at a schedule, closed loop with N
//! workers), the simulated customers, business services and agents, and the observers that
//! read back what the server decided (send statuses, quota usage, queue SLAs).
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard::proto;
use tonic::transport::Channel;

use crate::latency::Latencies;
use crate::report::LimitSample;
use crate::scenario::{Agents, Dirty, DirtyMessage, Message, Messages, Outbound, Priority};

/// One request: builds and sends request `n`; Ok when the target answered OK.
pub type Call = Arc<
    dyn Fn(u64) -> Pin<Box<dyn Future<Output = Result<(), tonic::Status>> + Send>> + Send + Sync,
>;

/// HTTP/2 connections to the target; call `n` goes over connection `n mod N`. One connection
/// caps a client near 26–29k calls/s however many cores it has (PERFORMANCE.md).
#[derive(Clone)]
pub struct Pool(Arc<[Channel]>);

impl Pool {
    /// `connections` (at least one) connections to `addr` (`host:port`).
    pub async fn connect(addr: &str, connections: usize) -> Result<Self, tonic::transport::Error> {
        let endpoint =
            Channel::from_shared(format!("http://{addr}")).expect("host:port makes a valid URI");
        let mut channels = Vec::with_capacity(connections.max(1));
        for _ in 0..connections.max(1) {
            channels.push(endpoint.connect().await?);
        }
        Ok(Self(channels.into()))
    }

    /// The connection for call `n`.
    pub fn pick(&self, n: u64) -> Channel {
        self.0[(n % self.0.len() as u64) as usize].clone()
    }

    /// The first connection (for observers: quota samples, statuses, agents).
    pub fn first(&self) -> &Channel {
        &self.0[0]
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The tenants a stream's calls go to, in turn: call `n` to tenant `n mod T`.
#[derive(Clone, Debug)]
pub struct Tenants(Arc<[String]>);

impl Tenants {
    /// At least one tenant.
    pub fn new(tenants: &[String]) -> Self {
        assert!(!tenants.is_empty(), "at least one tenant");
        Self(tenants.into())
    }

    pub fn of(&self, n: u64) -> &str {
        &self.0[(n % self.0.len() as u64) as usize]
    }

    pub fn all(&self) -> &[String] {
        &self.0
    }
}

/// What every stream of a run shares: its start, warm-up, in-flight bound and progress bar.
#[derive(Clone)]
pub struct Ctx {
    pub start: Instant,
    pub warmup: Duration,
    pub concurrency: usize,
    pub progress: indicatif::ProgressBar,
}

/// One stream of requests (inbound messages, one category of sends, dirty input, an anchor).
pub struct Stream {
    pub name: String,
    pub offered: u64,
    pub latencies: Latencies,
    /// Answers by gRPC status code name ("Ok", "InvalidArgument", ...).
    pub answers: BTreeMap<String, u64>,
    /// Time from the start to the last answer.
    pub elapsed: Duration,
}

impl Stream {
    fn new(name: &str, warmup: Duration) -> Self {
        Self {
            name: name.to_owned(),
            offered: 0,
            latencies: Latencies::new(warmup, Duration::from_secs(60)),
            answers: BTreeMap::new(),
            elapsed: Duration::ZERO,
        }
    }

    fn answered(&mut self, result: &Result<(), tonic::Status>) {
        let code = match result {
            Ok(()) => "Ok".to_owned(),
            Err(status) => format!("{:?}", status.code()),
        };
        *self.answers.entry(code).or_default() += 1;
    }

    /// Errors by status (every answer that is not OK).
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.answers
            .iter()
            .filter(|(k, _)| *k != "Ok")
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Answers per second, over the time to the last answer.
    pub fn achieved(&self) -> f64 {
        let answered: u64 = self.answers.values().sum();
        answered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Offers `due` (open loop): request `n` is sent at its due time whatever happened to the
/// ones before (at most `ctx.concurrency` in flight; past it, later ones wait and their
/// latency, counted from the due time, shows it).
pub async fn open_loop(ctx: &Ctx, name: &str, due: Vec<Duration>, call: Call) -> Stream {
    let stream = Arc::new(Mutex::new(Stream::new(name, ctx.warmup)));
    stream.lock().expect("not poisoned").offered = due.len() as u64;
    let slots = Arc::new(tokio::sync::Semaphore::new(ctx.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for (n, at) in due.into_iter().enumerate() {
        tokio::time::sleep_until((ctx.start + at).into()).await;
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        let request = call(n as u64);
        let (stream, ctx) = (stream.clone(), ctx.clone());
        tasks.spawn(async move {
            let result = request.await;
            let done = ctx.start.elapsed();
            drop(permit);
            let mut s = stream.lock().expect("not poisoned");
            s.latencies.record(at, done);
            s.answered(&result);
            s.elapsed = s.elapsed.max(done);
            ctx.progress.inc(1);
        });
    }
    while tasks.join_next().await.is_some() {}
    Arc::try_unwrap(stream)
        .ok()
        .expect("every request task has ended")
        .into_inner()
        .expect("not poisoned")
}

/// `workers` clients each send their next request as soon as the last one is answered, for
/// `duration` (closed loop: the achieved rate is the target's capacity with that many
/// callers; latency counts from each actual send).
pub async fn closed_loop(
    ctx: &Ctx,
    name: &str,
    workers: usize,
    duration: Duration,
    call: Call,
) -> Stream {
    let stream = Arc::new(Mutex::new(Stream::new(name, ctx.warmup)));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (stream, ctx, call, next) = (stream.clone(), ctx.clone(), call.clone(), next.clone());
        tasks.spawn(async move {
            while started.elapsed() < duration {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let sent = ctx.start.elapsed();
                let result = call(n).await;
                let done = ctx.start.elapsed();
                let mut s = stream.lock().expect("not poisoned");
                s.offered += 1;
                s.latencies.record(sent, done);
                s.answered(&result);
                s.elapsed = s.elapsed.max(done);
                ctx.progress.inc(1);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut s = Arc::try_unwrap(stream)
        .ok()
        .expect("every worker has ended")
        .into_inner()
        .expect("not poisoned");
    // The rate over the workers' own time, not from the start of the whole run.
    s.elapsed = started.elapsed();
    s
}

/// What the server decided, as the harness saw it.
#[derive(Default)]
pub struct Outcomes {
    /// Inbound decisions by "target: reason".
    pub routing: BTreeMap<String, u64>,
    /// Send answers by "ADMISSION" or "REFUSED: REASON".
    pub sends: BTreeMap<String, u64>,
    /// Send status events by state (from `Outbound.StreamStatus`).
    pub statuses: BTreeMap<String, u64>,
    /// Dirty input by "flaw → answer".
    pub dirty: BTreeMap<String, u64>,
    /// The customer of each template send, by idempotency key.
    template_customers: HashMap<String, String>,
    /// Distinct customers reached by a dispatched template send.
    pub dispatched_customers: HashSet<String>,
    /// Conversations assigned to the simulated agents, and how many they completed.
    pub assignments: u64,
    pub completed: u64,
}

pub type Shared = Arc<Mutex<Outcomes>>;

fn count(map: &mut BTreeMap<String, u64>, key: String) {
    *map.entry(key).or_default() += 1;
}

/// An enum value's proto name without its prefix ("SLA_SATURATED").
fn name_of(s: Option<&str>, prefix: &str) -> String {
    s.map_or("?", |s| s.strip_prefix(prefix).unwrap_or(s))
        .to_owned()
}

/// Inbound message `n` of a scenario, as the API and the inbound topic take it (its id
/// `load.<n>` finds its answer again).
pub fn inbound_message(tenant: &str, n: u64, m: Message) -> proto::InboundMessage {
    proto::InboundMessage {
        tenant: tenant.to_owned(),
        customer: m.customer,
        channel: if m.web_chat {
            proto::Channel::Webchat
        } else {
            proto::Channel::Whatsapp
        } as i32,
        provider_message_id: format!("load.{n}"),
        text: m.text,
        business_number: String::new(),
        ..Default::default()
    }
}

/// Bad record `n` as a protobuf message (id `load-dirty.<n>`).
pub fn dirty_message(n: u64, m: DirtyMessage) -> proto::InboundMessage {
    proto::InboundMessage {
        tenant: m.tenant,
        customer: m.customer,
        channel: proto::Channel::Whatsapp as i32,
        provider_message_id: format!("load-dirty.{n}"),
        text: m.text,
        business_number: String::new(),
        ..Default::default()
    }
}

/// Customers writing in: `Inbound.Ingest` of the scenario's messages, spread over the tenants
/// and the connections.
pub fn inbound(pool: &Pool, tenants: &Tenants, messages: Messages, outcomes: &Shared) -> Call {
    let (pool, tenants, outcomes) = (pool.clone(), tenants.clone(), outcomes.clone());
    let messages = Arc::new(messages);
    Arc::new(move |n| {
        let request = inbound_message(tenants.of(n), n, messages.nth(n));
        let mut client = proto::inbound_client::InboundClient::new(pool.pick(n));
        let outcomes = outcomes.clone();
        Box::pin(async move {
            let d = client.ingest(request).await?.into_inner();
            let key = format!(
                "{}: {}",
                name_of(d.target().as_str_name().into(), "TARGET_").to_lowercase(),
                d.reason().as_str_name()
            );
            count(&mut outcomes.lock().expect("not poisoned").routing, key);
            Ok(())
        })
    })
}

/// Bad inbound messages: each answer is counted by flaw and status.
pub fn dirty(pool: &Pool, tenant: &str, dirty: Dirty, outcomes: &Shared) -> Call {
    let (pool, tenant, outcomes) = (pool.clone(), tenant.to_owned(), outcomes.clone());
    Arc::new(move |n| {
        let m = dirty.nth(n, &tenant, false);
        let flaw = m.flaw;
        let request = dirty_message(n, m);
        let mut client = proto::inbound_client::InboundClient::new(pool.pick(n));
        let outcomes = outcomes.clone();
        Box::pin(async move {
            let result = client.ingest(request).await.map(|_| ());
            let answer = match &result {
                Ok(()) => "routed".to_owned(),
                Err(s) => format!("{:?}", s.code()),
            };
            count(
                &mut outcomes.lock().expect("not poisoned").dirty,
                format!("{} → {answer}", flaw.name()),
            );
            result
        })
    })
}

/// A business service's send requests: request `n` of one category, each with its own
/// idempotency key (`load.<category>.<n>`). With `replies` (the scenario's inbound messages),
/// session send `n` answers the customer of inbound message `n`, who wrote before it
/// (sessions are sent no faster than customers write). Template sends are remembered in
/// `outcomes` by key with their customer (for the limit check).
pub struct SendRequests {
    tenants: Tenants,
    spec: Outbound,
    category: proto::Category,
    priority: proto::SendPriority,
    replies: Option<Messages>,
    outcomes: Shared,
}

impl SendRequests {
    pub fn new(
        tenants: &Tenants,
        spec: Outbound,
        replies: Option<Messages>,
        outcomes: &Shared,
    ) -> Self {
        let category = match spec.category.as_str() {
            "marketing" => proto::Category::Marketing,
            "utility" => proto::Category::Utility,
            "authentication" => proto::Category::Authentication,
            _ => proto::Category::Session,
        };
        let priority = match spec.priority {
            Priority::ByCategory => proto::SendPriority::Unspecified,
            Priority::Low => proto::SendPriority::Low,
            Priority::Normal => proto::SendPriority::Normal,
            Priority::High => proto::SendPriority::High,
        };
        Self {
            tenants: tenants.clone(),
            replies: replies.filter(|_| category == proto::Category::Session),
            spec,
            category,
            priority,
            outcomes: outcomes.clone(),
        }
    }

    pub fn nth(&self, n: u64) -> proto::SendRequest {
        let to = match &self.replies {
            Some(inbound) => inbound.nth(n).customer,
            None => self.spec.customer(n),
        };
        let key = format!("load.{}.{n}", self.spec.category);
        if self.category != proto::Category::Session {
            self.outcomes
                .lock()
                .expect("not poisoned")
                .template_customers
                .insert(key.clone(), to.clone());
        }
        proto::SendRequest {
            tenant: self.tenants.of(n).to_owned(),
            from: self.spec.from[(n % self.spec.from.len() as u64) as usize].clone(),
            to,
            category: self.category as i32,
            content: self.spec.content.clone(),
            template: None,
            priority: self.priority as i32,
            idempotency_key: key,
            valid_for_ms: 0,
            ..Default::default()
        }
    }
}

/// Counts a send's answer in `outcomes.sends`: "DISPATCHED", "QUEUED", "REFUSED: REASON".
pub fn count_send(outcomes: &Shared, answer: String) {
    count(&mut outcomes.lock().expect("not poisoned").sends, answer);
}

/// A business service sending one category over gRPC (`Outbound.Send`).
pub fn sends(pool: &Pool, requests: SendRequests, outcomes: &Shared) -> Call {
    let (pool, outcomes) = (pool.clone(), outcomes.clone());
    Arc::new(move |n| {
        let request = requests.nth(n);
        let mut client = proto::outbound_client::OutboundClient::new(pool.pick(n));
        let outcomes = outcomes.clone();
        Box::pin(async move {
            let r = client.send(request).await?.into_inner();
            let key = match r.admission() {
                proto::Admission::Refused => format!("REFUSED: {}", r.reason().as_str_name()),
                a => name_of(Some(a.as_str_name()), "ADMISSION_"),
            };
            count_send(&outcomes, key);
            Ok(())
        })
    })
}

/// Follows the tenant's send statuses until the task is aborted: counts each state, and the
/// distinct customers a template send was dispatched to.
pub async fn follow_statuses(channel: Channel, tenant: String, outcomes: Shared) {
    let mut client = proto::outbound_client::OutboundClient::new(channel);
    let Ok(stream) = client
        .stream_status(proto::StatusStreamRequest { tenant })
        .await
    else {
        return;
    };
    let mut stream = stream.into_inner();
    while let Ok(Some(s)) = stream.message().await {
        let mut o = outcomes.lock().expect("not poisoned");
        count(
            &mut o.statuses,
            name_of(Some(s.state().as_str_name()), "SEND_STATE_"),
        );
        if s.state() == proto::SendState::Dispatched
            && let Some(customer) = o.template_customers.get(&s.idempotency_key).cloned()
        {
            o.dispatched_customers.insert(customer);
        }
    }
}

/// Registers the simulated agents online with their capacity and queues; returns their ids.
pub async fn register_agents(
    channel: &Channel,
    tenant: &str,
    spec: &Agents,
) -> Result<Vec<String>, tonic::Status> {
    let mut client = proto::agents_client::AgentsClient::new(channel.clone());
    let mut ids = Vec::new();
    for i in 0..spec.count {
        let agent_id = format!("load-agent-{i}");
        client
            .register(proto::RegisterAgentRequest {
                tenant: tenant.to_owned(),
                agent_id: agent_id.clone(),
                presence: proto::Presence::Online as i32,
                capacity: spec.capacity,
                queues: spec.queues.clone(),
            })
            .await?;
        ids.push(agent_id);
    }
    Ok(ids)
}

/// The simulated agents at work: each follows its stream and completes every conversation
/// it is given after a handle time (0.5 to 1.5 times the mean, the same every run). Runs
/// until aborted.
pub async fn agents(
    channel: Channel,
    tenant: String,
    spec: Agents,
    ids: Vec<String>,
    outcomes: Shared,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, agent_id) in ids.into_iter().enumerate() {
        let (channel, tenant, handle_mean, outcomes) = (
            channel.clone(),
            tenant.clone(),
            spec.handle,
            outcomes.clone(),
        );
        tasks.spawn(async move {
            let mut agents = proto::agents_client::AgentsClient::new(channel);
            let Ok(stream) = agents
                .subscribe(proto::AgentRef {
                    tenant: tenant.clone(),
                    agent_id: agent_id.clone(),
                })
                .await
            else {
                eprintln!("agent {agent_id} could not follow its stream");
                return;
            };
            let mut stream = stream.into_inner();
            let mut handled = 0u64;
            let mut work = tokio::task::JoinSet::new();
            while let Ok(Some(event)) = stream.message().await {
                let Some(proto::agent_event::Event::Assigned(a)) = event.event else {
                    continue;
                };
                let Some(conversation) = a.conversation else {
                    continue;
                };
                outcomes.lock().expect("not poisoned").assignments += 1;
                handled += 1;
                let spread = ((handled * 7 + i as u64 * 13) % 11) as f64 / 10.0;
                let handle = handle_mean.mul_f64(0.5 + spread);
                let (mut agents, tenant, agent_id, outcomes) = (
                    agents.clone(),
                    tenant.clone(),
                    agent_id.clone(),
                    outcomes.clone(),
                );
                work.spawn(async move {
                    tokio::time::sleep(handle).await;
                    let done = agents
                        .complete(proto::ConversationAction {
                            tenant,
                            agent_id,
                            conversation_id: conversation.conversation_id,
                        })
                        .await;
                    if done.is_ok() {
                        outcomes.lock().expect("not poisoned").completed += 1;
                    }
                });
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Reads the tenant's quota every `every` until aborted (daily-limit usage over time).
pub async fn sample_quota(
    channel: Channel,
    tenant: String,
    start: Instant,
    every: Duration,
    samples: Arc<Mutex<Vec<LimitSample>>>,
) {
    let mut client = proto::quotas_client::QuotasClient::new(channel);
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Ok(q) = client
            .get(proto::QuotaRef {
                tenant: tenant.clone(),
            })
            .await
        else {
            continue;
        };
        let q = q.into_inner();
        if q.unlimited {
            return;
        }
        samples.lock().expect("not poisoned").push(LimitSample {
            at_s: start.elapsed().as_secs_f64(),
            used: q.used,
            limit: q.messaging_limit,
            threshold: q.batch_threshold,
            batch_mode: q.batch_mode,
            queued: q.queued,
        });
    }
}

/// Waits until the server serves `tenant` (in Kafka mode, once a replica owns its partition
/// and has announced it), at most `within`.
pub async fn wait_until_served(
    channel: &Channel,
    tenant: &str,
    within: Duration,
) -> Result<(), tonic::Status> {
    let mut client = proto::quotas_client::QuotasClient::new(channel.clone());
    let started = Instant::now();
    loop {
        match client
            .get(proto::QuotaRef {
                tenant: tenant.to_owned(),
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == tonic::Code::Unavailable && started.elapsed() < within => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The tenant's queues as the server counts them (SLA attainment, assignments, breaches).
pub async fn queue_stats(channel: Channel, tenant: &str) -> Vec<proto::QueueStats> {
    let mut client = proto::queues_client::QueuesClient::new(channel);
    client
        .stats(proto::QueueStatsRequest {
            tenant: tenant.to_owned(),
            queue: String::new(),
        })
        .await
        .map(|r| r.into_inner().queues)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::scenario::{InboundLoad, RateSpec, WeightedText};

    /// Records the client address and the tenant of every message it is sent.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<(SocketAddr, String)>>>);

    #[tonic::async_trait]
    impl proto::inbound_server::Inbound for Recorder {
        async fn ingest(
            &self,
            request: tonic::Request<proto::InboundMessage>,
        ) -> Result<tonic::Response<proto::RoutingDecision>, tonic::Status> {
            let peer = request.remote_addr().expect("a TCP peer");
            let tenant = request.into_inner().tenant;
            self.0.lock().unwrap().push((peer, tenant));
            Ok(tonic::Response::new(proto::RoutingDecision::default()))
        }
    }

    /// Calls go over every connection in turn and to every tenant in turn.
    #[tokio::test]
    async fn calls_are_spread_over_connections_and_tenants() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let recorder = Recorder::default();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(proto::inbound_server::InboundServer::new(recorder.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let pool = Pool::connect(&addr.to_string(), 3).await.unwrap();
        assert_eq!(pool.len(), 3);
        let tenants = Tenants::new(&["a".to_owned(), "b".to_owned()]);
        let load = InboundLoad {
            rate: RateSpec::Constant { per_sec: 1.0 },
            customers: 10,
            follow_up: 0.0,
            web_chat: 0.0,
            texts: vec![WeightedText {
                text: "hola".into(),
                weight: 1,
            }],
        };
        let call = inbound(&pool, &tenants, Messages::new(&load, 1), &Shared::default());
        for n in 0..12 {
            call(n).await.unwrap();
        }
        let seen = recorder.0.lock().unwrap().clone();
        let peers: HashSet<SocketAddr> = seen.iter().map(|(p, _)| *p).collect();
        assert_eq!(peers.len(), 3, "three connections used: {seen:?}");
        for (n, (_, tenant)) in seen.iter().enumerate() {
            assert_eq!(tenant, tenants.of(n as u64), "call {n}");
        }
        assert_eq!(seen.iter().filter(|(_, t)| t == "b").count(), 6);
        server.abort();
    }
}
