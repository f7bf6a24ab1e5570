//! `switchboard consent get|set`: a customer's consent to marketing (the
//! `switchboard.v1.Customers` service). Setting it is audited in the tenant's quota audit.
use clap::{Args, Subcommand, ValueEnum};
use switchboard::proto::{self, customers_client::CustomersClient};

use super::{Remote, time};

#[derive(Args, Debug)]
pub struct ConsentArgs {
    #[command(flatten)]
    remote: Remote,
    #[command(subcommand)]
    command: ConsentCmd,
}

#[derive(Subcommand, Debug)]
enum ConsentCmd {
    /// A customer's consent: state, source, who set it and when.
    Get { tenant: String, customer: String },
    /// Set it. Opting out cancels the customer's waiting marketing.
    Set {
        tenant: String,
        customer: String,
        state: State,
        /// Where the customer gave or withdrew it ("crm", "web-form").
        #[arg(long)]
        source: String,
        /// Why (it goes to the audit log).
        #[arg(long, default_value = "")]
        reason: String,
        #[arg(long, env = "USER", default_value = "cli")]
        actor: String,
        /// When the customer gave or withdrew it, RFC 3339 (default: now).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        at: Option<std::time::SystemTime>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum State {
    OptedIn,
    OptedOut,
}

pub async fn run(args: ConsentArgs) -> anyhow::Result<()> {
    let remote = args.remote;
    let (channel, bearer) = remote.connect().await?;
    let mut client = CustomersClient::with_interceptor(channel, bearer);
    let consent = match args.command {
        ConsentCmd::Get { tenant, customer } => client
            .get_consent(proto::ConsentRef { tenant, customer })
            .await?
            .into_inner(),
        ConsentCmd::Set {
            tenant,
            customer,
            state,
            source,
            reason,
            actor,
            at,
        } => {
            let state = match state {
                State::OptedIn => proto::ConsentState::OptedIn,
                State::OptedOut => proto::ConsentState::OptedOut,
            };
            let at_ms = at
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64);
            client
                .set_consent(proto::SetConsentRequest {
                    tenant,
                    customer,
                    state: state as i32,
                    source,
                    actor,
                    reason,
                    at_ms,
                })
                .await?
                .into_inner()
        }
    };
    remote.show(&consent, |consent| {
        let state = proto::ConsentState::try_from(consent.state).map_or("?", |s| s.as_str_name());
        if consent.at_ms == 0 {
            println!("{state}");
        } else {
            println!(
                "{state} since {} (source {}, set by {})",
                time(consent.at_ms),
                consent.source,
                consent.actor
            );
        }
    })
}
