//! Black-box tests: the real server on 127.0.0.1:0, driven by real gRPC clients.
//!
//! Timeouts below only stop a broken test from hanging; no test asserts how fast anything is.

use switchboard::config::Config;
use switchboard::proto::{
    self, agents_client::AgentsClient, bots_client::BotsClient,
    conversations_client::ConversationsClient, inbound_client::InboundClient,
    queues_client::QueuesClient,
};
use tonic::transport::Channel;
use tonic::{Code, Streaming};

mod common;
use common::{Server, guard};

const TENANT: &str = "acme";

/// `support`: SLA 60 s with 120 s assumed handle time, so with 4 busy slots the 1st waiting
/// conversation is estimated at 30 s and the 2nd at 60 s (within), the 3rd at 90 s (over).
const CONFIG: &str = r#"
    [runtime]
    shards = 2
    tick_interval_ms = 50
    [[tenants]]
    id = "acme"
    default_region = "ES"
    bot = "faq-bot"
    default_queue = "support"
    [[tenants.queues]]
    name = "support"
    sla_target_secs = 60
    max_wait_secs = 600
    initial_handle_secs = 120
    [[tenants.intents]]
    name = "hours"
    mode = "bot"
    keywords = ["horario"]
    [[tenants.intents]]
    name = "return"
    mode = "human"
    queue = "support"
    priority = 40
    keywords = ["devolución"]
    [[tenants]]
    id = "other"
    default_region = "MX"
    default_queue = "q"
    [[tenants.queues]]
    name = "q"
    sla_target_secs = 60
    max_wait_secs = 600
"#;

/// The test server on the shared config (or a variant of it).
async fn start_with(config: &str) -> Server {
    let config = Config::from_toml_str(config).expect("test config is valid");
    Server::start(config, switchboard::server::Parts::default()).await
}

async fn start() -> Server {
    start_with(CONFIG).await
}

fn message(customer: &str, id: &str, text: &str) -> proto::InboundMessage {
    proto::InboundMessage {
        tenant: TENANT.into(),
        customer: customer.into(),
        channel: proto::Channel::Whatsapp as i32,
        provider_message_id: id.into(),
        text: text.into(),
        business_number: String::new(),
        ..Default::default()
    }
}

fn customer(i: usize) -> String {
    format!("+3461234{i:04}")
}

async fn register(agents: &mut AgentsClient<Channel>, id: &str, capacity: u32) -> proto::Agent {
    agents
        .register(proto::RegisterAgentRequest {
            tenant: TENANT.into(),
            agent_id: id.into(),
            presence: proto::Presence::Online as i32,
            capacity,
            queues: vec!["support".into()],
        })
        .await
        .unwrap()
        .into_inner()
}

async fn subscribe(agents: &mut AgentsClient<Channel>, id: &str) -> Streaming<proto::AgentEvent> {
    agents
        .subscribe(proto::AgentRef {
            tenant: TENANT.into(),
            agent_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn next_event(stream: &mut Streaming<proto::AgentEvent>) -> proto::agent_event::Event {
    guard(stream.message())
        .await
        .expect("stream ok")
        .expect("stream open")
        .event
        .expect("event set")
}

fn assigned_id(e: proto::agent_event::Event) -> String {
    match e {
        proto::agent_event::Event::Assigned(a) => a.conversation.unwrap().conversation_id,
        other => panic!("expected an assignment, got {other:?}"),
    }
}

#[tokio::test]
async fn routes_by_sla_load_end_to_end() {
    let server = start().await;
    let ch = server.channel().await;
    let mut inbound = InboundClient::new(ch.clone());
    let mut agents = AgentsClient::new(ch.clone());
    let mut conversations = ConversationsClient::new(ch.clone());
    let mut bots = BotsClient::new(ch.clone());

    for id in ["ana", "ben"] {
        assert_eq!(register(&mut agents, id, 2).await.capacity, 2);
    }
    let mut ana = subscribe(&mut agents, "ana").await;
    let mut ben = subscribe(&mut agents, "ben").await;
    let mut bot = bots
        .subscribe(proto::BotRef {
            tenant: TENANT.into(),
            bot: "faq-bot".into(),
        })
        .await
        .unwrap()
        .into_inner();

    let mut decisions = Vec::new();
    for i in 0..10 {
        let d = inbound
            .ingest(message(
                &customer(i),
                &format!("wamid.{i}"),
                "hola, una pregunta",
            ))
            .await
            .unwrap()
            .into_inner();
        decisions.push(d);
    }
    let outcome: Vec<(proto::Target, proto::Reason)> =
        decisions.iter().map(|d| (d.target(), d.reason())).collect();
    use proto::{Reason::*, Target::*};
    assert_eq!(&outcome[..4], &[(Agent, SlaOk); 4], "4 free slots");
    assert_eq!(&outcome[4..6], &[(Queue, SlaOk); 2], "queued within SLA");
    assert_eq!(&outcome[6..], &[(Bot, SlaSaturated); 4], "overflow");
    assert_eq!(decisions[5].estimated_wait_ms, 60_000);
    assert!(decisions[6].detail.contains("over its SLA target"));

    // 4 assignments on the streams, 2 each, with the conversation's context.
    let mut seen = Vec::new();
    for stream in [&mut ana, &mut ben] {
        for _ in 0..2 {
            match next_event(stream).await {
                proto::agent_event::Event::Assigned(a) => {
                    let c = a.conversation.unwrap();
                    assert_eq!(c.context.len(), 1);
                    assert_eq!(c.context[0].text, "hola, una pregunta");
                    seen.push(c.conversation_id);
                }
                other => panic!("expected an assignment, got {other:?}"),
            }
        }
    }
    seen.sort();
    let mut expected: Vec<String> = decisions[..4]
        .iter()
        .map(|d| d.conversation_id.clone())
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
    // The bot got the 4 overflowed messages.
    for d in &decisions[6..] {
        let e = guard(bot.message()).await.unwrap().unwrap();
        assert_eq!(e.conversation_id, d.conversation_id);
        assert_eq!(e.reason(), SlaSaturated);
    }

    // Completing one frees a slot: the first waiting conversation is assigned to that agent.
    let done = &decisions[0];
    let (holder, stream) = if done.agent_id == "ana" {
        ("ana", &mut ana)
    } else {
        ("ben", &mut ben)
    };
    let after = agents
        .complete(proto::ConversationAction {
            tenant: TENANT.into(),
            agent_id: holder.into(),
            conversation_id: done.conversation_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.conversations.len(), 2, "back at capacity");
    assert!(after.conversations.contains(&decisions[4].conversation_id));
    assert!(!after.conversations.contains(&done.conversation_id));
    assert_eq!(
        assigned_id(next_event(stream).await),
        decisions[4].conversation_id
    );

    // Pause automation on a bot conversation: its next message goes to a human.
    let bot_conv = &decisions[7].conversation_id;
    let c = conversations
        .pause_automation(proto::ConversationRef {
            tenant: TENANT.into(),
            conversation_id: bot_conv.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(c.automation_paused);
    assert_eq!(c.state(), proto::ConversationState::Bot);
    let d = inbound
        .ingest(message(&customer(7), "wamid.7b", "¿cuál es el horario?"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.reason(), AutomationPaused);
    assert_eq!(d.target(), Queue, "a person, through the queue");
    assert_eq!(d.intent, "hours", "classified, but people decide");

    // Queue stats see it all.
    let stats = QueuesClient::new(ch.clone())
        .stats(proto::QueueStatsRequest {
            tenant: TENANT.into(),
            queue: "support".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .queues
        .remove(0);
    assert_eq!(stats.depth, 2, "decision 5 and the paused conversation");
    assert_eq!(stats.assignments_total, 5);
    assert_eq!(stats.online_agents, 2);

    server.stop().await;
}

#[tokio::test]
async fn follow_ups_and_duplicates() {
    let server = start().await;
    let ch = server.channel().await;
    let mut inbound = InboundClient::new(ch.clone());
    let mut agents = AgentsClient::new(ch.clone());
    register(&mut agents, "ana", 1).await;
    let first = inbound
        .ingest(message("+34 612 345 678", "wamid.A", "hola"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.agent_id, "ana");
    // Subscribing after the assignment still shows it (snapshot first).
    let mut ana = subscribe(&mut agents, "ana").await;
    assert_eq!(
        assigned_id(next_event(&mut ana).await),
        first.conversation_id
    );

    // Same customer on web chat, national format: same conversation, to the same agent.
    let mut web = message("612345678", "web.1", "sigo por aquí");
    web.channel = proto::Channel::Webchat as i32;
    let follow = inbound.ingest(web).await.unwrap().into_inner();
    assert_eq!(follow.conversation_id, first.conversation_id);
    assert_eq!(follow.reason(), proto::Reason::AssignedAgent);
    match next_event(&mut ana).await {
        proto::agent_event::Event::Message(m) => {
            assert_eq!(m.conversation_id, first.conversation_id);
            assert_eq!(m.message.unwrap().channel(), proto::Channel::Webchat);
        }
        other => panic!("expected the follow-up, got {other:?}"),
    }
    // Meta retries the webhook: nothing is routed twice.
    let dup = inbound
        .ingest(message("+34612345678", "wamid.A", "hola"))
        .await
        .unwrap()
        .into_inner();
    assert!(dup.duplicate);
    assert_eq!(dup.target(), proto::Target::None);
    let c = ConversationsClient::new(ch.clone())
        .get(proto::ConversationRef {
            tenant: TENANT.into(),
            conversation_id: first.conversation_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.context.len(), 2);
    assert_eq!(c.customer, "+34612345678");
    assert!(c.window_open);
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_status_and_changes_nothing() {
    let server = start().await;
    let ch = server.channel().await;
    let mut inbound = InboundClient::new(ch.clone());
    let mut agents = AgentsClient::new(ch.clone());
    let mut conversations = ConversationsClient::new(ch.clone());

    let cases: Vec<(proto::InboundMessage, Code, &str)> = vec![
        (
            message("not-a-number", "m1", "hola"),
            Code::InvalidArgument,
            "customer",
        ),
        (
            message(&customer(1), "m2", ""),
            Code::InvalidArgument,
            "text",
        ),
        (
            message(&customer(1), "m3", &"x".repeat(5_000)),
            Code::InvalidArgument,
            "text",
        ),
        (
            proto::InboundMessage {
                channel: 42,
                ..message(&customer(1), "m4", "hola")
            },
            Code::InvalidArgument,
            "channel: has unknown value 42",
        ),
        (
            proto::InboundMessage {
                channel: 0,
                ..message(&customer(1), "m5", "hola")
            },
            Code::InvalidArgument,
            "channel: is required",
        ),
        (
            proto::InboundMessage {
                tenant: "nobody".into(),
                ..message(&customer(1), "m6", "hola")
            },
            Code::NotFound,
            "tenant \"nobody\"",
        ),
        (
            message(&customer(1), "", "hola"),
            Code::InvalidArgument,
            "provider_message_id",
        ),
    ];
    for (request, code, needle) in cases {
        let status = inbound.ingest(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().contains(needle),
            "{needle:?} in {status:?}"
        );
    }

    let register = |capacity, queues: Vec<&str>, presence: i32| proto::RegisterAgentRequest {
        tenant: TENANT.into(),
        agent_id: "ana".into(),
        presence,
        capacity,
        queues: queues.into_iter().map(String::from).collect(),
    };
    let online = proto::Presence::Online as i32;
    let status = agents
        .register(register(0, vec!["support"], online))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("capacity:"), "{status:?}");
    let status = agents
        .register(register(1, vec!["nope"], online))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("queues: names queue \"nope\""),
        "{status:?}"
    );
    let status = agents
        .register(register(1, vec!["support"], 9))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("presence: has unknown value 9"),
        "{status:?}"
    );

    let action = proto::ConversationAction {
        tenant: TENANT.into(),
        agent_id: "ghost".into(),
        conversation_id: "c-1".into(),
    };
    let status = agents.complete(action.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = agents
        .complete(proto::ConversationAction {
            conversation_id: "42".into(),
            ..action
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("conversation_id"), "{status:?}");
    let status = conversations
        .get(proto::ConversationRef {
            tenant: TENANT.into(),
            conversation_id: "c-99".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let status = agents
        .subscribe(proto::AgentRef {
            tenant: TENANT.into(),
            agent_id: "ghost".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // Still serving, and nothing of the above left a trace.
    let d = inbound
        .ingest(message(&customer(1), "m2", "hola"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        d.conversation_id, "c-1",
        "refused messages opened no conversation"
    );
    assert!(
        !d.duplicate,
        "a refused message id can be sent again, fixed"
    );
    let status = agents
        .get(proto::AgentRef {
            tenant: TENANT.into(),
            agent_id: "ana".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "refused registrations created no agent"
    );
    server.stop().await;
}

#[tokio::test]
async fn health_reflection_and_metrics() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = start().await;
    let ch = server.channel().await;

    let mut health = HealthClient::new(ch.clone());
    for service in ["", "switchboard.v1.Inbound", "switchboard.v1.Agents"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(ch.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = guard(responses.message()).await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("expected a service list, got {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in switchboard::server::SERVICES {
        assert!(names.iter().any(|n| n == service), "{service} in {names:?}");
    }
    assert!(names.iter().any(|n| n == "grpc.health.v1.Health"));

    // The same through v1alpha, the only version Python's grpcio-reflection speaks.
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = ServerReflectionClient::new(ch.clone())
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let response = guard(responses.message()).await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("expected a service list (v1alpha), got {response:?}");
        };
        let alpha: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for service in switchboard::server::SERVICES {
            assert!(alpha.iter().any(|n| n == service), "{service} in {alpha:?}");
        }
        assert!(alpha.iter().any(|n| n == "grpc.health.v1.Health"));
    }

    // Some traffic so every family has a sample, then scrape.
    let mut agents = AgentsClient::new(ch.clone());
    register(&mut agents, "ana", 1).await;
    let mut inbound = InboundClient::new(ch.clone());
    for i in 0..3 {
        inbound
            .ingest(message(&customer(i), &format!("h{i}"), "hola"))
            .await
            .unwrap();
    }
    inbound
        .ingest(message("bad", "hx", "hola"))
        .await
        .unwrap_err();
    // Queue gauges are refreshed on ticks (every 50 ms here): poll until every family shows.
    // Tests share the process's recorder, so only presence is asserted, never a gauge value.
    let families = [
        switchboard::telemetry::INBOUND_MESSAGES,
        switchboard::telemetry::ROUTING_DECISIONS,
        switchboard::telemetry::DECISION_DURATION,
        switchboard::telemetry::QUEUE_DEPTH,
        switchboard::telemetry::QUEUE_AVAILABLE_AGENTS,
        switchboard::telemetry::QUEUE_ESTIMATED_WAIT,
        switchboard::telemetry::QUEUE_SLA_ATTAINMENT,
        switchboard::telemetry::ASSIGNMENTS,
    ];
    let body = common::scrape_until(server.metrics, &families).await;
    assert!(body.contains(
        r#"switchboard_inbound_messages_total{outcome="rejected",error_type="invalid_argument",channel="whatsapp"}"#
    ));
    assert!(body.contains(
        r#"switchboard_routing_decisions_total{tenant="acme",target="agent",reason="sla_ok",channel="whatsapp"}"#
    ));
    assert!(
        !body.contains("+3461234"),
        "no customer number in any metric"
    );
    server.stop().await;
}

#[tokio::test]
async fn shutdown_reports_not_serving_and_ends_streams() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    // A short grace period: the health watch below is itself an open stream.
    let server = start_with(&CONFIG.replace(
        "tick_interval_ms = 50",
        "tick_interval_ms = 50\nshutdown_grace_ms = 1000",
    ))
    .await;
    let ch = server.channel().await;
    let mut agents = AgentsClient::new(ch.clone());
    register(&mut agents, "ana", 1).await;
    let mut stream = subscribe(&mut agents, "ana").await;
    let mut watch = HealthClient::new(ch.clone())
        .watch(HealthCheckRequest {
            service: "switchboard.v1.Inbound".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = guard(watch.message()).await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    // An open agent stream must not hold shutdown hostage, and health says NOT_SERVING first.
    server.stop().await;
    let end = guard(stream.message()).await;
    assert!(matches!(end, Ok(None) | Err(_)), "stream ended: {end:?}");
    let next = guard(watch.message()).await.unwrap().unwrap();
    assert_eq!(next.status(), ServingStatus::NotServing);
}
