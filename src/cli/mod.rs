//! The operators' command line: `switchboard quota ...`, `switchboard sends ...` and
//! `switchboard consent ...`. Each subcommand is one gRPC call to the running service,
//! printed for people; what they share is how to reach it ([`Remote`], flags accepted before
//! or after the subcommand) and what their exit code says ([`exit_code`]).
pub mod consent;
pub mod quota;
pub mod sends;

use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// Where the service is and how to call it. Global: before or after the subcommand
/// (`switchboard quota list --addr h:p` as well as `switchboard quota --addr h:p list`).
#[derive(Args, Debug)]
pub struct Remote {
    /// The service's gRPC address (host:port).
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_GRPC_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    addr: String,
    /// Bearer token for the calls that need one (when the service has `[[auth.tokens]]`).
    /// Prefer the environment variable: a flag shows in `ps`.
    #[arg(long, global = true, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The service uses TLS: trust this CA certificate (PEM); --addr then takes https.
    #[arg(long, global = true)]
    ca: Option<std::path::PathBuf>,
    /// With --ca: the name the service's certificate is for.
    #[arg(long, global = true, default_value = "localhost")]
    domain: String,
    /// How answers are printed: for people, or as JSON for scripts (one document per
    /// command; enums by name, times in ms since the epoch).
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
}

impl Remote {
    /// Prints an answer as `--output` says: `text` for people, or the message as JSON.
    pub fn show<T: serde::Serialize>(
        &self,
        answer: &T,
        text: impl FnOnce(&T),
    ) -> anyhow::Result<()> {
        match self.output {
            Output::Text => text(answer),
            Output::Json => println!("{}", serde_json::to_string_pretty(answer)?),
        }
        Ok(())
    }
}

/// The service could not be reached (exit code [`UNREACHABLE`]).
#[derive(Debug, thiserror::Error)]
#[error("cannot reach switchboard at {url}; is it running? (--addr): {cause}")]
pub struct Unreachable {
    url: String,
    cause: String,
}

/// Exit codes of the service commands, for scripts: 0 done; 2 a usage error (clap's);
/// [`REFUSED`] the service answered with an error (invalid, not found, denied...);
/// [`UNREACHABLE`] it could not be reached or did not answer (UNAVAILABLE, a deadline);
/// 1 anything else.
pub const REFUSED: i32 = 3;
pub const UNREACHABLE: i32 = 4;

/// The exit code for a command's error (see [`REFUSED`]).
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<Unreachable>().is_some() {
        return UNREACHABLE;
    }
    match e.downcast_ref::<tonic::Status>().map(tonic::Status::code) {
        Some(tonic::Code::Unavailable | tonic::Code::DeadlineExceeded) => UNREACHABLE,
        Some(_) => REFUSED,
        None => 1,
    }
}

/// Puts `authorization: Bearer <token>` on a call when a token was given.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(b) = &self.0 {
            request.metadata_mut().insert("authorization", b.clone());
        }
        Ok(request)
    }
}

impl Remote {
    /// Connects, with a message that says what to check when the service cannot be reached.
    pub async fn connect(&self) -> anyhow::Result<(Channel, Bearer)> {
        let endpoint = endpoint(&self.addr, self.ca.as_deref(), &self.domain)?;
        let url = endpoint.uri().to_string();
        let channel = endpoint.connect().await.map_err(|e| {
            // The transport error's own text is terse ("transport error"): add its causes.
            let mut cause = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                cause += &format!(": {s}");
                source = s.source();
            }
            Unreachable { url, cause }
        })?;
        let bearer = self
            .token
            .as_deref()
            .map(|t| format!("Bearer {}", t.trim()).parse())
            .transpose()
            .context("the token has characters a header cannot carry")?;
        Ok((channel, Bearer(bearer)))
    }
}

/// The service's gRPC endpoint: `addr` (host:port or a URL), over TLS trusting `ca` for
/// `domain` when a CA is given (also for `switchboard health`).
pub fn endpoint(
    addr: &str,
    ca: Option<&std::path::Path>,
    domain: &str,
) -> anyhow::Result<tonic::transport::Endpoint> {
    let scheme = if ca.is_some() { "https" } else { "http" };
    let url = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("{scheme}://{addr}")
    };
    let endpoint = Channel::from_shared(url).context("bad --addr")?;
    let Some(ca) = ca else {
        return Ok(endpoint);
    };
    let pem = std::fs::read(ca).with_context(|| format!("cannot read --ca {}", ca.display()))?;
    Ok(endpoint.tls_config(
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem))
            .domain_name(domain),
    )?)
}

/// Now, in ms since the epoch.
fn now_ms() -> i64 {
    use switchboard::clock::Clock as _;
    switchboard::clock::SystemClock.now().as_millis() as i64
}

/// A time in ms since the epoch as people read it: RFC 3339 in UTC to the second, and how far
/// from now ("2026-12-01T18:47:00Z (in 47m)", "… (3m ago)", "… (now)").
fn time(ms: i64) -> String {
    time_from(ms, now_ms())
}

fn time_from(ms: i64, now: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let minutes = (ms - now) / 60_000;
    let relative = match minutes {
        0 => "now".to_owned(),
        m if m > 0 => format!("in {}", span(m)),
        m => format!("{} ago", span(-m)),
    };
    format!("{} ({relative})", humantime::format_rfc3339_seconds(t))
}

/// Minutes as "47m", "3h 05m", "2d 4h".
fn span(minutes: i64) -> String {
    match minutes {
        m if m < 60 => format!("{m}m"),
        m if m < 24 * 60 => format!("{}h {:02}m", m / 60, m % 60),
        m => format!("{}d {}h", m / (24 * 60), m % (24 * 60) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_times_and_from_now() {
        let now = 1_764_608_400_000; // 2025-12-01T17:00:00Z
        assert_eq!(
            time_from(now + 47 * 60_000, now),
            "2025-12-01T17:47:00Z (in 47m)"
        );
        assert_eq!(
            time_from(now - 3 * 60_000, now),
            "2025-12-01T16:57:00Z (3m ago)"
        );
        assert_eq!(time_from(now + 20_000, now), "2025-12-01T17:00:20Z (now)");
        assert_eq!(span(185), "3h 05m");
        assert_eq!(span(3 * 24 * 60 + 4 * 60 + 59), "3d 4h");
    }
}
