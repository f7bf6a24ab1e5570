//! `switchboard sends ...`: one send's status, cancelling waiting sends, and pausing and
//! resuming a campaign by tag (the `switchboard.v1.Outbound` service), for the operator who
//! must stop a reminder or a misbehaving promotion by hand.
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use switchboard::proto::{self, outbound_client::OutboundClient};

use super::{Remote, time};

#[derive(Args, Debug)]
pub struct SendsArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: SendsCmd,
}

#[derive(Subcommand, Debug)]
enum SendsCmd {
    /// A send's state, by id or idempotency key.
    Status {
        tenant: String,
        #[command(flatten)]
        which: Which,
    },
    /// Cancel a waiting (queued or scheduled) send by id or idempotency key, or every waiting
    /// send to one customer carrying a tag (--customer with --tag).
    Cancel {
        tenant: String,
        #[command(flatten)]
        which: Which,
        /// The customer's number (E.164), with --tag.
        #[arg(long, requires = "tag", conflicts_with_all = ["id", "key"])]
        customer: Option<String>,
        /// The tag the customer's sends carry, with --customer.
        #[arg(long, requires = "customer")]
        tag: Option<String>,
    },
    /// Hold every send carrying a tag (queued, scheduled and new ones) until resumed or the
    /// pause ends; pausing again extends it.
    Pause {
        tenant: String,
        /// The tag the campaign's sends carry.
        #[arg(long)]
        tag: String,
        /// How long the pause lasts at most, e.g. 30m, 2h (up to 31 days).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Why (it goes to the audit log).
        #[arg(long)]
        reason: String,
        #[arg(long, env = "USER", default_value = "cli")]
        actor: String,
    },
    /// End a tag's pause: its held sends go out again, in order, within the quotas.
    Resume {
        tenant: String,
        #[arg(long)]
        tag: String,
        /// Why (optional; it goes to the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long, env = "USER", default_value = "cli")]
        actor: String,
    },
    /// The tenant's paused tags, with when each ends and the sends it holds.
    ListPaused { tenant: String },
}

#[derive(Args, Debug)]
struct Which {
    /// The send's id.
    #[arg(long, conflicts_with = "key")]
    id: Option<String>,
    /// The idempotency key it was requested with.
    #[arg(long)]
    key: Option<String>,
}

pub async fn run(args: SendsArgs) -> anyhow::Result<()> {
    let remote = args.remote;
    let (channel, bearer) = remote.connect().await?;
    let mut client = OutboundClient::with_interceptor(channel, bearer);
    match args.command {
        SendsCmd::Status { tenant, which } => {
            if which.id.is_none() && which.key.is_none() {
                bail!("say which send: --id or --key");
            }
            let s = client
                .get_status(proto::SendRef {
                    tenant,
                    send_id: which.id.unwrap_or_default(),
                    idempotency_key: which.key.unwrap_or_default(),
                })
                .await?
                .into_inner();
            remote.show(&s, |s| {
                let state = proto::SendState::try_from(s.state).map_or("?", |s| s.as_str_name());
                let mut line = format!("send {} ({}): {state}", s.send_id, s.idempotency_key);
                if s.reason != 0 {
                    let reason =
                        proto::RefusalReason::try_from(s.reason).map_or("?", |r| r.as_str_name());
                    line += &format!(", {reason}");
                }
                if s.provider_code != 0 {
                    line += &format!(", provider code {}", s.provider_code);
                }
                println!("{line}");
            })?;
        }
        SendsCmd::Cancel {
            tenant,
            which,
            customer,
            tag,
        } => {
            if which.id.is_none() && which.key.is_none() && customer.is_none() {
                bail!("say what to cancel: --id, --key, or --customer with --tag");
            }
            let r = client
                .cancel(proto::CancelRequest {
                    tenant,
                    send_id: which.id.unwrap_or_default(),
                    idempotency_key: which.key.unwrap_or_default(),
                    customer: customer.unwrap_or_default(),
                    tag: tag.unwrap_or_default(),
                })
                .await?
                .into_inner();
            remote.show(&r, |r| println!("{} cancelled", r.cancelled))?;
        }
        SendsCmd::Pause {
            tenant,
            tag,
            duration,
            reason,
            actor,
        } => {
            let p = client
                .pause(proto::PauseRequest {
                    tenant,
                    tag,
                    expires_in_ms: duration.as_millis() as u64,
                    reason,
                    actor,
                    at_ms: 0,
                })
                .await?
                .into_inner();
            remote.show(&p, |p| {
                println!(
                    "tag {} paused until {} ({} sends held)",
                    p.tag,
                    time(p.until_ms),
                    p.held
                )
            })?;
        }
        SendsCmd::Resume {
            tenant,
            tag,
            reason,
            actor,
        } => {
            let r = client
                .resume(proto::ResumeRequest {
                    tenant,
                    tag: tag.clone(),
                    reason,
                    actor,
                })
                .await?
                .into_inner();
            remote.show(&r, |r| {
                if r.resumed {
                    println!(
                        "tag {tag} resumed: {} held sends back in the queue",
                        r.released
                    );
                } else {
                    println!("tag {tag} was not paused: nothing changed");
                }
            })?;
        }
        SendsCmd::ListPaused { tenant } => {
            let list = client
                .list_paused(proto::ListPausedRequest { tenant })
                .await?
                .into_inner();
            remote.show(&list, |list| {
                if list.pauses.is_empty() {
                    println!("no tag is paused");
                }
                for p in &list.pauses {
                    println!(
                        "{}: paused since {} until {}, {} sends held, by {}: {}",
                        p.tag,
                        time(p.since_ms),
                        time(p.until_ms),
                        p.held,
                        p.actor,
                        p.reason
                    );
                }
            })?;
        }
    }
    Ok(())
}
