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
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
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
///
/// Held inline, not on the heap: every conversation holds one and reads it on each message's
/// lookup, and a pointer to a separate allocation cost 32 bytes and a cache miss more.
#[derive(Clone, PartialEq, Eq)]
pub struct CustomerNumber {
    /// The number's length in bytes (never 0: the `+` is in it; the niche makes an
    /// `Option<CustomerNumber>` no larger).
    len: std::num::NonZeroU8,
    /// The number, then zeros.
    text: [u8; CustomerNumber::MAX_BYTES],
}

impl CustomerNumber {
    /// The longest number held, in bytes with its `+`: E.164 allows 15 digits, `phonenumber`
    /// at most 20 (a 3-digit country code and a 17-digit national number).
    pub const MAX_BYTES: usize = 23;

    /// Callers must pass a validated E.164 string (see `core::identity`) of at most
    /// [`CustomerNumber::MAX_BYTES`]: every validation there checks both.
    pub(crate) fn from_valid_e164(s: &str) -> Self {
        debug_assert!(s.starts_with('+') && s[1..].bytes().all(|b| b.is_ascii_digit()));
        let mut text = [0u8; Self::MAX_BYTES];
        text.get_mut(..s.len())
            .expect("a validated number is at most 23 bytes")
            .copy_from_slice(s.as_bytes());
        let len = u8::try_from(s.len())
            .ok()
            .and_then(std::num::NonZeroU8::new)
            .expect("a validated number is not empty");
        Self { len, text }
    }

    pub fn as_e164(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("built from a str of ASCII digits")
    }

    /// Whether this is `number`: compared as bytes, without `as_e164`'s UTF-8 check (each
    /// message's lookup compares one or two).
    pub fn is(&self, number: &str) -> bool {
        self.as_bytes() == number.as_bytes()
    }

    /// The number's bytes (its `as_e164` without the UTF-8 check: what an index hashes).
    pub fn as_bytes(&self) -> &[u8] {
        &self.text[..usize::from(self.len.get())]
    }
}

// No larger than the `Arc<str>` it replaced plus the allocation that no longer exists.
const _: () = assert!(std::mem::size_of::<Option<CustomerNumber>>() == 24);

/// As the `str` it borrows as hashes (maps keyed by numbers are looked up by `&str`).
impl std::hash::Hash for CustomerNumber {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_e164().hash(state);
    }
}

impl std::borrow::Borrow<str> for CustomerNumber {
    fn borrow(&self) -> &str {
        self.as_e164()
    }
}

/// Shows the first 3 and last 2 digits: enough to tell two customers apart in a log while
/// debugging, not enough to contact anyone.
impl fmt::Display for CustomerNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.as_e164();
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

/// An approved message template with the values of its variables: what a template send
/// (marketing, utility, authentication) carries to the provider. The wire layer checks it on
/// `Send` (Meta's rules for names and language codes, which parameter goes where); the core
/// only carries it, and the Cloud API sender renders it as the Graph API's `template` object.
/// It is serialized with the queued sends of a snapshot, in this crate's own shape (not Meta's
/// JSON, so a change on Meta's side never breaks a saved state).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Template {
    /// The name it was approved under ("order_update").
    pub name: String,
    /// The language and locale code it was approved in ("en_US").
    pub language: String,
    /// The values of its variables, by component, in the order the sender gave them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<TemplateComponent>,
}

/// The values for one component of a template.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct TemplateComponent {
    pub kind: ComponentKind,
    pub parameters: Vec<TemplateParameter>,
}

/// Which part of the template a component fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    Header,
    Body,
    /// One button, by its 0-based position in the template.
    Button {
        sub_type: ButtonSubType,
        index: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonSubType {
    /// Takes a payload, echoed back when the customer taps it.
    QuickReply,
    /// Takes a text: the variable part of the button's URL.
    Url,
    /// Takes a coupon code, copied when the customer taps it.
    CopyCode,
}

impl ButtonSubType {
    /// As the Cloud API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            ButtonSubType::QuickReply => "quick_reply",
            ButtonSubType::Url => "url",
            ButtonSubType::CopyCode => "copy_code",
        }
    }
}

/// One variable's value.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateParameter {
    Text(String),
    /// An amount of money: `amount_1000` is the amount times 1000, `code` ISO 4217.
    Currency {
        fallback_value: String,
        code: String,
        amount_1000: i64,
    },
    DateTime {
        fallback_value: String,
    },
    Image {
        link: String,
    },
    Document {
        link: String,
        /// None: WhatsApp's default file name.
        #[serde(default)]
        filename: Option<String>,
    },
    Video {
        link: String,
    },
    Payload(String),
    CouponCode(String),
}

impl TemplateParameter {
    /// Its type as the Cloud API names it (the `type` of a parameter object).
    pub fn kind(&self) -> &'static str {
        match self {
            TemplateParameter::Text(_) => "text",
            TemplateParameter::Currency { .. } => "currency",
            TemplateParameter::DateTime { .. } => "date_time",
            TemplateParameter::Image { .. } => "image",
            TemplateParameter::Document { .. } => "document",
            TemplateParameter::Video { .. } => "video",
            TemplateParameter::Payload(_) => "payload",
            TemplateParameter::CouponCode(_) => "coupon_code",
        }
    }
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
