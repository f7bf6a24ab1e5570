//! The webhook endpoint: where Meta posts WhatsApp webhooks (`/webhooks/whatsapp` on
//! `webhook_addr`), with Meta's own conventions.
//!
//! - `GET`: the verification handshake. `hub.mode=subscribe` and a `hub.verify_token` equal
//!   to a configured app's token: `200` with `hub.challenge` as the body; anything else `403`.
//! - `POST`: `X-Hub-Signature-256: sha256=<hex>` must be the HMAC-SHA256 of the **raw body**
//!   with a configured app's secret (compared in constant time): missing `401`, wrong `401`,
//!   counted, nothing forwarded. A body over `webhook.max_body_bytes`: `413`.
//! - A signed payload is then stored, and only then answered `200`:
//!   - Kafka mode: the raw payload goes to `kafka.webhooks_topic` keyed by its tenant (a
//!     payload naming several tenants: one record per tenant, with the tenant in the
//!     `switchboard.tenant` header, as the Kafka input copies them), and the answer waits for
//!     the broker's acknowledgement, at most `webhook.ack_timeout_ms`; no acknowledgement:
//!     `503`, and Meta retries.
//!   - Without Kafka: its messages are routed and its statuses fed to the quotas, straight
//!     in the shards (as the Kafka input does).
//! - A signed payload that is not a webhook or names no configured number is answered `200`
//!   (retrying cannot fix it) and kept as a dead letter with the reason (Kafka mode; without
//!   Kafka it is logged and counted). So are the items of an app naming another app's tenant.
//! - In Kafka mode the endpoint reads only the outer shape and the business numbers
//!   (`wire::webhook::addressed`): the Kafka input reads the items, and dead-letters what it
//!   cannot read, with the reason.
//!
//! Secrets are [`Secret`]s: never logged. The customer's number is never logged in full.
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use hmac::{Hmac, Mac};
use rdkafka::message::{Header, OwnedHeaders};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::config::cloud_api::Secret;
use crate::core::Command;
use crate::kafka::outbox::{Origin, Outbox};
use crate::model::TenantId;
use crate::runtime::{CallError, Runtime};
use crate::telemetry;
use crate::wire::webhook::{self, Item, NumberDirectory, WebhookBatch};

/// The path Meta is pointed at.
pub const PATH: &str = "/webhooks/whatsapp";

/// Where signed payloads go.
pub enum Intake {
    /// Kafka mode: the webhooks topic, answered after the broker's acknowledgement.
    Kafka {
        outbox: Arc<Outbox>,
        topic: String,
        ack_timeout: Duration,
    },
    /// Without Kafka: the shards.
    Shards(Runtime),
}

/// One Meta app: its secrets and the tenants it may post about.
struct App {
    name: String,
    /// The HMAC keyed with the app secret, cloned for each post.
    mac: Hmac<Sha256>,
    verify_token: Secret,
    /// None: every tenant.
    tenants: Option<BTreeSet<TenantId>>,
    /// Its count of stored posts.
    accepted: std::sync::OnceLock<metrics::Counter>,
}

impl App {
    fn allows(&self, tenant: &TenantId) -> bool {
        self.tenants.as_ref().is_none_or(|t| t.contains(tenant))
    }
}

/// The endpoint's state (module docs).
pub struct Endpoint {
    apps: Vec<App>,
    numbers: NumberDirectory,
    max_body: usize,
    intake: Intake,
}

/// An answer: status and a short body saying what happened or what to do.
type Answer = (StatusCode, String);

impl Endpoint {
    /// The endpoint `config` asks for; None when no app secret is configured.
    pub fn new(config: &Config, intake: Intake) -> Option<Self> {
        let w = &config.webhook;
        if !w.enabled() {
            return None;
        }
        let apps = w
            .resolved
            .iter()
            .map(|a| App {
                name: a.name.clone(),
                mac: Hmac::new_from_slice(a.app_secret.expose().as_bytes())
                    .expect("HMAC takes a key of any length"),
                verify_token: a.verify_token.clone(),
                tenants: (!a.tenants.is_empty())
                    .then(|| a.tenants.iter().map(TenantId::new).collect()),
                accepted: std::sync::OnceLock::new(),
            })
            .collect();
        Some(Self {
            apps,
            numbers: NumberDirectory::new(config),
            max_body: w.max_body_bytes,
            intake,
        })
    }

    /// The app whose secret signed `body`, if any.
    fn signer(&self, signature: &str, body: &[u8]) -> Option<&App> {
        let mut digest = [0u8; 32]; // SHA-256
        hex::decode_to_slice(signature.strip_prefix("sha256=")?, &mut digest).ok()?;
        self.apps.iter().find(|app| {
            let mut mac = app.mac.clone();
            mac.update(body);
            mac.verify_slice(&digest).is_ok()
        })
    }

    /// Meta's verification handshake.
    fn verify(&self, query: &HashMap<String, String>) -> Answer {
        let given = query
            .get("hub.verify_token")
            .map_or(&[][..], |t| t.as_bytes());
        let app = self
            .apps
            .iter()
            .find(|app| bool::from(app.verify_token.expose().as_bytes().ct_eq(given)));
        match (query.get("hub.mode").map(String::as_str), app) {
            (Some("subscribe"), Some(app)) => {
                telemetry::webhook_request("verified", &app.name, "");
                let challenge = query.get("hub.challenge").cloned().unwrap_or_default();
                (StatusCode::OK, challenge)
            }
            _ => {
                telemetry::webhook_request(
                    "verify_refused",
                    "none",
                    "hub.mode is not subscribe or hub.verify_token matches no app",
                );
                (
                    StatusCode::FORBIDDEN,
                    "verification refused: hub.mode must be subscribe and hub.verify_token the \
                     configured verify token\n"
                        .into(),
                )
            }
        }
    }

    /// A post: size, signature, then storing it (module docs).
    async fn post(&self, headers: &HeaderMap, body: Body) -> Answer {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let body = match declared {
            Some(n) if n > self.max_body => None,
            _ => axum::body::to_bytes(body, self.max_body).await.ok(),
        };
        let Some(body) = body else {
            telemetry::webhook_request("too_large", "none", "body over webhook.max_body_bytes");
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "body larger than {} bytes (webhook.max_body_bytes)\n",
                    self.max_body
                ),
            );
        };
        let Some(signature) = headers
            .get("x-hub-signature-256")
            .and_then(|v| v.to_str().ok())
        else {
            telemetry::webhook_request(
                "missing_signature",
                "none",
                "no X-Hub-Signature-256 header",
            );
            return (
                StatusCode::UNAUTHORIZED,
                "missing X-Hub-Signature-256: sign the raw body with the app secret\n".into(),
            );
        };
        let Some(app) = self.signer(signature, &body) else {
            telemetry::webhook_request(
                "bad_signature",
                "none",
                "X-Hub-Signature-256 matches no configured app secret",
            );
            return (
                StatusCode::UNAUTHORIZED,
                "X-Hub-Signature-256 does not match the body: check the app secret\n".into(),
            );
        };
        let started = crate::clock::Stopwatch::start();
        let answer = self.store(app, body).await;
        telemetry::webhook_answered(started.elapsed());
        answer
    }

    /// A signed payload, stored (module docs).
    async fn store(&self, app: &App, body: Bytes) -> Answer {
        // Kafka mode keys each record by tenant and leaves the items to the Kafka input;
        // without Kafka the items are applied here.
        let read = match &self.intake {
            Intake::Kafka { .. } => webhook::addressed(&body)
                .map(|numbers| (self.numbers.tenants_addressed(&numbers), None)),
            Intake::Shards(_) => {
                webhook::parse(&body).map(|batch| (self.numbers.tenants(&batch), Some(batch)))
            }
        };
        let (named, batch) = match read {
            Ok(read) => read,
            Err(e) => {
                return self
                    .unreadable(app, &body, e.reason(), &e.to_string())
                    .await;
            }
        };
        if named.is_empty() {
            let why = "names no business number configured for a tenant";
            return self
                .unreadable(app, &body, "unknown_business_number", why)
                .await;
        }
        let (allowed, refused): (Vec<_>, Vec<_>) = named.into_iter().partition(|t| app.allows(t));
        if !refused.is_empty() {
            let why = format!(
                "app {:?} is not configured for tenant(s) {:?} (webhook.apps[].tenants)",
                app.name,
                refused.iter().map(TenantId::as_str).collect::<Vec<_>>()
            );
            let answer = self.unreadable(app, &body, "tenant_not_in_app", &why).await;
            if allowed.is_empty() || answer.0 != StatusCode::OK {
                return answer;
            }
        }
        let stored = match &self.intake {
            Intake::Kafka {
                outbox,
                topic,
                ack_timeout,
            } => {
                let copies = !refused.is_empty() || allowed.len() > 1;
                let mut last = 0;
                for tenant in &allowed {
                    let headers = copies.then(|| {
                        OwnedHeaders::new().insert(Header {
                            key: crate::kafka::TENANT_HEADER,
                            value: Some(tenant.as_str()),
                        })
                    });
                    last = outbox.produce(topic, Some(tenant.as_str().as_bytes()), &body, headers);
                }
                outbox.settled(last, *ack_timeout).await
            }
            Intake::Shards(runtime) => {
                let batch = batch.expect("read whole without Kafka");
                self.apply(runtime, batch, &allowed).await
            }
        };
        match stored {
            Ok(()) => {
                telemetry::webhook_accepted(&app.name, &app.accepted);
                (StatusCode::OK, "stored\n".into())
            }
            Err(why) => unavailable(app, &why),
        }
    }

    /// Without Kafka: the payload's items for `tenants`, applied in the shards.
    async fn apply(
        &self,
        runtime: &Runtime,
        batch: WebhookBatch,
        tenants: &[TenantId],
    ) -> Result<(), String> {
        for item in self.numbers.plan(batch, |t| tenants.contains(t)) {
            let command = match item {
                Item::Route(inbound) => Command::Ingest(inbound),
                Item::Status {
                    tenant,
                    id,
                    outcome,
                } => Command::ProviderResult {
                    tenant,
                    id,
                    outcome,
                },
                Item::Skip(why) => {
                    telemetry::kafka_status(why);
                    continue;
                }
                Item::Dead { wamid, error } => {
                    tracing::warn!(wamid, reason = error.reason(), error = %error, "webhook item not handled");
                    continue;
                }
            };
            let status = matches!(command, Command::ProviderResult { .. });
            match runtime.call(command).await {
                Ok(_) if status => telemetry::kafka_status("matched"),
                Ok(_) => {}
                Err(CallError::Unavailable) => return Err("the service is stopping".into()),
                // A send the shard does not know, a message it refused: nothing a retry fixes.
                Err(e) if status => {
                    tracing::debug!(error = %e, "webhook status not fed back");
                    telemetry::kafka_status("unmatched");
                }
                Err(e) => tracing::warn!(error = %e, "webhook message not routed"),
            }
        }
        Ok(())
    }

    /// A signed payload no retry can fix: a dead letter (Kafka mode) or a log line, and 200
    /// once the dead letter is acknowledged.
    async fn unreadable(&self, app: &App, body: &[u8], reason: &'static str, why: &str) -> Answer {
        if let Intake::Kafka {
            outbox,
            topic,
            ack_timeout,
        } = &self.intake
        {
            let origin = Origin {
                topic,
                at: None,
                key: None,
                reason,
                error: why,
                item: None,
            };
            let seq = outbox.dead_letter(&origin, body);
            if let Err(e) = outbox.settled(seq, *ack_timeout).await {
                return unavailable(app, &e);
            }
        }
        telemetry::webhook_request("unreadable", &app.name, why);
        (
            StatusCode::OK,
            format!("not stored: {why} ({reason}); kept as a dead letter\n"),
        )
    }
}

fn unavailable(app: &App, why: &str) -> Answer {
    telemetry::webhook_request("unavailable", &app.name, why);
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("not stored ({why}); retry\n"),
    )
}

/// The endpoint's routes.
pub fn router(endpoint: Arc<Endpoint>) -> axum::Router {
    use axum::routing::get;
    let get_handler = |State(e): State<Arc<Endpoint>>, Query(q): Query<HashMap<String, String>>| async move {
        e.verify(&q)
    };
    // The whole request, not the `HeaderMap` extractor (which copies every header).
    let post_handler = |State(e): State<Arc<Endpoint>>, request: axum::extract::Request| async move {
        let (parts, body) = request.into_parts();
        e.post(&parts.headers, body).await
    };
    axum::Router::new()
        .route(PATH, get(get_handler).post(post_handler))
        .with_state(endpoint)
}

/// Serves the endpoint on `listener` until `shutdown`; requests in flight finish first.
pub async fn serve<L>(
    listener: L,
    endpoint: Arc<Endpoint>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, router(endpoint))
        .with_graceful_shutdown(shutdown)
        .await
}
