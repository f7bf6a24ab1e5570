//! `switchboard sends ...`: one send's status, and cancelling waiting sends (the
//! `switchboard.v1.Outbound` service), for the operator who must stop a reminder by hand.
use anyhow::bail;
use clap::{Args, Subcommand};
use switchboard::proto::{self, outbound_client::OutboundClient};

use super::Remote;

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
    let (channel, bearer) = args.remote.connect().await?;
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
            println!("{} cancelled", r.cancelled);
        }
    }
    Ok(())
}
