//! The WhatsApp Cloud API sender: posts each dispatched send to the Graph API's
//! `/{version}/{phone-number-id}/messages` with the configured bearer token, and turns the
//! answer into the provider outcome the quotas react to.
//!
//! - **Bodies** ([`CloudApiSender::body`]): a session send is a text message; a template send
//!   names its template, its language and its components with their parameters, exactly as
//!   the Graph API takes them (a send by name only goes in `template_language`). Each carries
//!   `biz_opaque_callback_data`, by which status webhooks find the send.
//! - **Answers**: 200 with a message id: sent. A Cloud API error body (`error.code`): that
//!   code — 130429 (the number backs off), 131056 (the pair backs off), 131047 (the window is
//!   closed: template required), 131048 (marketing paused, alert), 131057 (the number is held
//!   for a minute), anything else a provider error. A 5xx without an error body: its HTTP
//!   status as the code; no answer within `timeout_ms` or no connection: 408.
//! - **Retries**, with exponential backoff and full jitter (`backoff_base_ms` doubling up to
//!   `backoff_max_ms`), at most `max_retries` times: 5xx, timeouts and connection errors, and
//!   131057 ("hold and retry"). Never: 130429, 131056, 131047, 131048 or any other 4xx — the
//!   quotas react to those and the caller decides. The platform has no idempotency key, so a
//!   retried timeout can deliver a message twice (at-least-once, said in docs/sends.md).
//! - **Failover**: with `backup_url` set, both endpoints are probed every
//!   `probe_interval_ms` (`GET /{version}/{phone-number-id}?fields=id`). After
//!   `probe_failures` (3) consecutive probes of the primary slower than `probe_slow_ms`
//!   (1.5 s) or failing, sends go to the backup — unless the backup is failing its own probes
//!   as badly —; after as many consecutive healthy probes of the primary, they go back to it.
//!
//! The token is never logged or printed (`Secret`), and customer numbers only masked.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use reqwest::header::HeaderValue;

use crate::config::Category;
pub use crate::config::cloud_api::{CloudApiConfig, Secret};
use crate::core::quota::{Dispatch, ProviderOutcome};
use crate::model::{ComponentKind, TemplateComponent, TemplateParameter, TenantId};
use crate::sender::{SendFuture, Sender};
use serde_json::{Value, json};

/// The code given to a send that timed out or could not connect after its retries.
pub const TIMEOUT_CODE: u32 = 408;

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Sent,
    /// Worth another try (5xx, timeout, connection, 131057).
    Retry {
        code: u32,
    },
    /// Final: the quotas react to the code.
    Fail {
        code: u32,
    },
}

/// Reads an answer: HTTP status and body.
pub fn classify(status: u16, body: &str) -> Attempt {
    if (200..=299).contains(&status) {
        return Attempt::Sent;
    }
    // Only `error.code` is read: the rest of the answer is skipped, not built.
    #[derive(serde::Deserialize)]
    struct Answer {
        error: Error,
    }
    #[derive(serde::Deserialize)]
    struct Error {
        code: u64,
    }
    let code = serde_json::from_str::<Answer>(body)
        .ok()
        .and_then(|a| u32::try_from(a.error.code).ok());
    match (status, code) {
        (_, Some(131057)) => Attempt::Retry { code: 131057 },
        (500..=599, None) => Attempt::Retry {
            code: u32::from(status),
        },
        // A 5xx with a Cloud API error body: Meta's transient errors (131000 "something went
        // wrong", 131016 "service unavailable", ...) are worth another try too.
        (500..=599, Some(code)) => Attempt::Retry { code },
        (_, Some(code)) => Attempt::Fail { code },
        (other, None) => Attempt::Fail {
            code: u32::from(other),
        },
    }
}

/// Which endpoint sends go to, from the probes.
#[derive(Debug, Default)]
pub struct Failover {
    on_backup: AtomicBool,
    slow_streak: AtomicU32,
    healthy_streak: AtomicU32,
    backup_slow_streak: AtomicU32,
    pub failovers: AtomicU32,
    pub failbacks: AtomicU32,
}

impl Failover {
    pub fn on_backup(&self) -> bool {
        self.on_backup.load(Ordering::Acquire)
    }

    /// A probe of the backup: a backup that failed `needed` probes in a row is not failed
    /// over to.
    pub fn backup_probe(&self, healthy: bool) {
        if healthy {
            self.backup_slow_streak.store(0, Ordering::Release);
        } else {
            self.backup_slow_streak.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// A probe of the primary: healthy (answered within the threshold) or not. After
    /// `needed` in a row of the other kind, the active endpoint changes (to a backup that is
    /// not failing its own probes as long). Returns the change.
    pub fn primary_probe(&self, healthy: bool, needed: u32) -> Option<bool> {
        if healthy {
            self.slow_streak.store(0, Ordering::Release);
            let n = self.healthy_streak.fetch_add(1, Ordering::AcqRel) + 1;
            if n >= needed && self.on_backup.swap(false, Ordering::AcqRel) {
                self.failbacks.fetch_add(1, Ordering::Relaxed);
                return Some(false);
            }
        } else {
            self.healthy_streak.store(0, Ordering::Release);
            let n = self.slow_streak.fetch_add(1, Ordering::AcqRel) + 1;
            let backup_ok = self.backup_slow_streak.load(Ordering::Acquire) < needed;
            if n >= needed && backup_ok && !self.on_backup.swap(true, Ordering::AcqRel) {
                self.failovers.fetch_add(1, Ordering::Relaxed);
                return Some(true);
            }
        }
        None
    }
}

/// The sender (see the module docs).
pub struct CloudApiSender {
    client: reqwest::Client,
    config: Arc<CloudApiConfig>,
    pub failover: Arc<Failover>,
    probes: tokio_util::sync::CancellationToken,
    /// `Bearer <token>` of the shared token, then of each tenant with its own, built once
    /// (marked sensitive: never logged). None: the token is not a valid header value, and
    /// each request says so.
    authorization: (
        Option<HeaderValue>,
        std::collections::HashMap<String, Option<HeaderValue>>,
    ),
    /// Each number's messages URL on the primary base, then on the backup, parsed once; at
    /// most [`MAX_URLS`] each (a dispatch from an unknown number is sent, and fails, like any
    /// other).
    urls: std::sync::Mutex<[std::collections::HashMap<String, reqwest::Url>; 2]>,
}

/// Bound of [`CloudApiSender`]'s URL cache: cleared when full.
const MAX_URLS: usize = 4_096;

/// `Bearer <token>`, sensitive; None when it is not a valid header value.
fn bearer(token: &Secret) -> Option<HeaderValue> {
    let mut value = HeaderValue::try_from(format!("Bearer {}", token.expose())).ok()?;
    value.set_sensitive(true);
    Some(value)
}

impl Drop for CloudApiSender {
    fn drop(&mut self) {
        self.probes.cancel();
    }
}

impl CloudApiSender {
    /// The sender `config` asks for (`[cloud_api] enabled`), probing the first configured
    /// number unless `cloud_api.probe_number` names one; None when it is off.
    pub fn from_config(config: &crate::config::Config) -> Result<Option<Self>, reqwest::Error> {
        if !config.cloud_api.enabled {
            return Ok(None);
        }
        let first_number = config
            .tenants
            .iter()
            .flat_map(|t| t.numbers.iter())
            .map(|n| n.id.to_string())
            .next()
            .unwrap_or_default();
        Self::start(config.cloud_api.clone(), &first_number).map(Some)
    }

    /// Starts the sender and its probes (they stop when it is dropped). `probe_number` is
    /// the phone-number id probed when the config names none.
    pub fn start(config: CloudApiConfig, probe_number: &str) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms))
            // The Graph API does not redirect a send; a 3xx is an answer like any other
            // (and following it would repeat a POST somewhere else).
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let config = Arc::new(config);
        let failover = Arc::new(Failover::default());
        let probes = tokio_util::sync::CancellationToken::new();
        let number = config
            .probe_number
            .clone()
            .unwrap_or_else(|| probe_number.to_owned());
        if config.backup_url.is_some() {
            tokio::spawn(probe_primary(
                client.clone(),
                config.clone(),
                number,
                failover.clone(),
                probes.clone(),
            ));
        }
        let authorization = (
            bearer(&config.token),
            config
                .tenant_tokens
                .iter()
                .map(|(tenant, token)| (tenant.clone(), bearer(token)))
                .collect(),
        );
        Ok(Self {
            client,
            config,
            failover,
            probes,
            authorization,
            urls: std::sync::Mutex::default(),
        })
    }

    /// The messages URL of business number `from` on the current base.
    fn url(&self, from: &str) -> Option<reqwest::Url> {
        let mut urls = self
            .urls
            .lock()
            .expect("no panic while holding the URL cache");
        let urls = &mut urls[usize::from(self.failover.on_backup())];
        if let Some(url) = urls.get(from) {
            return Some(url.clone());
        }
        let url = reqwest::Url::parse(&format!(
            "{}/{}/{}/messages",
            self.base().trim_end_matches('/'),
            self.config.api_version,
            from
        ))
        .ok()?;
        if urls.len() >= MAX_URLS {
            urls.clear();
        }
        urls.insert(from.to_owned(), url.clone());
        Some(url)
    }

    fn base(&self) -> &str {
        match (&self.config.backup_url, self.failover.on_backup()) {
            (Some(backup), true) => backup,
            _ => &self.config.base_url,
        }
    }

    /// The Graph API body for `m`: a session message as text; a template with its language
    /// and components, or (a template send by name only) the named template in
    /// `template_language`.
    pub fn body(config: &CloudApiConfig, tenant: &TenantId, m: &Dispatch) -> serde_json::Value {
        serde_json::from_slice(&Self::encoded_body(config, tenant, m))
            .expect("an encoded body reads back")
    }

    /// [`CloudApiSender::body`], encoded: what is posted (once per send, for every attempt).
    fn encoded_body(config: &CloudApiConfig, tenant: &TenantId, m: &Dispatch) -> bytes::Bytes {
        let (kind, text, template) = match m.category {
            Category::Session => ("text", Some(Text { body: &m.content }), None),
            _ => {
                let template = match m.template.as_deref() {
                    Some(t) => Template::new(&t.name, &t.language, &t.components),
                    None => Template::new(&m.content, &config.template_language, &[]),
                };
                ("template", None, Some(template))
            }
        };
        let message = Message {
            messaging_product: "whatsapp",
            recipient_type: "individual",
            to: m.to.as_e164().trim_start_matches('+'),
            kind,
            text,
            template,
            biz_opaque_callback_data: crate::wire::webhook::callback_data(tenant, m.id),
        };
        serde_json::to_vec(&message)
            .expect("a message body serializes")
            .into()
    }

    /// One POST with `tenant`'s token: what it came to, and the message id of a 2xx.
    async fn attempt(
        &self,
        tenant: &TenantId,
        from: &str,
        body: bytes::Bytes,
    ) -> (Attempt, String) {
        let Some(url) = self.url(from) else {
            // Not a URL (a base_url the config check let through, or a number that breaks
            // the path): an answer of no kind, retried like one.
            return (Attempt::Retry { code: TIMEOUT_CODE }, String::new());
        };
        let request = self.client.post(url);
        let (shared, own) = &self.authorization;
        let request = match own.get(tenant.as_str()).unwrap_or(shared) {
            Some(value) => request.header(reqwest::header::AUTHORIZATION, value.clone()),
            None => request.bearer_auth(self.config.token_for(tenant.as_str()).expose()),
        };
        let answer = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        match answer {
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                let attempt = classify(status, &text);
                let id = match attempt {
                    Attempt::Sent => message_id(&text),
                    _ => String::new(),
                };
                (attempt, id)
            }
            // No answer: a timeout, no connection, a connection dropped mid-request.
            Err(_) => (Attempt::Retry { code: TIMEOUT_CODE }, String::new()),
        }
    }

    /// Posts `m`, retrying what is retryable; the final outcome.
    pub async fn deliver(&self, tenant: &TenantId, m: &Dispatch) -> ProviderOutcome {
        self.deliver_all(tenant, m).await.outcome
    }

    /// Posts `m`, retrying what is retryable: the final outcome, the provider's message id
    /// (sent) and the attempts made.
    pub async fn deliver_all(&self, tenant: &TenantId, m: &Dispatch) -> Delivery {
        let body = Self::encoded_body(&self.config, tenant, m);
        let mut tries = 0;
        loop {
            let (outcome, message_id) = self.attempt(tenant, &m.from, body.clone()).await;
            crate::telemetry::provider_attempt(match outcome {
                Attempt::Sent => "sent",
                Attempt::Retry { .. } => "retryable",
                Attempt::Fail { .. } => "failed",
            });
            let done = |outcome| Delivery {
                outcome,
                message_id,
                attempts: tries + 1,
            };
            match outcome {
                Attempt::Sent => return done(ProviderOutcome::Sent),
                Attempt::Fail { code } => return done(ProviderOutcome::Failed { code }),
                Attempt::Retry { code } if tries >= self.config.max_retries => {
                    tracing::warn!(send = %m.id, to = %m.to, code, tries, "send failed after its retries");
                    return done(ProviderOutcome::Failed { code });
                }
                Attempt::Retry { code } => {
                    tries += 1;
                    let wait = backoff(&self.config, tries, m.id.0);
                    tracing::debug!(send = %m.id, code, attempt = tries, ?wait, "retrying a send");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

/// A send's final answer (see [`CloudApiSender::deliver_all`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub outcome: ProviderOutcome,
    /// The Cloud API's `wamid` for a sent message; empty otherwise.
    pub message_id: String,
    /// HTTP attempts made, retries included.
    pub attempts: u32,
}

/// The message id of a 2xx answer (`messages[0].id`); empty if it has none.
fn message_id(body: &str) -> String {
    // Only the id is read: the rest of the answer is skipped, not built as a `Value`.
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        #[serde(borrow, default)]
        messages: Vec<Message<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Message<'a> {
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
    }
    serde_json::from_str::<Answer<'_>>(body)
        .ok()
        .and_then(|a| a.messages.into_iter().next())
        .map(|m| m.id.into_owned())
        .unwrap_or_default()
}

/// The Graph API's message object, as posted.
#[derive(serde::Serialize)]
struct Message<'a> {
    messaging_product: &'static str,
    recipient_type: &'static str,
    to: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<Text<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template: Option<Template<'a>>,
    biz_opaque_callback_data: String,
}

#[derive(serde::Serialize)]
struct Text<'a> {
    body: &'a str,
}

/// The Graph API's `template` object: no `components` key when there are none.
#[derive(serde::Serialize)]
struct Template<'a> {
    name: &'a str,
    language: Language<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    components: Vec<Value>,
}

#[derive(serde::Serialize)]
struct Language<'a> {
    code: &'a str,
}

impl<'a> Template<'a> {
    fn new(name: &'a str, language: &'a str, components: &[TemplateComponent]) -> Self {
        Self {
            name,
            language: Language { code: language },
            components: components.iter().map(component_json).collect(),
        }
    }
}

fn component_json(c: &TemplateComponent) -> Value {
    let parameters: Vec<Value> = c.parameters.iter().map(parameter_json).collect();
    match c.kind {
        ComponentKind::Header => json!({ "type": "header", "parameters": parameters }),
        ComponentKind::Body => json!({ "type": "body", "parameters": parameters }),
        // The index goes as a string, as Meta's reference shows it.
        ComponentKind::Button { sub_type, index } => json!({
            "type": "button",
            "sub_type": sub_type.as_str(),
            "index": index.to_string(),
            "parameters": parameters,
        }),
    }
}

/// A parameter object: its type, and its value under a key of the same name
/// (`{"type": "text", "text": "Ana"}`).
fn parameter_json(p: &TemplateParameter) -> Value {
    let value = match p {
        TemplateParameter::Text(v)
        | TemplateParameter::Payload(v)
        | TemplateParameter::CouponCode(v) => json!(v),
        TemplateParameter::Currency {
            fallback_value,
            code,
            amount_1000,
        } => json!({ "fallback_value": fallback_value, "code": code, "amount_1000": amount_1000 }),
        TemplateParameter::DateTime { fallback_value } => {
            json!({ "fallback_value": fallback_value })
        }
        TemplateParameter::Image { link } | TemplateParameter::Video { link } => {
            json!({ "link": link })
        }
        TemplateParameter::Document { link, filename } => match filename {
            Some(filename) => json!({ "link": link, "filename": filename }),
            None => json!({ "link": link }),
        },
    };
    let mut object = serde_json::Map::new();
    object.insert("type".into(), json!(p.kind()));
    object.insert(p.kind().into(), value);
    Value::Object(object)
}

/// Exponential backoff with full jitter: a wait in [0, min(max, base × 2^(attempt-1))],
/// spread by the send id and the clock (no random-number crate needed).
pub fn backoff(config: &CloudApiConfig, attempt: u32, salt: u64) -> Duration {
    let cap = config
        .backoff_base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
        .min(config.backoff_max_ms);
    let nanos = crate::clock::jitter_bits();
    let mut z =
        salt ^ nanos.rotate_left(32) ^ u64::from(attempt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    Duration::from_millis(z % (cap + 1))
}

impl Sender for Arc<CloudApiSender> {
    fn send(&self, tenant: &TenantId, m: Dispatch) -> SendFuture {
        let (sender, tenant) = (self.clone(), tenant.clone());
        Box::pin(async move { sender.deliver(&tenant, &m).await })
    }
}

/// The token probes carry: the shared one, else the first tenant's.
fn probe_token(config: &CloudApiConfig) -> &Secret {
    match config.tenant_tokens.values().next() {
        Some(own) if config.token.expose().is_empty() => own,
        _ => &config.token,
    }
}

/// One probe of `base`: (how long it took, healthy). A probe gives up at the threshold:
/// slower is as bad as no answer.
async fn probe(
    client: &reqwest::Client,
    config: &CloudApiConfig,
    base: &str,
    number: &str,
) -> (Duration, bool) {
    let url = format!(
        "{}/{}/{}?fields=id",
        base.trim_end_matches('/'),
        config.api_version,
        number
    );
    let slow = Duration::from_millis(config.probe_slow_ms);
    let started = crate::clock::Stopwatch::start();
    let answer = tokio::time::timeout(
        slow,
        client
            .get(&url)
            .bearer_auth(probe_token(config).expose())
            .send(),
    )
    .await;
    let took = started.elapsed();
    let healthy = matches!(&answer, Ok(Ok(r)) if !r.status().is_server_error()) && took <= slow;
    (took, healthy)
}

/// Probes both endpoints until cancelled, moving sends to the backup and back.
async fn probe_primary(
    client: reqwest::Client,
    config: Arc<CloudApiConfig>,
    number: String,
    failover: Arc<Failover>,
    stop: tokio_util::sync::CancellationToken,
) {
    let backup = config.backup_url.clone().unwrap_or_default();
    let mut tick = tokio::time::interval(Duration::from_millis(config.probe_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ((took, healthy), (backup_took, backup_healthy)) = tokio::join!(
            probe(&client, &config, &config.base_url, &number),
            probe(&client, &config, &backup, &number)
        );
        crate::telemetry::provider_probe("primary", took, healthy);
        crate::telemetry::provider_probe("backup", backup_took, backup_healthy);
        failover.backup_probe(backup_healthy);
        match failover.primary_probe(healthy, config.probe_failures) {
            Some(true) => tracing::warn!(
                took_ms = took.as_millis() as u64,
                threshold_ms = config.probe_slow_ms,
                "Cloud API primary endpoint slow or failing {} probes in a row: sending through the backup",
                config.probe_failures
            ),
            Some(false) => {
                tracing::info!("Cloud API primary endpoint healthy again: sending through it")
            }
            None => {}
        }
        crate::telemetry::provider_endpoint(failover.on_backup());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_id_is_read_from_meta_s_answer_or_left_empty() {
        // Meta's documented answer to a send.
        let sent = r#"{"messaging_product":"whatsapp","contacts":[{"input":"+16505551234","wa_id":"16505551234"}],"messages":[{"id":"wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3N0EzM0U4QzY0MjA4NkIwMDAA","message_status":"accepted"}]}"#;
        assert_eq!(
            message_id(sent),
            "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3N0EzM0U4QzY0MjA4NkIwMDAA"
        );
        assert_eq!(
            message_id(r#"{"messages":[{"id":"wamid.a\/b"}]}"#),
            "wamid.a/b"
        );
        assert_eq!(message_id(r#"{"messages":[]}"#), "");
        assert_eq!(message_id(r#"{"success":true}"#), "");
        assert_eq!(message_id("not json"), "");
    }

    #[test]
    fn answers_are_classified_retryable_or_final() {
        let err = |code: u32| {
            format!(
                r#"{{"error": {{"message": "m", "type": "OAuthException", "code": {code}, "fbtrace_id": "x"}}}}"#
            )
        };
        assert_eq!(
            classify(200, r#"{"messages": [{"id": "wamid.1"}]}"#),
            Attempt::Sent
        );
        for code in [130429, 131056, 131047, 131048, 100, 190] {
            assert_eq!(classify(400, &err(code)), Attempt::Fail { code }, "{code}");
        }
        assert_eq!(classify(400, &err(131057)), Attempt::Retry { code: 131057 });
        assert_eq!(
            classify(503, "upstream unavailable"),
            Attempt::Retry { code: 503 }
        );
        assert_eq!(classify(500, &err(131000)), Attempt::Retry { code: 131000 });
        assert_eq!(classify(404, "not json"), Attempt::Fail { code: 404 });
    }

    #[test]
    fn failover_needs_consecutive_slow_probes_and_fails_back_after_healthy_ones() {
        let f = Failover::default();
        assert_eq!(f.primary_probe(false, 3), None);
        assert_eq!(f.primary_probe(false, 3), None);
        assert_eq!(
            f.primary_probe(true, 3),
            None,
            "a healthy probe resets the streak"
        );
        assert_eq!(f.primary_probe(false, 3), None);
        assert_eq!(f.primary_probe(false, 3), None);
        assert_eq!(f.primary_probe(false, 3), Some(true));
        assert!(f.on_backup());
        assert_eq!(f.primary_probe(false, 3), None, "already on the backup");
        assert_eq!(f.primary_probe(true, 3), None);
        assert_eq!(f.primary_probe(true, 3), None);
        assert_eq!(f.primary_probe(true, 3), Some(false));
        assert!(!f.on_backup());
        assert_eq!(
            (
                f.failovers.load(Ordering::Relaxed),
                f.failbacks.load(Ordering::Relaxed)
            ),
            (1, 1)
        );
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_inside_it() {
        let config = CloudApiConfig {
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            ..CloudApiConfig::default()
        };
        for attempt in 1..=8 {
            let cap = (100u64 << (attempt - 1)).min(1_000);
            for salt in 0..50 {
                assert!(backoff(&config, attempt, salt) <= Duration::from_millis(cap));
            }
        }
        let waits: std::collections::HashSet<Duration> =
            (0..50).map(|s| backoff(&config, 5, s)).collect();
        assert!(waits.len() > 10, "jittered: {waits:?}");
    }

    /// A dispatch of `category` to +34612345678 as send 7 of tenant "acme".
    fn dispatch(
        category: Category,
        content: &str,
        template: Option<crate::model::Template>,
    ) -> Dispatch {
        Dispatch {
            id: crate::core::quota::SendId(7),
            from: "106540352242922".into(),
            to: crate::core::identity::normalize("+34612345678", phonenumber::country::Id::ES)
                .unwrap(),
            category,
            content: content.into(),
            template: template.map(Arc::new),
            idempotency_key: "k7".into(),
            counted: true,
            at: crate::clock::Timestamp(1_700_000_000_000),
        }
    }

    /// The order-update template of docs/sends.md is rendered through the whole service in
    /// `tests/cloud_api.rs`; here the other parameter kinds and the sends without components.
    #[test]
    fn templates_are_rendered_exactly_as_the_graph_api_takes_them() {
        use crate::model::{
            ButtonSubType, ComponentKind, Template, TemplateComponent, TemplateParameter as P,
        };
        let config = CloudApiConfig::default();
        let tenant = TenantId::new("acme");
        let template = Template {
            name: "receipt".into(),
            language: "pt_BR".into(),
            components: vec![
                TemplateComponent {
                    kind: ComponentKind::Header,
                    parameters: vec![P::Document {
                        link: "https://example.com/r.pdf".into(),
                        filename: Some("recibo.pdf".into()),
                    }],
                },
                TemplateComponent {
                    kind: ComponentKind::Button {
                        sub_type: ButtonSubType::Url,
                        index: 1,
                    },
                    parameters: vec![P::Text("r/42".into())],
                },
                TemplateComponent {
                    kind: ComponentKind::Button {
                        sub_type: ButtonSubType::CopyCode,
                        index: 2,
                    },
                    parameters: vec![P::CouponCode("25OFF".into())],
                },
            ],
        };
        let body = CloudApiSender::body(
            &config,
            &tenant,
            &dispatch(Category::Marketing, "receipt", Some(template)),
        );
        assert_eq!(
            body,
            json!({
                "messaging_product": "whatsapp",
                "recipient_type": "individual",
                "to": "34612345678",
                "type": "template",
                "template": {
                    "name": "receipt",
                    "language": { "code": "pt_BR" },
                    "components": [
                        { "type": "header", "parameters": [{ "type": "document",
                            "document": { "link": "https://example.com/r.pdf", "filename": "recibo.pdf" } }] },
                        { "type": "button", "sub_type": "url", "index": "1",
                          "parameters": [{ "type": "text", "text": "r/42" }] },
                        { "type": "button", "sub_type": "copy_code", "index": "2",
                          "parameters": [{ "type": "coupon_code", "coupon_code": "25OFF" }] }
                    ]
                },
                "biz_opaque_callback_data": "sb1:acme:s-7"
            })
        );
        // No components: no `components` key. By name only: in `template_language`.
        let bare = Template {
            name: "hello_world".into(),
            language: "en".into(),
            components: Vec::new(),
        };
        let body = CloudApiSender::body(
            &config,
            &tenant,
            &dispatch(Category::Utility, "hello_world", Some(bare)),
        );
        assert_eq!(
            body["template"],
            json!({ "name": "hello_world", "language": { "code": "en" } })
        );
        let body = CloudApiSender::body(
            &config,
            &tenant,
            &dispatch(Category::Utility, "order_shipped", None),
        );
        assert_eq!(
            body["template"],
            json!({ "name": "order_shipped", "language": { "code": "es" } })
        );
        // A session message is text.
        let body =
            CloudApiSender::body(&config, &tenant, &dispatch(Category::Session, "hola", None));
        assert_eq!(
            (&body["type"], &body["text"]),
            (&json!("text"), &json!({ "body": "hola" }))
        );
        assert!(body.get("template").is_none());
    }

    #[test]
    fn the_token_is_never_shown() {
        let c = CloudApiConfig {
            token: Secret::new("EAAG-very-secret"),
            ..CloudApiConfig::default()
        };
        assert!(!format!("{c:?}").contains("very-secret"));
    }
}
