//! `[cloud_api]`: the WhatsApp Cloud API sender's endpoints, token and retry policy (see
//! `crate::cloud_api` for the sender).
use serde::Deserialize;

/// A value that is never shown (the bearer token): `Debug` prints `***`.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "(none)" } else { "***" })
    }
}

/// `[cloud_api]`: the real sender (off by default: the embedded sender logs and
/// acknowledges). Used without Kafka; in Kafka mode sends go to the dispatch topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudApiConfig {
    pub enabled: bool,
    pub base_url: String,
    /// A second endpoint to fail over to (a regional or proxy URL); none: no failover.
    pub backup_url: Option<String>,
    pub api_version: String,
    /// The system-user access token. Prefer `SWITCHBOARD_CLOUD_API__TOKEN` to the file.
    /// Tenants with a token of their own (`tenants`) use theirs.
    pub token: Secret,
    /// Per-tenant access tokens (each WhatsApp Business Account has its own).
    pub tenants: Vec<TenantToken>,
    /// The per-tenant tokens, read from where they were given (by `resolve`).
    #[serde(skip)]
    pub tenant_tokens: std::collections::BTreeMap<String, Secret>,
    /// Template language code sent with template messages.
    pub template_language: String,
    pub timeout_ms: u64,
    pub max_retries: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub probe_interval_ms: u64,
    pub probe_slow_ms: u64,
    pub probe_failures: u32,
    /// The phone-number id probes ask about; default: the first configured number.
    pub probe_number: Option<String>,
}

impl Default for CloudApiConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: "https://graph.facebook.com".into(),
            backup_url: None,
            api_version: "v21.0".into(),
            token: Secret::default(),
            tenants: Vec::new(),
            tenant_tokens: Default::default(),
            template_language: "es".into(),
            timeout_ms: 10_000,
            max_retries: 3,
            backoff_base_ms: 200,
            backoff_max_ms: 5_000,
            probe_interval_ms: 5_000,
            probe_slow_ms: 1_500,
            probe_failures: 3,
            probe_number: None,
        }
    }
}

/// One `[[cloud_api.tenants]]` entry: a tenant's own access token, from an environment
/// variable or a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantToken {
    pub tenant: String,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
}

impl CloudApiConfig {
    /// The token `tenant`'s sends carry: its own, else the shared one.
    pub fn token_for(&self, tenant: &str) -> &Secret {
        self.tenant_tokens.get(tenant).unwrap_or(&self.token)
    }

    /// Reads the per-tenant tokens into `tenant_tokens`; the error names the field.
    pub fn resolve(&mut self) -> Result<(), (String, String)> {
        let mut tokens = std::collections::BTreeMap::new();
        for (i, t) in self.tenants.iter().enumerate() {
            let at = format!("cloud_api.tenants[{i}]");
            let token = super::webhook::read_secret(
                &format!("{at}.token"),
                t.token_env.as_deref(),
                t.token_file.as_deref(),
            )?
            .ok_or((
                format!("{at}.token_env"),
                "is missing: give the tenant's access token in an environment variable \
                 (token_env) or a file (token_file)"
                    .to_owned(),
            ))?;
            if tokens.insert(t.tenant.clone(), token).is_some() {
                return Err((
                    format!("{at}.tenant"),
                    format!("tenant {:?} has two tokens; keep one", t.tenant),
                ));
            }
        }
        self.tenant_tokens = tokens;
        Ok(())
    }

    /// Checks the section; the error names the field. `tenants`: every configured tenant.
    pub fn validate<'a>(
        &self,
        mut tenants: impl Iterator<Item = &'a str>,
    ) -> Result<(), (String, String)> {
        if !self.enabled {
            return Ok(());
        }
        let bad = |f: &str, p: &str| Err((format!("cloud_api.{f}"), p.to_owned()));
        if self.token.expose().trim().is_empty()
            && let Some(t) = tenants.find(|t| !self.tenant_tokens.contains_key(*t))
        {
            return bad(
                "token",
                &format!(
                    "is empty and tenant {t:?} has no token of its own; set \
                     SWITCHBOARD_CLOUD_API__TOKEN to the system user's access token, or give \
                     the tenant one under [[cloud_api.tenants]]"
                ),
            );
        }
        for (field, url) in [
            ("base_url", Some(&self.base_url)),
            ("backup_url", self.backup_url.as_ref()),
        ] {
            if let Some(url) = url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return bad(
                    field,
                    "must start with https:// (or http:// for a local mock)",
                );
            }
        }
        for (field, ms) in [
            ("timeout_ms", self.timeout_ms),
            ("probe_interval_ms", self.probe_interval_ms),
            ("probe_slow_ms", self.probe_slow_ms),
        ] {
            if ms == 0 {
                return bad(field, "must be above 0 (milliseconds)");
            }
        }
        if self.probe_failures == 0 {
            return bad("probe_failures", "must be at least 1");
        }
        if self.backoff_base_ms == 0 || self.backoff_max_ms < self.backoff_base_ms {
            return bad(
                "backoff_base_ms",
                "must be above 0 and at most backoff_max_ms",
            );
        }
        Ok(())
    }
}
