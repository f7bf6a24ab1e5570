//! The `switchboard` binary: `serve` (the default) runs the service; `config` checks or prints
//! a configuration. Only this file listens to signals and uses `anyhow`.
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use switchboard::config::{self, Config};
use switchboard::server;

mod cli;

/// mimalloc: see Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Message router and rate limiter for WhatsApp Business traffic in contact centers.
///
/// With no subcommand it serves on the embedded demo configuration: no broker, no file needed.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args, Debug, Default)]
struct ServeArgs {
    /// Config file (TOML). Default: $SWITCHBOARD_CONFIG, else the embedded demo config.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// gRPC listen address, host:port (overrides SWITCHBOARD_GRPC_ADDR and the file).
    #[arg(long)]
    grpc_addr: Option<SocketAddr>,
    /// Prometheus /metrics listen address, host:port (overrides SWITCHBOARD_METRICS_ADDR).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Webhook endpoint listen address, host:port (overrides SWITCHBOARD_WEBHOOK_ADDR).
    #[arg(long)]
    webhook_addr: Option<SocketAddr>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the service (the default).
    Serve(ServeArgs),
    /// Run the egress: send the Kafka dispatch topic through the WhatsApp Cloud API and put
    /// the answers on the outcomes topic (Kafka mode; needs [cloud_api] on).
    Egress(ServeArgs),
    /// Run the webhook endpoint alone: Meta's signed webhooks onto the Kafka webhooks topic,
    /// for the replicas to route (Kafka mode; needs a webhook app secret). A stateless edge.
    Webhook(ServeArgs),
    /// Check or print configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Read and tune the running service's quotas (list, get, override, clear, audit, plan,
    /// reload).
    Quota(Box<cli::quota::QuotaArgs>),
    /// A send's status; cancel waiting sends (by id, idempotency key, or customer and tag);
    /// pause and resume a campaign by tag.
    Sends(Box<cli::sends::SendsArgs>),
    /// Read or set a customer's consent to marketing (audited).
    Consent(Box<cli::consent::ConsentArgs>),
    /// Print the SHA-256 of a bearer token read from stdin, for `[[auth.tokens]] sha256`.
    #[command(subcommand)]
    Auth(AuthCmd),
    /// Print a completion script for a shell: `switchboard completions bash >
    /// /etc/bash_completion.d/switchboard` (also zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Ask a running service for its gRPC health (grpc.health.v1): exit 0 when it serves, 1
    /// otherwise. For container health checks (no probe binary needed).
    Health {
        /// The service's gRPC address (host:port).
        #[arg(long, env = "SWITCHBOARD_GRPC_ADDR", default_value = "127.0.0.1:50051")]
        addr: String,
        /// Give up after this long.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// The service uses TLS: trust this CA certificate (PEM).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// With --ca: the name the certificate is for.
        #[arg(long, default_value = "localhost")]
        domain: String,
    },
}

#[derive(Subcommand, Debug)]
enum AuthCmd {
    /// Read a token from stdin and print its SHA-256 (hex): what the config stores.
    Hash,
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Load and validate the configuration (file, then SWITCHBOARD_* overrides); print a summary.
    Check,
    /// Print the embedded demo configuration, a starting point for your own file.
    Example,
    /// Make the running service re-read its config file: routing rules (intents, queues,
    /// the bot), quotas and numbers (also `kill -HUP`; `quota reload` does the same).
    Reload(Box<cli::quota::ReloadArgs>),
}

fn main() -> anyhow::Result<()> {
    switchboard::allocator::tune();
    let cli = Cli::parse();
    match cli.command {
        None => serve(cli.serve),
        Some(Cmd::Serve(mut args)) => {
            args.config = args.config.or(cli.serve.config);
            serve(args)
        }
        Some(Cmd::Egress(mut args)) => {
            args.config = args.config.or(cli.serve.config);
            egress(args)
        }
        Some(Cmd::Webhook(mut args)) => {
            args.config = args.config.or(cli.serve.config);
            webhook(args)
        }
        Some(Cmd::Config(ConfigCmd::Check)) => {
            let c = Config::load(cli.serve.config.as_deref())?;
            println!(
                "configuration is valid: {} tenant(s), {} shard(s), gRPC on {}, metrics on {}",
                c.tenants.len(),
                c.runtime.shards,
                c.grpc_addr,
                c.metrics_addr
            );
            if c.kafka.brokers.is_empty() {
                println!(
                    "  kafka: off (embedded bus only; set SWITCHBOARD_KAFKA_BROKERS to turn it on)"
                );
            } else {
                println!(
                    "  kafka: brokers {}, group {}, reading {} and {}",
                    c.kafka.brokers,
                    c.kafka.group_id,
                    c.kafka.inbound_topic,
                    c.kafka.webhooks_topic
                );
            }
            for t in &c.tenants {
                println!(
                    "  tenant {:?}: region {}, {} queue(s), {} intent(s), bot {}",
                    t.id,
                    t.default_region,
                    t.queues.len(),
                    t.intents.len(),
                    t.bot.as_deref().unwrap_or("(none)")
                );
            }
            Ok(())
        }
        Some(Cmd::Config(ConfigCmd::Reload(args))) => client(cli::quota::reload_command(*args)),
        Some(Cmd::Config(ConfigCmd::Example)) => {
            print!("{}", config::EMBEDDED_DEFAULT);
            Ok(())
        }
        Some(Cmd::Auth(AuthCmd::Hash)) => {
            let mut token = String::new();
            std::io::stdin()
                .read_line(&mut token)
                .context("cannot read the token from stdin")?;
            let token = token.trim();
            anyhow::ensure!(
                !token.is_empty(),
                "no token on stdin: `echo -n TOKEN | switchboard auth hash`"
            );
            println!("{}", switchboard::auth::hash_token(token));
            Ok(())
        }
        Some(Cmd::Health {
            addr,
            timeout,
            ca,
            domain,
        }) => {
            let serving = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the tokio runtime")?
                .block_on(health(&addr, timeout, ca.as_deref(), &domain));
            match serving {
                Ok(()) => {
                    println!("{addr}: serving");
                    Ok(())
                }
                Err(e) => {
                    eprintln!("{addr}: not serving: {e:#}");
                    std::process::exit(1);
                }
            }
        }
        Some(Cmd::Completions { shell }) => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "switchboard", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(e).context("cannot write the completion script")
                }
                _ => Ok(()),
            }
        }
        Some(Cmd::Quota(args)) => client(cli::quota::run(*args)),
        Some(Cmd::Sends(args)) => client(cli::sends::run(*args)),
        Some(Cmd::Consent(args)) => client(cli::consent::run(*args)),
    }
}

/// Runs one command-line call to the service on a small runtime of its own. A failure exits
/// with a code that says whether the service refused the call or could not be reached
/// (`cli::exit_code`).
fn client(call: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let done = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?
        .block_on(call);
    if let Err(e) = done {
        eprintln!("Error: {e:#}");
        std::process::exit(cli::exit_code(&e));
    }
    Ok(())
}

/// Ok when the service at `addr` answers SERVING to a grpc.health.v1 check within `timeout`.
async fn health(
    addr: &str,
    timeout: std::time::Duration,
    ca: Option<&std::path::Path>,
    domain: &str,
) -> anyhow::Result<()> {
    use tonic_health::pb::health_check_response::ServingStatus;
    let check = async {
        let channel = cli::endpoint(addr, ca, domain)?
            .connect()
            .await
            .context("cannot connect")?;
        let status = tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .context("health check failed")?
            .into_inner()
            .status();
        anyhow::ensure!(status == ServingStatus::Serving, "status {status:?}");
        Ok(())
    };
    tokio::time::timeout(timeout, check)
        .await
        .with_context(|| format!("no answer within {timeout:?}"))?
}

/// The config `args` name, with their listen addresses applied; logging set up.
fn load(args: &ServeArgs) -> anyhow::Result<Config> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(a) = args.grpc_addr {
        config.grpc_addr = a;
    }
    if let Some(a) = args.metrics_addr {
        config.metrics_addr = a;
    }
    if let Some(a) = args.webhook_addr {
        config.webhook_addr = a;
    }
    Ok(config)
}

/// The multi-threaded runtime every long-running subcommand runs on.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

fn egress(args: ServeArgs) -> anyhow::Result<()> {
    let config = load(&args)?;
    runtime()?.block_on(async move {
        let metrics = server::bind_metrics(&config).await?;
        println!(
            "switchboard {} egress: {} -> {} -> {}\n  metrics: http://{}/metrics",
            env!("CARGO_PKG_VERSION"),
            config.kafka.dispatch_topic,
            config.cloud_api.base_url,
            config.kafka.outcomes_topic,
            metrics.local_addr()?,
        );
        server::run_egress(config, metrics, shutdown_signal()).await?;
        Ok(())
    })
}

fn webhook(args: ServeArgs) -> anyhow::Result<()> {
    let config = load(&args)?;
    runtime()?.block_on(async move {
        let (webhook, metrics) = (
            server::bind_webhook(&config).await?,
            server::bind_metrics(&config).await?,
        );
        println!(
            "switchboard {} webhook: http://{}{} -> {}\n  metrics: http://{}/metrics",
            env!("CARGO_PKG_VERSION"),
            webhook.local_addr()?,
            switchboard::webhook::PATH,
            config.kafka.webhooks_topic,
            metrics.local_addr()?,
        );
        server::run_webhook(config, webhook, metrics, shutdown_signal()).await?;
        Ok(())
    })
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = load(&args)?;
    let runtime = runtime()?;
    runtime.block_on(async move {
        let (grpc, metrics) = server::bind(&config).await?;
        let path: Option<PathBuf> = args
            .config
            .or_else(|| std::env::var_os(config::CONFIG_ENV).map(Into::into));
        let source = match &path {
            Some(path) => format!("config {}", path.display()),
            None => "the embedded demo config".to_owned(),
        };
        println!(
            "switchboard {} serving on {source}\n  gRPC:    {}\n  metrics: http://{}/metrics",
            env!("CARGO_PKG_VERSION"),
            grpc.local_addr()?,
            metrics.local_addr()?,
        );
        let webhook = match config.webhook.enabled() {
            true => Some(server::bind_webhook(&config).await?),
            false => None,
        };
        if let Some(listener) = &webhook {
            println!(
                "  webhooks: http://{}{}",
                listener.local_addr()?,
                switchboard::webhook::PATH
            );
        }
        let parts = server::Parts {
            config_path: path,
            reloads: Some(reload_signal()),
            webhook,
            ..server::Parts::for_config(&config)?
        };
        if config.cloud_api.enabled && config.kafka.brokers.is_empty() {
            println!(
                "  sends:   the WhatsApp Cloud API at {}",
                config.cloud_api.base_url
            );
        }
        server::run_with(config, grpc, metrics, shutdown_signal(), parts).await?;
        Ok(())
    })
}

/// SIGHUP asks for a config reload. The handler is installed here, before the service
/// serves: a SIGHUP that arrives early is a reload, not the default (exit).
fn reload_signal() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    // A reload already pending covers this one too.
                    let _ = tx.try_send(());
                }
            });
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload with `switchboard quota reload`")
        }
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

/// Ctrl-C (SIGINT) or SIGTERM. The handlers are installed when this is called, before the
/// service serves, so a signal that arrives early stops it cleanly instead of killing it.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let streams = [SignalKind::interrupt(), SignalKind::terminate()].map(signal);
    async move {
        match streams {
            [Ok(mut int), Ok(mut term)] => {
                tokio::select! {
                    _ = int.recv() => {},
                    _ = term.recv() => {},
                }
            }
            _ => {
                tracing::error!(
                    "cannot listen for SIGINT or SIGTERM; stop the service with SIGKILL"
                );
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
