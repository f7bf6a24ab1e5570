//! Domain vocabulary shared by the core, the runtime and the adapters: identifiers as newtypes
//! so a tenant id cannot be passed where an agent id is expected, and the customer's number as
//! a type that never prints in full.
use std::fmt;

use serde::Deserialize;
use std::sync::Arc;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(s: impl AsRef<str>) -> Self {
                Self(Arc::from(s.as_ref()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A tenant: one business portfolio (its numbers, quotas, conversations, agents, queues).
    TenantId
);
id_type!(
    /// An agent of a tenant, as the tenant's agent desktop names it.
    AgentId
);
id_type!(
    /// A queue name, as configured.
    QueueName
);

/// One conversation per (tenant, customer), whatever the channel. Sequential per tenant so that
/// replaying the same events gives the same ids.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ConversationId(pub u64);

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c-{}", self.0)
    }
}

impl std::str::FromStr for ConversationId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        s.strip_prefix("c-")
            .and_then(|n| n.parse().ok())
            .map(ConversationId)
            .ok_or(())
    }
}

/// A customer's phone number, normalised to E.164 (`+` and digits). Only the identity module
/// builds one, after validation. `Display` and `Debug` mask it: logs never show it in full;
/// [`CustomerNumber::as_e164`] is for the API answer to the agent who serves the customer.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CustomerNumber(Arc<str>);

impl CustomerNumber {
    /// Callers must pass a validated E.164 string (see `core::identity`).
    pub(crate) fn from_valid_e164(s: &str) -> Self {
        debug_assert!(s.starts_with('+') && s[1..].bytes().all(|b| b.is_ascii_digit()));
        Self(Arc::from(s))
    }
    pub fn as_e164(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for CustomerNumber {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Shows the first 3 and last 2 digits: enough to tell two customers apart in a log while
/// debugging, not enough to contact anyone.
impl fmt::Display for CustomerNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &*self.0;
        if s.len() <= 6 {
            return f.write_str("+***");
        }
        write!(f, "{}***{}", &s[..3], &s[s.len() - 2..])
    }
}

impl fmt::Debug for CustomerNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustomerNumber({self})")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Channel {
    WhatsApp,
    WebChat,
    Voice,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::WhatsApp => "whatsapp",
            Channel::WebChat => "webchat",
            Channel::Voice => "voice",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Presence {
    Online,
    Away,
    Offline,
}

/// Higher is more urgent. Waiting conversations are served by priority, then age.
pub type Priority = u32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_number_never_prints_in_full() {
        let n = CustomerNumber::from_valid_e164("+34612345678");
        assert_eq!(n.to_string(), "+34***78");
        assert_eq!(format!("{n:?}"), "CustomerNumber(+34***78)");
        assert_eq!(n.as_e164(), "+34612345678");
    }

    #[test]
    fn conversation_id_round_trips() {
        let id: ConversationId = "c-42".parse().unwrap();
        assert_eq!(id, ConversationId(42));
        assert_eq!(id.to_string(), "c-42");
        assert!("42".parse::<ConversationId>().is_err());
        assert!("c-x".parse::<ConversationId>().is_err());
    }
}

// --- domain enums the config names and the components share -----------------------------

/// The messaging limit: unique customers reached by business-initiated sends in a moving
/// 24 hours, per portfolio. A number, or "unlimited".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum MessagingLimit {
    Customers(u32),
    Unlimited(Unlimited),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unlimited {
    Unlimited,
}

impl MessagingLimit {
    /// None: unlimited.
    pub fn customers(self) -> Option<u32> {
        match self {
            MessagingLimit::Customers(n) => Some(n),
            MessagingLimit::Unlimited(_) => None,
        }
    }
}

/// Template categories (and the free-form session message), as the platform prices them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Marketing,
    Utility,
    Authentication,
    /// A free-form message inside the customer-service window.
    Session,
}

/// An admission rule, for shadow mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Throughput,
    Pair,
    MessagingLimit,
    Window,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Throughput => "throughput",
            Rule::Pair => "pair",
            Rule::MessagingLimit => "messaging_limit",
            Rule::Window => "window",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentMode {
    /// The bot answers (simple intents).
    Bot,
    /// A human answers, in the intent's queue (friction intents).
    Human,
    /// A human if the queue is within SLA, else the bot.
    Auto,
}
