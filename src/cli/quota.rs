//! `switchboard quota ...`: the SRE's command line for the running service's quotas (the
//! `switchboard.v1.Quotas` service).
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use switchboard::proto::{self, quotas_client::QuotasClient};

use super::{Remote, now_ms, time};

#[derive(Args, Debug)]
pub struct QuotaArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: QuotaCmd,
}

#[derive(Subcommand, Debug)]
enum QuotaCmd {
    /// Every tenant's quota state.
    List,
    /// One tenant's quota state: limit, usage, batch mode, numbers, overrides.
    Get { tenant: String },
    /// Set a time-boxed, audited override.
    Override(OverrideArgs),
    /// End an override before its time.
    Clear {
        tenant: String,
        override_id: u64,
        #[arg(long, env = "USER", default_value = "cli")]
        actor: String,
    },
    /// The audit log, newest first.
    Audit {
        tenant: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Project a campaign against the messaging limit.
    Plan {
        tenant: String,
        /// New customers the campaign reaches.
        #[arg(long)]
        customers: u64,
        /// Messages per customer.
        #[arg(long, default_value_t = 3)]
        interactions: u32,
        /// How long the campaign sends, e.g. 48h.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Start after this long (default: now), e.g. 2h.
        #[arg(long, value_parser = humantime::parse_duration)]
        start_in: Option<Duration>,
    },
    /// Re-read the config file the service started with (routing rules, quotas, numbers; the
    /// same as `switchboard config reload`); an invalid file is refused.
    Reload {
        #[arg(long, env = "USER", default_value = "cli")]
        actor: String,
    },
}

#[derive(Args, Debug)]
#[group(id = "change", required = true, multiple = false)]
struct Change {
    /// New messaging limit (unique customers per 24 h).
    #[arg(long, group = "change")]
    limit: Option<u64>,
    /// No messaging limit.
    #[arg(long, group = "change")]
    unlimited: bool,
    /// Batch threshold, a share of the limit (e.g. 0.9).
    #[arg(long, group = "change")]
    threshold: Option<f64>,
    /// Reserve for high-priority sends, a share of the limit.
    #[arg(long, group = "change")]
    reserve: Option<f64>,
    /// A business number's throughput in messages per second (with --number).
    #[arg(long, group = "change", requires = "number")]
    mps: Option<u32>,
    /// Put a rule in shadow mode: throughput, pair, messaging_limit or window.
    #[arg(long, group = "change")]
    shadow: Option<String>,
}

#[derive(Args, Debug)]
struct OverrideArgs {
    tenant: String,
    #[command(flatten)]
    change: Change,
    /// The business number for --mps.
    #[arg(long)]
    number: Option<String>,
    /// Bucket size for --mps (default: one second's worth).
    #[arg(long, requires = "mps")]
    burst: Option<u32>,
    /// With --shadow: take the rule out of shadow mode instead.
    #[arg(long, requires = "shadow")]
    off: bool,
    /// Why (it goes to the audit log).
    #[arg(long)]
    reason: String,
    /// How long the override lasts, e.g. 6h, 2d.
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    duration: Duration,
    #[arg(long, env = "USER", default_value = "cli")]
    actor: String,
}

pub async fn run(args: QuotaArgs) -> anyhow::Result<()> {
    let remote = args.remote;
    let (channel, bearer) = remote.connect().await?;
    let mut client = QuotasClient::with_interceptor(channel, bearer);
    match args.command {
        QuotaCmd::List => {
            let list = client.list(proto::ListQuotasRequest {}).await?.into_inner();
            remote.show(&list, |l| l.tenants.iter().for_each(print_quota))?;
        }
        QuotaCmd::Get { tenant } => {
            let q = client.get(proto::QuotaRef { tenant }).await?.into_inner();
            remote.show(&q, print_quota)?;
        }
        QuotaCmd::Override(o) => {
            let change = override_change(&o)?;
            let info = client
                .set_override(proto::SetOverrideRequest {
                    tenant: o.tenant,
                    reason: o.reason,
                    actor: o.actor,
                    expires_in_ms: o.duration.as_millis() as u64,
                    change: Some(change),
                })
                .await?
                .into_inner();
            remote.show(&info, |info| {
                println!(
                    "override {} set: {} = {} until {}",
                    info.id,
                    info.target,
                    info.value,
                    time(info.expires_at_ms)
                )
            })?;
        }
        QuotaCmd::Clear {
            tenant,
            override_id,
            actor,
        } => {
            let info = client
                .clear_override(proto::ClearOverrideRequest {
                    tenant,
                    override_id,
                    actor,
                })
                .await?
                .into_inner();
            remote.show(&info, |info| {
                println!(
                    "override {} cleared ({} = {})",
                    info.id, info.target, info.value
                )
            })?;
        }
        QuotaCmd::Audit { tenant, limit } => {
            let audit = client
                .list_audit(proto::ListAuditRequest { tenant, limit })
                .await?
                .into_inner();
            remote.show(&audit, |audit| {
                for e in &audit.entries {
                    println!(
                        "{}  {:<16} {:<10} {}: {} -> {}  ({})",
                        time(e.at_ms),
                        e.action,
                        e.actor,
                        e.target,
                        e.before,
                        e.after,
                        e.reason
                    );
                }
            })?;
        }
        QuotaCmd::Plan {
            tenant,
            customers,
            interactions,
            duration,
            start_in,
        } => {
            let start_ms = start_in.map_or(0, |d| now_ms() + d.as_millis() as i64);
            let p = client
                .plan_campaign(proto::PlanCampaignRequest {
                    tenant,
                    customers,
                    interactions,
                    start_ms,
                    duration_ms: duration.as_millis() as u64,
                })
                .await?
                .into_inner();
            remote.show(&p, print_plan)?;
        }
        QuotaCmd::Reload { actor } => reload(&mut client, &remote, actor).await?,
    }
    Ok(())
}

/// `switchboard config reload`.
#[derive(Args, Debug)]
pub struct ReloadArgs {
    #[command(flatten)]
    remote: Remote,
    #[arg(long, env = "USER", default_value = "cli")]
    actor: String,
}

pub async fn reload_command(args: ReloadArgs) -> anyhow::Result<()> {
    let (channel, bearer) = args.remote.connect().await?;
    reload(
        &mut QuotasClient::with_interceptor(channel, bearer),
        &args.remote,
        args.actor,
    )
    .await
}

/// Asks for a reload and prints what changed, a line a change.
async fn reload(
    client: &mut QuotasClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, super::Bearer>,
    >,
    remote: &Remote,
    actor: String,
) -> anyhow::Result<()> {
    let r = client
        .reload_config(proto::ReloadConfigRequest { actor })
        .await?
        .into_inner();
    remote.show(&r, |r| r.notes.iter().for_each(|note| println!("{note}")))
}

fn override_change(o: &OverrideArgs) -> anyhow::Result<proto::set_override_request::Change> {
    use proto::set_override_request::Change as C;
    let c = &o.change;
    Ok(if let Some(n) = c.limit {
        C::MessagingLimit(n)
    } else if c.unlimited {
        C::MessagingUnlimited(true)
    } else if let Some(x) = c.threshold {
        C::BatchThreshold(x)
    } else if let Some(x) = c.reserve {
        C::Reserve(x)
    } else if let Some(mps) = c.mps {
        C::NumberRate(proto::NumberRate {
            number: o.number.clone().unwrap_or_default(),
            mps,
            burst: o.burst.unwrap_or(0),
        })
    } else if let Some(rule) = &c.shadow {
        let rule = match rule.as_str() {
            "throughput" => proto::QuotaRule::Throughput,
            "pair" => proto::QuotaRule::Pair,
            "messaging_limit" => proto::QuotaRule::MessagingLimit,
            "window" => proto::QuotaRule::Window,
            other => bail!(
                "unknown rule {other:?} for --shadow; use throughput, pair, messaging_limit or window"
            ),
        };
        C::Shadow(proto::ShadowRule {
            rule: rule as i32,
            on: !o.off,
        })
    } else {
        bail!("say what to change: --limit, --unlimited, --threshold, --reserve, --mps or --shadow")
    })
}

fn print_quota(q: &proto::PortfolioQuota) {
    let limit = if q.unlimited {
        "unlimited".to_owned()
    } else {
        q.messaging_limit.to_string()
    };
    println!("tenant {}", q.tenant);
    println!(
        "  messaging limit {limit}: {} customers in the last 24 h ({:.1}%), batch mode {} at {:.0}%, reserve {:.0}%, {} queued",
        q.used,
        q.usage_ratio * 100.0,
        if q.batch_mode { "ON" } else { "off" },
        q.batch_threshold * 100.0,
        q.reserve * 100.0,
        q.queued
    );
    if !q.shadow.is_empty() {
        let rules: Vec<&str> = q
            .shadow
            .iter()
            .map(|r| {
                proto::QuotaRule::try_from(*r)
                    .map(|r| r.as_str_name())
                    .unwrap_or("?")
            })
            .collect();
        println!("  shadow mode: {}", rules.join(", "));
    }
    for n in &q.numbers {
        let mut line = format!(
            "  number {}: {} mps, burst {}, {} tokens",
            n.id, n.mps, n.burst, n.tokens
        );
        if n.backoff_until_ms > 0 {
            line += &format!(", backing off until {}", time(n.backoff_until_ms));
        }
        if n.marketing_paused_until_ms > 0 {
            line += &format!(
                ", marketing paused until {}",
                time(n.marketing_paused_until_ms)
            );
        }
        println!("{line}");
    }
    if let Some(f) = &q.forecast
        && !q.unlimited
    {
        let at = |ms: i64| match ms {
            0 => "not within 24 h at this pace".to_owned(),
            ms => time(ms),
        };
        println!(
            "  forecast at {:.0} new customers/h: batch threshold {}, limit {}, queue drained {}",
            f.new_customers_per_hour,
            at(f.batch_threshold_at_ms),
            at(f.limit_at_ms),
            at(f.queue_drained_at_ms)
        );
    }
    for o in &q.overrides {
        println!(
            "  override {}: {} = {} until {} by {} ({})",
            o.id,
            o.target,
            o.value,
            time(o.expires_at_ms),
            o.actor,
            o.reason
        );
    }
}

fn print_plan(p: &proto::CampaignPlan) {
    println!(
        "{} messages; needs {:.1} mps of {} available",
        p.messages, p.mps_needed, p.mps_available
    );
    if p.unlimited {
        println!("messaging limit: unlimited");
    } else {
        println!(
            "messaging limit {}: {} counted at start, peak {} ({:.1}%)",
            p.messaging_limit,
            p.used_at_start,
            p.peak_used,
            p.peak_ratio * 100.0
        );
    }
    if p.batch_mode {
        println!("batch mode engages at {}", time(p.batch_mode_at_ms));
    } else {
        println!("batch mode does not engage");
    }
    println!(
        "{} sent as they come, {} released in batches",
        p.sent_directly, p.batched
    );
    if p.completes {
        println!("last first message goes at {}", time(p.done_at_ms));
    } else {
        println!("the release does not finish within 30 days");
    }
}
