//! The vocabulary of outbound admission: send ids, priorities, refusals, admissions, states,
//! dispatches, the provider's outcomes and the view of a send.
use serde::{Deserialize, Serialize};

use super::*;

/// A send's id, sequential per portfolio ("s-42").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SendId(pub u64);

impl std::fmt::Display for SendId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s-{}", self.0)
    }
}

impl std::str::FromStr for SendId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        s.strip_prefix("s-")
            .and_then(|n| n.parse().ok())
            .map(SendId)
            .ok_or(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SendPriority {
    Low,
    Normal,
    High,
}

/// Why a send was refused (or failed at the provider).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Refusal {
    /// Free-form message outside the customer-service window: send a template.
    TemplateRequired,
    /// The business number's throughput bucket is empty.
    ThroughputLimit,
    /// Too many messages to this customer from this number just now.
    PairLimit,
    /// The portfolio reached its messaging limit for new customers.
    MessagingLimit,
    /// The number is backing off after a throughput error from the provider (130429/131057).
    NumberBackoff,
    /// Marketing from this number is paused after a spam-rate error (131048).
    MarketingPaused,
    /// The batch queue is full.
    QueueFull,
    /// The provider refused it with another error.
    ProviderError,
    /// Marketing to a customer who opted out.
    OptedOut,
    /// The customer's frequency cap (or Meta's per-user marketing limit, 131049) is reached.
    FrequencyCap,
    /// A free-form send whose tag is paused (`Quotas::pause`).
    TagPaused,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TemplateRequired => "template_required",
            Refusal::ThroughputLimit => "throughput_limit",
            Refusal::PairLimit => "pair_limit",
            Refusal::MessagingLimit => "messaging_limit",
            Refusal::NumberBackoff => "number_backoff",
            Refusal::MarketingPaused => "marketing_paused",
            Refusal::QueueFull => "queue_full",
            Refusal::ProviderError => "provider_error",
            Refusal::OptedOut => "opted_out",
            Refusal::FrequencyCap => "frequency_cap",
            Refusal::TagPaused => "tag_paused",
        }
    }
}

/// The answer to a send request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Admission {
    /// Handed to the sender now.
    Dispatched,
    /// Waiting for a batch wave; None: no estimate (nothing frees a slot in view).
    Queued {
        estimated_release: Option<Timestamp>,
        /// The lifecycle rule that holds it past the batch queue's own release, if one does.
        held: Option<Hold>,
    },
    /// Held until its `send_at` time, then admitted by the same rules as any send.
    Scheduled { at: Timestamp },
    /// Not sent; retry after this long, if retrying can help.
    Refused {
        reason: Refusal,
        retry_after_ms: Option<u64>,
    },
}

/// Where a send is in its life. After dispatch the provider's reports move it forward
/// along Dispatched → Sent → Delivered → Read (skipping is fine, going back never), or to
/// Failed from Dispatched or Sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SendState {
    /// Admitted (an event only: a send's lasting state is queued or dispatched).
    Accepted,
    Queued,
    Dispatched,
    /// The provider took it.
    Sent,
    Failed,
    Expired,
    Refused,
    /// It reached the customer's device.
    Delivered,
    /// The customer opened it.
    Read,
    /// Waiting for its `send_at` time.
    Scheduled,
    /// Cancelled while queued or scheduled: never dispatched.
    Cancelled,
}

impl SendState {
    pub fn as_str(self) -> &'static str {
        match self {
            SendState::Accepted => "accepted",
            SendState::Queued => "queued",
            SendState::Dispatched => "dispatched",
            SendState::Sent => "sent",
            SendState::Failed => "failed",
            SendState::Expired => "expired",
            SendState::Refused => "refused",
            SendState::Delivered => "delivered",
            SendState::Read => "read",
            SendState::Scheduled => "scheduled",
            SendState::Cancelled => "cancelled",
        }
    }

    /// How far along the provider's reports a dispatched send is (None: not on that path).
    pub fn delivery_progress(self) -> Option<u8> {
        match self {
            SendState::Dispatched => Some(0),
            SendState::Sent => Some(1),
            SendState::Delivered => Some(2),
            SendState::Read => Some(3),
            _ => None,
        }
    }
}

/// A message for the sender.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    pub id: SendId,
    pub from: Arc<str>,
    pub to: CustomerNumber,
    pub category: Category,
    /// The session message's text, or the template's name.
    pub content: Arc<str>,
    /// The template with its language and parameters; None on a session message, and on a
    /// template sent by name only (the sender's default language, no parameters).
    pub template: Option<Arc<crate::model::Template>>,
    pub idempotency_key: Arc<str>,
    /// Counted in the messaging limit (business-initiated): the customer's 24 hours restart.
    pub counted: bool,
    /// When it was dispatched.
    pub at: Timestamp,
}

/// What the provider answered for a dispatched send, or reported about it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderOutcome {
    /// The provider took it (the API's answer, or a `sent` status webhook).
    Sent,
    /// A `delivered` status webhook: it reached the customer's device.
    Delivered,
    /// A `read` status webhook: the customer opened it.
    Read,
    /// Handed to an egress that reports later (the Kafka dispatch topic; the provider's
    /// answer comes back as a status webhook): the send stays dispatched until then.
    Handed,
    /// A Cloud API error code (130429, 131056, 131047, 131048, 131057, ...).
    Failed { code: u32 },
}

/// A send as status queries show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendView {
    pub id: SendId,
    pub idempotency_key: Arc<str>,
    pub from: Arc<str>,
    pub category: Category,
    pub priority: SendPriority,
    pub state: SendState,
    pub reason: Option<Refusal>,
    pub provider_code: Option<u32>,
    pub first_answer: Admission,
    pub created: Timestamp,
    pub valid_until: Timestamp,
    /// The caller's label ("collections", "campaign-nov"): what cancel-by-match looks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Arc<str>>,
    /// When a scheduled send is due (None: sent at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<Timestamp>,
}

impl SendView {
    /// Queued or scheduled: not dispatched yet, and still may be.
    pub fn waiting(&self) -> bool {
        matches!(self.state, SendState::Queued | SendState::Scheduled)
    }
}
