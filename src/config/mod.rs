//! Configuration: a TOML file, overridden by `SWITCHBOARD_*` environment variables, validated
//! once at start-up.
//!
//! Every field is documented here and in `docs/configuration.md`; every default is safe
//! (loopback listen addresses, bounded buffers and maps). Validation checks what serde cannot —
//! references between tenants, queues and intents, regexes, regions, ranges — and every error
//! names the field and says what to do. Nothing else in the program re-checks these rules.
//!
//! Config is a leaf: it imports no component. Each component's section lives in a module of
//! its own here ([`auth`], [`cloud_api`], [`kafka`], [`runtime`], [`tls`], [`webhook`]) and the component
//! imports it; the domain enums a config names (`Category`, `Rule`, `MessagingLimit`,
//! `IntentMode`) live in `model`, shared by config and components alike.
pub mod auth;
pub mod cloud_api;
pub mod customers;
pub mod egress;
pub mod hours;
pub mod kafka;
pub mod lifecycle;
pub mod routing;
pub mod runtime;
pub mod tls;
pub mod webhook;

pub use crate::model::{Category, IntentMode, MessagingLimit, Rule, Unlimited};
pub use kafka::{KafkaConfig, MAX_RECORD_BYTES};
pub use runtime::RuntimeConfig;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

/// The demo configuration `cargo run` starts with when no file is named.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../deploy/switchboard.toml");

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "SWITCHBOARD_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Syntax, type or unknown-field errors; figment's message names the key and the source.
    #[error("config: {0}")]
    Parse(Box<figment::Error>),
    #[error("config field `{field}`: {problem}")]
    Invalid { field: String, problem: String },
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address (`SWITCHBOARD_GRPC_ADDR`). Port 0 picks a free port; the service
    /// prints the one it got.
    #[serde(default = "defaults::grpc_addr")]
    pub grpc_addr: SocketAddr,
    /// Prometheus `/metrics` listen address (`SWITCHBOARD_METRICS_ADDR`).
    #[serde(default = "defaults::metrics_addr")]
    pub metrics_addr: SocketAddr,
    /// Meta's webhooks listen address (`SWITCHBOARD_WEBHOOK_ADDR`); served only when an app
    /// secret is configured (`[webhook]`).
    #[serde(default = "defaults::webhook_addr")]
    pub webhook_addr: SocketAddr,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub limits: Limits,
    /// Kafka as the input (off while `kafka.brokers` is empty: the embedded bus only).
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// At least one tenant.
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    /// Bearer tokens for the calls that change state for others (see `auth`); none: open.
    #[serde(default)]
    pub auth: auth::AuthConfig,
    /// The WhatsApp Cloud API sender (off: the embedded sender logs and acknowledges).
    #[serde(default)]
    pub cloud_api: cloud_api::CloudApiConfig,
    /// TLS for gRPC, /metrics and the webhook endpoint (off without a certificate).
    #[serde(default)]
    pub tls: tls::TlsConfig,
    /// The webhook endpoint (off until an app secret is configured).
    #[serde(default)]
    pub webhook: webhook::WebhookConfig,
    /// `switchboard egress`: the dispatch topic to the Cloud API.
    #[serde(default)]
    pub egress: egress::EgressConfig,
}

/// Limits that bound input size and memory. Apply to every tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest accepted message text, in bytes (WhatsApp's own limit is 4,096 characters).
    pub max_text_bytes: usize,
    /// Messages kept per conversation as context for whoever picks it up.
    pub context_messages: usize,
    /// How long a provider message id is remembered for de-duplication. Meta retries webhooks
    /// for up to 7 days, so less than that lets a late retry through.
    pub dedup_ttl_secs: u64,
    /// Most message ids remembered per tenant; past it the oldest are forgotten first.
    pub dedup_max_ids: usize,
    /// An idle or bot conversation with no activity for this long is forgotten (its context,
    /// channels and window). Must be at least the window, or windows would be forgotten open.
    pub conversation_retention_secs: u64,
    /// Most conversations tracked per tenant; a new customer past it is refused
    /// (RESOURCE_EXHAUSTED) rather than growing memory without bound.
    pub max_conversations: usize,
    /// The customer-service window (platform rule: 24 hours). Change only to test.
    pub window_secs: u64,
    /// How often expired conversations and message ids are swept.
    pub sweep_interval_secs: u64,
    /// Most profile conflicts kept per tenant for review (`Customers.ListConflicts`); past it
    /// the oldest are forgotten first.
    pub max_conflicts: usize,
}

/// Most queues in one tenant: far above any desk, and a conversation keeps its last queue's
/// index in two bytes.
pub const MAX_QUEUES: usize = 1_000;
/// Most provider message ids one tenant's de-duplication window may hold: its positions are
/// 32-bit (`core::positions`), and a billion ids is far past any day of traffic.
pub const MAX_DEDUP_IDS: usize = 1_000_000_000;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_text_bytes: 4_096,
            context_messages: 20,
            dedup_ttl_secs: 7 * 24 * 3_600,
            dedup_max_ids: 1_000_000,
            conversation_retention_secs: 3 * 24 * 3_600,
            max_conversations: 2_000_000,
            window_secs: 24 * 3_600,
            sweep_interval_secs: 60,
            max_conflicts: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    /// ISO 3166 region used to read numbers written without a country code ("ES", "MX", "US").
    pub default_region: String,
    /// The bot that takes simple intents and SLA overflow. None: everything goes to humans.
    #[serde(default)]
    pub bot: Option<String>,
    /// Queue for messages that match no intent (decided by SLA load).
    pub default_queue: String,
    /// Queue for escalations that name none (bot escalations, paused automation with no queue).
    #[serde(default)]
    pub escalation_queue: Option<String>,
    /// Priority of messages that match no intent.
    #[serde(default = "defaults::priority")]
    pub default_priority: u32,
    /// Priority an escalated conversation gets at least.
    #[serde(default = "defaults::escalation_priority")]
    pub escalation_priority: u32,
    pub queues: Vec<QueueConfig>,
    #[serde(default)]
    pub intents: Vec<IntentConfig>,
    /// The portfolio's business numbers (senders of outbound messages).
    #[serde(default)]
    pub numbers: Vec<NumberConfig>,
    /// The portfolio's quotas (platform rules: shared/design/WHATSAPP.md).
    #[serde(default)]
    pub quotas: QuotaConfig,
    /// A conversation with the bot stays with it (reason `WITH_BOT`) until the bot escalates,
    /// a friction intent appears, or it has been idle this long; 0: every message is routed
    /// afresh.
    #[serde(default = "defaults::bot_idle_secs")]
    pub bot_idle_secs: u64,
    /// Duplicate customer suggestions (`[tenants.duplicates]`).
    #[serde(default)]
    pub duplicates: customers::DuplicatesConfig,
}

/// One business phone number of a portfolio.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NumberConfig {
    /// The number as senders name it (E.164 display number or the Cloud API phone-number id).
    pub id: String,
    /// Throughput tier in messages per second, inbound and outbound together: 80 by default,
    /// 1,000 for upgraded numbers, 20 for numbers shared with the Business app.
    #[serde(default = "defaults::mps")]
    pub mps: u32,
    /// Bucket size: how many messages may go at once after a quiet period. Default: one
    /// second's worth (`mps`).
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// The portfolio's tier: 250, 2000, 10000, 100000 or "unlimited". Default 250, the tier of
    /// a new business: safe until the operator says otherwise.
    pub messaging_limit: MessagingLimit,
    /// Share of the messaging limit at which low-priority sends switch to paced batches.
    pub batch_threshold: f64,
    /// Share of the messaging limit that batched (low-priority) traffic may never use: kept for
    /// higher classes.
    pub reserve: f64,
    /// Categories sent as low priority unless a send says otherwise.
    pub low_priority: Vec<Category>,
    /// Pair limit per (business number, customer): one message per this period...
    pub pair_period_ms: u64,
    /// ...with this burst (Meta publishes no threshold; about 1 per 6 s is reported).
    pub pair_burst: u32,
    /// Most sends released from the batch queue per tick.
    pub batch_wave: u32,
    /// Validity of a send that names none: a queued send older than this expires.
    pub default_validity_secs: u64,
    /// How long a business number backs off after a throughput error (130429).
    pub number_backoff_ms: u64,
    /// How long a pair backs off after a pair-limit error (131056).
    pub pair_backoff_ms: u64,
    /// How long marketing from a number pauses after a spam-rate error (131048).
    pub marketing_pause_secs: u64,
    /// Most sends remembered for status queries and idempotency, per portfolio.
    pub max_tracked_sends: usize,
    /// Most sends waiting in the batch queue, per portfolio; past it low-priority sends are
    /// refused with a retry-after instead of queued.
    pub max_queued_sends: usize,
    /// Most audit entries kept per portfolio (oldest forgotten first).
    pub max_audit_entries: usize,
    /// Rules evaluated in shadow mode: would-be refusals are counted, not enforced. Any of
    /// "throughput", "pair", "messaging_limit", "window".
    pub shadow: Vec<Rule>,
    /// How far ahead `send_at_ms` may schedule a send.
    pub max_schedule_ahead_secs: u64,
    /// Most sends waiting for their scheduled time, per portfolio; past it a scheduled send
    /// is refused `QUEUE_FULL`.
    pub max_scheduled_sends: usize,
    /// Opt-out and opt-in keywords.
    pub consent: lifecycle::ConsentConfig,
    /// Business-initiated low-priority sends per customer per moving 24 hours.
    pub frequency_cap: lifecycle::FrequencyCapConfig,
    /// How long low-priority sends to a customer wait after Meta's per-user marketing limit
    /// (error 131049).
    pub customer_hold_secs: u64,
    /// Hours when low-priority sends wait; none by default.
    pub quiet_hours: Option<lifecycle::QuietHoursConfig>,
    /// The forecast's pace: new customers counted per second over this many last seconds
    /// (60 to 86400).
    pub forecast_window_secs: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            messaging_limit: MessagingLimit::Customers(250),
            batch_threshold: 0.8,
            reserve: 0.05,
            low_priority: vec![Category::Marketing],
            pair_period_ms: 6_000,
            pair_burst: 2,
            batch_wave: 100,
            default_validity_secs: 24 * 3_600,
            number_backoff_ms: 1_000,
            pair_backoff_ms: 6_000,
            marketing_pause_secs: 3_600,
            max_tracked_sends: 1_000_000,
            max_queued_sends: 1_000_000,
            max_audit_entries: 10_000,
            shadow: Vec::new(),
            max_schedule_ahead_secs: lifecycle::defaults::MAX_SCHEDULE_AHEAD_SECS,
            max_scheduled_sends: lifecycle::defaults::MAX_SCHEDULED_SENDS,
            consent: lifecycle::ConsentConfig::default(),
            frequency_cap: lifecycle::FrequencyCapConfig::default(),
            customer_hold_secs: lifecycle::defaults::CUSTOMER_HOLD_SECS,
            quiet_hours: None,
            forecast_window_secs: 900,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub name: String,
    /// Answer within this long: the routing threshold and the SLA attainment target.
    pub sla_target_secs: u64,
    /// A conversation waiting longer escalates: to `fallback`, or up in priority.
    pub max_wait_secs: u64,
    /// Handle time assumed before any conversation of this queue completed.
    #[serde(default = "defaults::initial_handle_secs")]
    pub initial_handle_secs: u64,
    /// Queue that takes conversations that waited past `max_wait_secs`.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Priority added to a conversation that waited past `max_wait_secs` (no fallback).
    #[serde(default = "defaults::max_wait_boost")]
    pub max_wait_priority_boost: u32,
    /// When the queue is open (absent: always). See `config::hours`.
    #[serde(default)]
    pub hours: Option<hours::HoursConfig>,
    /// Where its messages go while it is closed (absent: the bot, or friction waits in it).
    #[serde(default)]
    pub after_hours_queue: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentConfig {
    pub name: String,
    pub mode: IntentMode,
    /// Required for `human` and `auto`; for `bot` it is where the message goes without a bot.
    #[serde(default)]
    pub queue: Option<String>,
    /// Defaults to the tenant's default priority. When several intents match, the highest
    /// priority wins, then the first configured.
    #[serde(default)]
    pub priority: Option<u32>,
    /// Whole words or phrases, matched case- and accent-insensitively.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Regular expressions (Rust `regex` syntax), matched case-insensitively against the text
    /// lower-cased with accents removed.
    #[serde(default)]
    pub patterns: Vec<String>,
}

impl NumberConfig {
    /// Checks one number; `at` names it in errors (`tenants[0].numbers[1]`).
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        non_empty(&format!("{at}.id"), &self.id)?;
        if self.mps == 0 || self.mps > 10_000 {
            return Err(invalid(
                format!("{at}.mps"),
                format!(
                    "is {}; set the number's throughput tier in messages per second (20, 80 or 1000)",
                    self.mps
                ),
            ));
        }
        if self.burst == Some(0) {
            return Err(invalid(format!("{at}.burst"), "must be at least 1"));
        }
        Ok(())
    }
}

impl QuotaConfig {
    /// Checks a portfolio's quotas; `at` names them in errors (`tenants[0].quotas`). Overrides
    /// are checked by this same function, so no override can make what the file could not.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.messaging_limit == MessagingLimit::Customers(0) {
            return Err(invalid(
                format!("{at}.messaging_limit"),
                "is 0; use the portfolio's tier (250, 2000, 10000, 100000) or \"unlimited\"",
            ));
        }
        if !(self.batch_threshold > 0.0 && self.batch_threshold <= 1.0) {
            return Err(invalid(
                format!("{at}.batch_threshold"),
                format!(
                    "is {}; use a share of the limit in (0, 1], e.g. 0.8",
                    self.batch_threshold
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.reserve) || self.reserve >= self.batch_threshold {
            return Err(invalid(
                format!("{at}.reserve"),
                format!(
                    "is {}; use a share in [0, batch_threshold), e.g. 0.05",
                    self.reserve
                ),
            ));
        }
        positive(&format!("{at}.pair_period_ms"), self.pair_period_ms)?;
        positive(&format!("{at}.pair_burst"), u64::from(self.pair_burst))?;
        positive(&format!("{at}.batch_wave"), u64::from(self.batch_wave))?;
        positive(
            &format!("{at}.default_validity_secs"),
            self.default_validity_secs,
        )?;
        positive(
            &format!("{at}.max_tracked_sends"),
            self.max_tracked_sends as u64,
        )?;
        positive(
            &format!("{at}.max_queued_sends"),
            self.max_queued_sends as u64,
        )?;
        positive(
            &format!("{at}.max_audit_entries"),
            self.max_audit_entries as u64,
        )?;
        if !(60..=86_400).contains(&self.forecast_window_secs) {
            return Err(invalid(
                format!("{at}.forecast_window_secs"),
                format!(
                    "is {}; use 60 to 86400 (the forecast's pace is measured over it)",
                    self.forecast_window_secs
                ),
            ));
        }
        if self.low_priority.contains(&Category::Session) {
            return Err(invalid(
                format!("{at}.low_priority"),
                "cannot hold \"session\": replies in an open window are never batched",
            ));
        }
        lifecycle::validate(
            at,
            &self.consent,
            self.quiet_hours.as_ref(),
            self.max_schedule_ahead_secs,
            self.max_scheduled_sends,
        )
    }
}

mod defaults {
    use std::net::SocketAddr;
    pub fn grpc_addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 50051))
    }
    pub fn metrics_addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9464))
    }
    pub fn webhook_addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }
    pub fn priority() -> u32 {
        10
    }
    /// Ten minutes: a customer answering the bot's question is still in its dialogue.
    pub fn bot_idle_secs() -> u64 {
        600
    }
    pub fn escalation_priority() -> u32 {
        50
    }
    pub fn initial_handle_secs() -> u64 {
        180
    }
    pub fn max_wait_boost() -> u32 {
        10
    }
    pub fn mps() -> u32 {
        80
    }
}

impl Config {
    /// Loads the file named by `path`, else by `SWITCHBOARD_CONFIG`, else the embedded demo;
    /// then applies `SWITCHBOARD_*` overrides (`__` separates nesting:
    /// `SWITCHBOARD_RUNTIME__SHARDS=4`); then validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env_path = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        let text = match path.map(Path::to_path_buf).or(env_path) {
            Some(path) => std::fs::read_to_string(&path)
                .map_err(|source| ConfigError::Read { path, source })?,
            None => EMBEDDED_DEFAULT.to_owned(),
        };
        let figment = Figment::from(Toml::string(&text)).merge(
            Env::prefixed("SWITCHBOARD_")
                .ignore(&["CONFIG"])
                // The documented short form for the one Kafka setting operators set most.
                .map(|key| {
                    if key == "kafka_brokers" {
                        "kafka__brokers".into()
                    } else {
                        key.into()
                    }
                })
                .split("__"),
        );
        Self::from_figment(figment)
    }

    /// Parses and validates TOML text alone (no environment): for tests and `config check`.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        config
            .webhook
            .resolve()
            .and_then(|()| config.cloud_api.resolve())
            .map_err(|(field, problem)| invalid(field, problem))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.auth
            .validate()
            .map_err(|(field, problem)| invalid(field, problem))?;
        self.cloud_api
            .validate(self.tenants.iter().map(|t| t.id.as_str()))
            .map_err(|(field, problem)| invalid(field, problem))?;
        self.tls
            .validate()
            .and_then(|()| self.egress.validate())
            .map_err(|(field, problem)| invalid(field, problem))?;
        self.validate_webhook()?;
        let rt = &self.runtime;
        positive("runtime.shards", rt.shards as u64)?;
        positive("runtime.max_in_flight_calls", rt.max_in_flight_calls as u64)?;
        positive("runtime.overload_retry_ms", rt.overload_retry_ms)?;
        positive("runtime.tick_interval_ms", rt.tick_interval_ms)?;
        positive(
            "runtime.shard_queue_capacity",
            rt.shard_queue_capacity as u64,
        )?;
        positive("runtime.subscriber_buffer", rt.subscriber_buffer as u64)?;
        let l = &self.limits;
        positive("limits.max_text_bytes", l.max_text_bytes as u64)?;
        positive("limits.context_messages", l.context_messages as u64)?;
        positive("limits.dedup_max_ids", l.dedup_max_ids as u64)?;
        if l.dedup_max_ids > MAX_DEDUP_IDS {
            return Err(invalid(
                "limits.dedup_max_ids",
                format!(
                    "{} ids; at most {MAX_DEDUP_IDS} per tenant (a window's positions are 32-bit)",
                    l.dedup_max_ids
                ),
            ));
        }
        positive("limits.max_conversations", l.max_conversations as u64)?;
        positive("limits.window_secs", l.window_secs)?;
        positive("limits.sweep_interval_secs", l.sweep_interval_secs)?;
        positive("limits.max_conflicts", l.max_conflicts as u64)?;
        if l.conversation_retention_secs < l.window_secs {
            return Err(invalid(
                "limits.conversation_retention_secs",
                format!(
                    "{} is shorter than limits.window_secs ({}): open windows would be forgotten; \
                     set it to at least {}",
                    l.conversation_retention_secs, l.window_secs, l.window_secs
                ),
            ));
        }
        if !self.kafka.brokers.is_empty() {
            self.kafka.validate()?;
        }
        if self.tenants.is_empty() {
            return Err(invalid(
                "tenants",
                "no tenant is configured; add at least one [[tenants]] table",
            ));
        }
        let mut ids = HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let at = format!("tenants[{i}]");
            if !ids.insert(t.id.as_str()) {
                return Err(invalid(
                    format!("{at}.id"),
                    format!(
                        "tenant id {:?} is used twice; tenant ids must be unique",
                        t.id
                    ),
                ));
            }
            t.validate(&at)?;
        }
        Ok(())
    }
}

impl Config {
    /// The webhook apps name configured tenants, and (with the endpoint on) a post fits in a
    /// Kafka record.
    fn validate_webhook(&self) -> Result<(), ConfigError> {
        let w = &self.webhook;
        for (i, app) in w.apps.iter().enumerate() {
            for (j, tenant) in app.tenants.iter().enumerate() {
                if !self.tenants.iter().any(|t| &t.id == tenant) {
                    return Err(invalid(
                        format!("webhook.apps[{i}].tenants[{j}]"),
                        format!("tenant {tenant:?} is not configured; name one of [[tenants]]"),
                    ));
                }
            }
        }
        if w.enabled()
            && !self.kafka.brokers.is_empty()
            && w.max_body_bytes > self.kafka.max_record_bytes
        {
            return Err(invalid(
                "webhook.max_body_bytes",
                format!(
                    "{} is above kafka.max_record_bytes ({}): a post the endpoint accepts must \
                     fit in one record; lower it or raise kafka.max_record_bytes",
                    w.max_body_bytes, self.kafka.max_record_bytes
                ),
            ));
        }
        Ok(())
    }
}

impl TenantConfig {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        non_empty(&format!("{at}.id"), &self.id)?;
        if self
            .default_region
            .parse::<phonenumber::country::Id>()
            .is_err()
        {
            return Err(invalid(
                format!("{at}.default_region"),
                format!(
                    "{:?} is not an ISO 3166 region code; use two capital letters such as \"ES\", \"MX\" or \"US\"",
                    self.default_region
                ),
            ));
        }
        if let Some(bot) = &self.bot {
            non_empty(&format!("{at}.bot"), bot)?;
        }
        if self.queues.is_empty() {
            return Err(invalid(
                format!("{at}.queues"),
                "no queue; add at least one [[tenants.queues]] table",
            ));
        }
        if self.queues.len() > MAX_QUEUES {
            return Err(invalid(
                format!("{at}.queues"),
                format!(
                    "{} queues; a tenant has at most {MAX_QUEUES} (split it into tenants)",
                    self.queues.len()
                ),
            ));
        }
        let mut names = HashSet::new();
        for (j, q) in self.queues.iter().enumerate() {
            let qat = format!("{at}.queues[{j}]");
            non_empty(&format!("{qat}.name"), &q.name)?;
            if !names.insert(q.name.as_str()) {
                return Err(invalid(
                    format!("{qat}.name"),
                    format!("queue {:?} is defined twice in this tenant", q.name),
                ));
            }
            positive(&format!("{qat}.sla_target_secs"), q.sla_target_secs)?;
            positive(&format!("{qat}.max_wait_secs"), q.max_wait_secs)?;
            positive(&format!("{qat}.initial_handle_secs"), q.initial_handle_secs)?;
        }
        let known = |field: String, name: &str| -> Result<(), ConfigError> {
            if names.contains(name) {
                Ok(())
            } else {
                Err(invalid(
                    field,
                    format!(
                        "queue {name:?} is not defined; define it under [[tenants.queues]] or use one of {:?}",
                        self.queues.iter().map(|q| &q.name).collect::<Vec<_>>()
                    ),
                ))
            }
        };
        known(format!("{at}.default_queue"), &self.default_queue)?;
        if let Some(q) = &self.escalation_queue {
            known(format!("{at}.escalation_queue"), q)?;
        }
        for (j, q) in self.queues.iter().enumerate() {
            if let Some(f) = &q.fallback {
                known(format!("{at}.queues[{j}].fallback"), f)?;
            }
        }
        self.check_fallback_cycles(at)?;
        hours::validate(at, &self.queues)?;
        self.duplicates.validate(at)?;
        self.validate_outbound(at)?;
        let mut intent_names = HashSet::new();
        for (j, intent) in self.intents.iter().enumerate() {
            let iat = format!("{at}.intents[{j}]");
            non_empty(&format!("{iat}.name"), &intent.name)?;
            if !intent_names.insert(intent.name.as_str()) {
                return Err(invalid(
                    format!("{iat}.name"),
                    format!("intent {:?} is defined twice in this tenant", intent.name),
                ));
            }
            match (&intent.queue, intent.mode) {
                (Some(q), _) => known(format!("{iat}.queue"), q)?,
                (None, IntentMode::Human | IntentMode::Auto) => {
                    return Err(invalid(
                        format!("{iat}.queue"),
                        "a `human` or `auto` intent needs the queue its conversations go to",
                    ));
                }
                (None, IntentMode::Bot) => {}
            }
            if intent.keywords.is_empty() && intent.patterns.is_empty() {
                return Err(invalid(
                    format!("{iat}.keywords"),
                    "the intent has neither keywords nor patterns, so it can never match; add one",
                ));
            }
            for (k, kw) in intent.keywords.iter().enumerate() {
                if kw.trim().is_empty() {
                    return Err(invalid(
                        format!("{iat}.keywords[{k}]"),
                        "empty keyword; remove it",
                    ));
                }
            }
            for (k, p) in intent.patterns.iter().enumerate() {
                if let Err(e) = regex::Regex::new(p) {
                    return Err(invalid(
                        format!("{iat}.patterns[{k}]"),
                        format!("not a valid regular expression: {e}"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate_outbound(&self, at: &str) -> Result<(), ConfigError> {
        let mut ids = HashSet::new();
        for (j, n) in self.numbers.iter().enumerate() {
            let nat = format!("{at}.numbers[{j}]");
            n.validate(&nat)?;
            if !ids.insert(n.id.as_str()) {
                return Err(invalid(
                    format!("{nat}.id"),
                    format!("number {:?} is listed twice", n.id),
                ));
            }
        }
        self.quotas.validate(&format!("{at}.quotas"))
    }

    /// Max-wait escalation follows `fallback` links; a cycle would bounce conversations forever.
    fn check_fallback_cycles(&self, at: &str) -> Result<(), ConfigError> {
        for (j, start) in self.queues.iter().enumerate() {
            let mut seen = HashSet::from([start.name.as_str()]);
            let mut cur = start;
            while let Some(next) = &cur.fallback {
                if !seen.insert(next.as_str()) {
                    return Err(invalid(
                        format!("{at}.queues[{j}].fallback"),
                        format!(
                            "fallback chain from queue {:?} loops back to {next:?}; end the chain at a queue without fallback",
                            start.name
                        ),
                    ));
                }
                cur = self
                    .queues
                    .iter()
                    .find(|q| &q.name == next)
                    .expect("fallback names were checked to exist just before");
            }
        }
        Ok(())
    }
}

fn positive(field: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(invalid(field, "must be greater than 0"))
    } else {
        Ok(())
    }
}

fn non_empty(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        Err(invalid(field, "must not be empty"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One tenant with one queue: the least a valid config holds.
    pub(crate) const MINIMAL: &str = r#"
        [[tenants]]
        id = "t"
        default_region = "ES"
        default_queue = "support"
        [[tenants.queues]]
        name = "support"
        sla_target_secs = 60
        max_wait_secs = 300
    "#;

    fn err(text: &str) -> String {
        Config::from_toml_str(text).unwrap_err().to_string()
    }

    #[test]
    fn a_tenant_has_at_most_a_thousand_queues() {
        let queues = |n: usize| {
            (0..n)
                .map(|i| format!("[[tenants.queues]]\nname = \"q{i}\"\nsla_target_secs = 60\nmax_wait_secs = 300\n"))
                .collect::<String>()
        };
        let head = "[[tenants]]\nid = \"t\"\ndefault_region = \"ES\"\ndefault_queue = \"q0\"\n";
        assert!(Config::from_toml_str(&format!("{head}{}", queues(MAX_QUEUES))).is_ok());
        let e = err(&format!("{head}{}", queues(MAX_QUEUES + 1)));
        assert!(
            e.contains("tenants[0].queues") && e.contains("at most 1000"),
            "{e}"
        );
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::from_toml_str(EMBEDDED_DEFAULT).unwrap();
        assert!(
            c.grpc_addr.ip().is_loopback(),
            "safe default: loopback only"
        );
        assert!(c.metrics_addr.ip().is_loopback());
        assert_eq!(c.tenants[0].id, "demo");
    }

    #[test]
    fn librdkafka_queue_bounds_are_checked() {
        let kafka = |extra: &str| format!("[kafka]\nbrokers = \"b:9092\"\n{extra}\n{MINIMAL}");
        let c = Config::from_toml_str(&kafka("")).unwrap();
        assert_eq!(
            (
                c.kafka.fetch_queue_kbytes,
                c.kafka.fetch_queue_records,
                c.kafka.produce_queue_kbytes
            ),
            (16_384, 100_000, 65_536)
        );
        assert!(err(&kafka("fetch_queue_records = 0")).contains("kafka.fetch_queue_records"));
        assert!(err(&kafka("produce_queue_kbytes = 0")).contains("kafka.produce_queue_kbytes"));
        let e = err(&kafka("fetch_queue_kbytes = 64\nmax_record_bytes = 262144"));
        assert!(
            e.contains("kafka.fetch_queue_kbytes") && e.contains("raise it"),
            "{e}"
        );
    }

    #[test]
    fn the_cuts_share_of_time_is_checked() {
        let kafka = |extra: &str| format!("[kafka]\nbrokers = \"b:9092\"\n{extra}\n{MINIMAL}");
        let c = Config::from_toml_str(&kafka("")).unwrap();
        assert_eq!(c.kafka.snapshot_busy_percent, 10);
        for bad in ["0", "101"] {
            let e = err(&kafka(&format!("snapshot_busy_percent = {bad}")));
            assert!(
                e.contains("kafka.snapshot_busy_percent") && e.contains("1..=100"),
                "{e}"
            );
        }
        assert!(Config::from_toml_str(&kafka("snapshot_busy_percent = 100")).is_ok());
    }

    #[test]
    fn the_webhook_limit_is_checked_only_with_the_endpoint_on() {
        let small = format!("[kafka]\nbrokers = \"b:9092\"\nmax_record_bytes = 4096\n{MINIMAL}");
        let c = Config::from_toml_str(&small).expect("no endpoint: nothing to check");
        assert!(!c.webhook.enabled());
        let on = format!("[webhook]\napp_secret = \"s\"\nverify_token = \"v\"\n{small}");
        let e = err(&on);
        assert!(e.contains("webhook.max_body_bytes"), "{e}");
        let half = format!("[webhook]\napp_secret = \"s\"\n{MINIMAL}");
        assert!(err(&half).contains("webhook.verify_token"));
        let app = format!(
            "[[webhook.apps]]\nname = \"a\"\napp_secret_env = \"SWITCHBOARD_TEST_UNSET_SECRET\"\nverify_token_env = \"SWITCHBOARD_TEST_UNSET_SECRET\"\n{MINIMAL}"
        );
        let e = err(&app);
        assert!(
            e.contains("webhook.apps[0].app_secret") && e.contains("not set"),
            "{e}"
        );
    }

    #[test]
    fn minimal_config_gets_safe_defaults() {
        let c = Config::from_toml_str(MINIMAL).unwrap();
        assert_eq!(c.limits.max_text_bytes, 4096);
        assert_eq!(c.limits.window_secs, 86_400);
        assert_eq!(c.limits.dedup_ttl_secs, 7 * 86_400);
        assert_eq!(c.tenants[0].default_priority, 10);
    }

    #[test]
    fn unknown_field_is_named() {
        let e = err(&format!("{MINIMAL}\nbogus = 1\n"));
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn bad_region_names_field_and_fix() {
        let e = err(&MINIMAL.replace("\"ES\"", "\"Spain\""));
        assert!(e.contains("tenants[0].default_region"), "{e}");
        assert!(e.contains("two capital letters"), "{e}");
    }

    #[test]
    fn unknown_queue_reference_is_named() {
        let e = err(&MINIMAL.replace("default_queue = \"support\"", "default_queue = \"sales\""));
        assert!(e.contains("tenants[0].default_queue"), "{e}");
        assert!(e.contains("\"sales\" is not defined"), "{e}");
    }

    #[test]
    fn zero_sla_is_refused() {
        let e = err(&MINIMAL.replace("sla_target_secs = 60", "sla_target_secs = 0"));
        assert!(e.contains("tenants[0].queues[0].sla_target_secs"), "{e}");
    }

    #[test]
    fn bad_regex_is_named() {
        let text = format!(
            "{MINIMAL}\n[[tenants.intents]]\nname = \"x\"\nmode = \"bot\"\npatterns = [\"(unclosed\"]\n"
        );
        let e = err(&text);
        assert!(e.contains("tenants[0].intents[0].patterns[0]"), "{e}");
    }

    #[test]
    fn human_intent_without_queue_is_refused() {
        let text = format!(
            "{MINIMAL}\n[[tenants.intents]]\nname = \"x\"\nmode = \"human\"\nkeywords = [\"x\"]\n"
        );
        let e = err(&text);
        assert!(e.contains("tenants[0].intents[0].queue"), "{e}");
    }

    #[test]
    fn fallback_cycle_is_refused() {
        let text = r#"
            [[tenants]]
            id = "t"
            default_region = "ES"
            default_queue = "a"
            [[tenants.queues]]
            name = "a"
            sla_target_secs = 1
            max_wait_secs = 1
            fallback = "b"
            [[tenants.queues]]
            name = "b"
            sla_target_secs = 1
            max_wait_secs = 1
            fallback = "a"
        "#;
        let e = err(text);
        assert!(e.contains("loops back"), "{e}");
    }

    #[test]
    fn retention_shorter_than_window_is_refused() {
        let e = err(&format!(
            "[limits]\nconversation_retention_secs = 60\n{MINIMAL}"
        ));
        assert!(e.contains("limits.conversation_retention_secs"), "{e}");
    }

    #[test]
    fn quota_defaults_are_the_safe_tier() {
        let c = Config::from_toml_str(MINIMAL).unwrap();
        let q = &c.tenants[0].quotas;
        assert_eq!(q.messaging_limit.customers(), Some(250));
        assert_eq!(q.low_priority, vec![Category::Marketing]);
        let text = format!(
            "{MINIMAL}\n[tenants.quotas]\nmessaging_limit = \"unlimited\"\n[[tenants.numbers]]\nid = \"+34910000000\"\n"
        );
        let c = Config::from_toml_str(&text).unwrap();
        assert_eq!(c.tenants[0].quotas.messaging_limit.customers(), None);
        assert_eq!(c.tenants[0].numbers[0].mps, 80);
    }

    #[test]
    fn bad_quotas_are_named() {
        let e = err(&format!(
            "{MINIMAL}\n[tenants.quotas]\nbatch_threshold = 1.5\n"
        ));
        assert!(e.contains("tenants[0].quotas.batch_threshold"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[tenants.quotas]\nmessaging_limit = 0\n"
        ));
        assert!(e.contains("tenants[0].quotas.messaging_limit"), "{e}");
        let e = err(&format!(
            "{MINIMAL}\n[[tenants.numbers]]\nid = \"x\"\nmps = 0\n"
        ));
        assert!(e.contains("tenants[0].numbers[0].mps"), "{e}");
    }

    #[test]
    fn duplicate_tenant_is_refused() {
        let e = err(&format!("{MINIMAL}{MINIMAL}"));
        assert!(e.contains("tenants[1].id"), "{e}");
    }

    #[test]
    fn no_tenant_is_refused() {
        let e = err("");
        assert!(e.contains("no tenant"), "{e}");
    }
}
