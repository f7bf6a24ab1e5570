//! Authenticated control through a real server: the calls that change state for others need
//! a bearer token with their role; the audit log names the token's principal; open calls need
//! nothing. Also the `switchboard quota` CLI carrying a token.
use switchboard::config::Config;
use switchboard::proto;
use switchboard::proto::quotas_client::QuotasClient;
use switchboard::server::Parts;
use tonic::Code;

mod common;
use common::Server;

const SRE_TOKEN: &str = "s3cr3t-sre-token";
const SUPERVISOR_TOKEN: &str = "s3cr3t-supervisor-token";

fn config() -> Config {
    let mut text = switchboard::config::EMBEDDED_DEFAULT.to_owned();
    for (principal, token, role) in [
        ("ana@sre", SRE_TOKEN, "sre"),
        ("sam@floor", SUPERVISOR_TOKEN, "supervisor"),
    ] {
        text.push_str(&format!(
            "\n[[auth.tokens]]\nprincipal = \"{principal}\"\nsha256 = \"{}\"\nroles = [\"{role}\"]\n",
            switchboard::auth::hash_token(token)
        ));
    }
    Config::from_toml_str(&text).expect("valid")
}

fn override_request() -> proto::SetOverrideRequest {
    proto::SetOverrideRequest {
        tenant: "demo".into(),
        reason: "flash sale".into(),
        actor: "someone-else".into(),
        expires_in_ms: 60_000,
        change: Some(proto::set_override_request::Change::MessagingLimit(500)),
    }
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test]
async fn protected_calls_need_a_token_with_their_role_and_the_audit_names_its_principal() {
    let server = Server::start(config(), Parts::default()).await;
    let channel = server.channel().await;
    let mut quotas = QuotasClient::new(channel.clone());

    // No token.
    let e = quotas.set_override(override_request()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("bearer token"), "{}", e.message());
    // A token that is not configured.
    let e = quotas
        .set_override(with_token(override_request(), "guessed"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // A configured token without the role.
    let e = quotas
        .set_override(with_token(override_request(), SUPERVISOR_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("needs role sre"), "{}", e.message());
    // Nothing changed so far.
    let q = quotas
        .get(proto::QuotaRef {
            tenant: "demo".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(q.overrides.is_empty());
    assert_eq!(q.messaging_limit, 250);

    // The right role: done, and the audit log records the principal, not the claimed actor.
    let o = quotas
        .set_override(with_token(override_request(), SRE_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(o.value, "500");
    let audit = quotas
        .list_audit(proto::ListAuditRequest {
            tenant: "demo".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(
        (audit[0].action.as_str(), audit[0].actor.as_str()),
        ("override_set", "ana@sre")
    );

    // Agent administration is a supervisor's; an agent's own actions and customer traffic are
    // open.
    let mut agents = proto::agents_client::AgentsClient::new(channel.clone());
    let register = || proto::RegisterAgentRequest {
        tenant: "demo".into(),
        agent_id: "ana".into(),
        presence: proto::Presence::Online as i32,
        capacity: 2,
        queues: vec!["support".into()],
    };
    let e = agents.register(register()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = agents
        .register(with_token(register(), SRE_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    agents
        .register(with_token(register(), SUPERVISOR_TOKEN))
        .await
        .unwrap();
    agents
        .set_presence(proto::SetPresenceRequest {
            tenant: "demo".into(),
            agent_id: "ana".into(),
            presence: proto::Presence::Away as i32,
        })
        .await
        .unwrap();
    proto::inbound_client::InboundClient::new(channel)
        .ingest(proto::InboundMessage {
            tenant: "demo".into(),
            customer: "+34612345678".into(),
            channel: proto::Channel::Whatsapp as i32,
            provider_message_id: "wamid.auth-1".into(),
            text: "hola".into(),
            business_number: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();

    // Refusals are counted by reason and method, never by token. (At least once each: the
    // recorder is shared with the other test of this file.)
    let body = common::scrape_until(server.metrics, &[switchboard::telemetry::AUTH_FAILURES]).await;
    for reason in ["missing", "unknown", "role"] {
        let prefix = format!(
            r#"switchboard_auth_failures_total{{reason="{reason}",method="SetOverride"}} "#
        );
        let count: f64 = body
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} in\n{body}"));
        assert!(count >= 1.0);
    }
    assert!(!body.contains(SRE_TOKEN));
    server.stop().await;
}

#[tokio::test]
async fn the_quota_cli_carries_the_token_from_the_environment() {
    let server = Server::start(config(), Parts::default()).await;
    let bin = env!("CARGO_BIN_EXE_switchboard");
    let addr = server.grpc.to_string();
    let run = move |token: Option<&'static str>| {
        let mut cmd = std::process::Command::new(bin);
        cmd.args(["quota", "--addr", &addr, "override", "demo"])
            .args([
                "--limit", "400", "--for", "1h", "--reason", "promo", "--actor", "cli-user",
            ])
            .env_remove("SWITCHBOARD_TOKEN");
        if let Some(t) = token {
            cmd.env("SWITCHBOARD_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let out = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(None)
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bearer token"),
        "{out:?}"
    );
    let out = tokio::task::spawn_blocking(move || run(Some(SRE_TOKEN)))
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("override"));
    server.stop().await;
}
