//! `[webhook]`: the HTTP endpoint Meta posts WhatsApp webhooks to (see `crate::webhook`), and
//! the secrets it checks them with.
//!
//! One Meta app: `SWITCHBOARD_WEBHOOK__APP_SECRET` and `SWITCHBOARD_WEBHOOK__VERIFY_TOKEN` (or
//! `app_secret_file` / `verify_token_file`), serving every tenant. Several apps: one
//! `[[webhook.apps]]` each, with its secrets in files or named environment variables and the
//! tenants whose numbers it may post about. The endpoint is off until a secret is configured.
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::cloud_api::Secret;

/// `[webhook]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// The app secret of the one Meta app (prefer `SWITCHBOARD_WEBHOOK__APP_SECRET`).
    pub app_secret: Secret,
    /// ...or a file holding it (a mounted secret).
    pub app_secret_file: Option<PathBuf>,
    /// The verify token typed into the app's webhook settings (prefer
    /// `SWITCHBOARD_WEBHOOK__VERIFY_TOKEN`).
    pub verify_token: Secret,
    pub verify_token_file: Option<PathBuf>,
    /// More apps, each with its own secrets and tenants.
    pub apps: Vec<WebhookAppConfig>,
    /// The largest body accepted; past it the answer is 413. Meta's payloads are a few KiB;
    /// in Kafka mode it must fit `kafka.max_record_bytes` (both default to 256 KiB).
    pub max_body_bytes: usize,
    /// Kafka mode: how long a post waits for the broker's acknowledgement before it is
    /// answered 503 (Meta retries it). Meta counts an answer slower than about 20 s as a
    /// failure, so keep it well under that.
    pub ack_timeout_ms: u64,
    /// The secrets above, read from where they were given (by `resolve`); never printed.
    #[serde(skip)]
    pub resolved: Vec<WebhookApp>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            app_secret: Secret::default(),
            app_secret_file: None,
            verify_token: Secret::default(),
            verify_token_file: None,
            apps: Vec::new(),
            max_body_bytes: 256 * 1024,
            ack_timeout_ms: 5_000,
            resolved: Vec::new(),
        }
    }
}

/// One `[[webhook.apps]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookAppConfig {
    /// A name for logs and metrics (the app's name or id).
    pub name: String,
    /// The environment variable holding the app secret...
    #[serde(default)]
    pub app_secret_env: Option<String>,
    /// ...or the file holding it.
    #[serde(default)]
    pub app_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub verify_token_env: Option<String>,
    #[serde(default)]
    pub verify_token_file: Option<PathBuf>,
    /// The tenants whose business numbers this app's webhooks may name; empty: every tenant.
    #[serde(default)]
    pub tenants: Vec<String>,
}

/// An app with its secrets read.
#[derive(Debug, Clone)]
pub struct WebhookApp {
    pub name: String,
    pub app_secret: Secret,
    pub verify_token: Secret,
    /// Empty: every tenant.
    pub tenants: Vec<String>,
}

impl WebhookConfig {
    /// On when at least one app secret is configured.
    pub fn enabled(&self) -> bool {
        !self.resolved.is_empty()
    }

    /// Reads the secrets from the environment and files into `resolved`; the error names the
    /// field.
    pub fn resolve(&mut self) -> Result<(), (String, String)> {
        let mut apps = Vec::new();
        let inline = |s: &Secret| (!s.expose().is_empty()).then(|| s.clone());
        let app_secret = match inline(&self.app_secret) {
            Some(s) => Some(s),
            None => read_secret(
                "webhook.app_secret_file",
                None,
                self.app_secret_file.as_deref(),
            )?,
        };
        let verify_token = match inline(&self.verify_token) {
            Some(s) => Some(s),
            None => read_secret(
                "webhook.verify_token_file",
                None,
                self.verify_token_file.as_deref(),
            )?,
        };
        match (app_secret, verify_token) {
            (Some(app_secret), Some(verify_token)) => apps.push(WebhookApp {
                name: "default".into(),
                app_secret,
                verify_token,
                tenants: Vec::new(),
            }),
            (Some(_), None) => {
                return Err((
                    "webhook.verify_token".into(),
                    "is missing: Meta's verification handshake needs it; set \
                     SWITCHBOARD_WEBHOOK__VERIFY_TOKEN (or webhook.verify_token_file)"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err((
                    "webhook.app_secret".into(),
                    "is missing: posts cannot be checked without it; set \
                     SWITCHBOARD_WEBHOOK__APP_SECRET (or webhook.app_secret_file)"
                        .into(),
                ));
            }
            (None, None) => {}
        }
        for (i, app) in self.apps.iter().enumerate() {
            let at = format!("webhook.apps[{i}]");
            if app.name.trim().is_empty() {
                return Err((format!("{at}.name"), "is empty; name the app".into()));
            }
            let needed = |field: &str, env: &Option<String>, file: &Option<PathBuf>| {
                read_secret(&format!("{at}.{field}"), env.as_deref(), file.as_deref())?.ok_or((
                    format!("{at}.{field}_env"),
                    format!("is missing: give the {field} in a file ({field}_file) or an environment variable ({field}_env)"),
                ))
            };
            apps.push(WebhookApp {
                name: app.name.clone(),
                app_secret: needed("app_secret", &app.app_secret_env, &app.app_secret_file)?,
                verify_token: needed(
                    "verify_token",
                    &app.verify_token_env,
                    &app.verify_token_file,
                )?,
                tenants: app.tenants.clone(),
            });
        }
        if self.max_body_bytes == 0 {
            return Err((
                "webhook.max_body_bytes".into(),
                "must be above 0 (bytes)".into(),
            ));
        }
        if self.ack_timeout_ms == 0 {
            return Err((
                "webhook.ack_timeout_ms".into(),
                "must be above 0 (milliseconds)".into(),
            ));
        }
        self.resolved = apps;
        Ok(())
    }
}

/// A secret from the environment variable `env` or the file `file` (surrounding whitespace
/// trimmed); None when neither is given. An empty or unreadable source is an error naming
/// `field` — never the secret.
pub fn read_secret(
    field: &str,
    env: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Secret>, (String, String)> {
    let value = match (env, file) {
        (Some(_), Some(_)) => {
            return Err((
                field.into(),
                "names both an environment variable and a file; keep one".into(),
            ));
        }
        (Some(var), None) => std::env::var(var).map_err(|_| {
            (
                field.into(),
                format!("the environment variable {var} is not set (or not UTF-8)"),
            )
        })?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| (field.into(), format!("cannot read {}: {e}", path.display())))?,
        (None, None) => return Ok(None),
    };
    let value = value.trim();
    if value.is_empty() {
        return Err((field.into(), "the secret it names is empty".into()));
    }
    Ok(Some(Secret::new(value)))
}
