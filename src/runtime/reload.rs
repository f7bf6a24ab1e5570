//! Hot reload: the config file read again, each tenant handed its new routing rules (intents,
//! queues, the bot) and quotas.
use super::*;

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

    /// Applies the file's routing rules, quotas and numbers; returns what changed, per tenant.
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
            let routing = self
                .runtime
                .call(Command::ReloadRouting {
                    tenant: tenant.clone(),
                    config: Box::new(t.clone()),
                })
                .await
                .map_err(|error| ReloadError::Tenant {
                    tenant: tenant.clone(),
                    error,
                })?;
            match routing {
                Reply::Reloaded(changes) if changes.is_empty() => {
                    notes.push(format!("tenant {}: routing rules unchanged", t.id));
                }
                Reply::Reloaded(changes) => {
                    notes.extend(changes.into_iter().map(|c| format!("tenant {}: {c}", t.id)))
                }
                _ => {}
            }
            self.runtime
                .call(Command::ReloadQuotas {
                    tenant: tenant.clone(),
                    numbers: t.numbers.clone(),
                    quotas: Box::new(t.quotas.clone()),
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
