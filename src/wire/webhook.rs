//! WhatsApp's own format: the Cloud API webhook JSON exactly as Meta posts it
//! (`object: whatsapp_business_account`, `entry[].changes[].value` with `metadata`, `contacts`,
//! `messages` and `statuses`). One payload may hold several messages and statuses.
//!
//! [`parse`] turns a payload into events; [`NumberDirectory`] finds the tenant of the business
//! number it was sent to. Messages become inbound commands routed like any other; a message of
//! a type switchboard does not read is routed as `[unsupported: type]`, never dropped. Statuses
//! (sent, delivered, read, failed with `errors[].code`) are what the provider reports about
//! our sends. Unknown fields are ignored, as Meta adds fields over time.
use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;

use crate::config::Config;
use crate::core::Inbound;
use crate::core::quota::ProviderOutcome;
use crate::model::{Channel, TenantId};

/// Why a payload could not be read (the reason a dead letter carries).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("not JSON or not the webhook shape: {0}")]
    Malformed(String),
    #[error("object is {0:?}, not \"whatsapp_business_account\"")]
    WrongObject(String),
    #[error(
        "business number {0:?} (phone_number_id or display number) is not configured for any tenant"
    )]
    UnknownNumber(String),
}

impl WebhookError {
    /// A short stable name, for metric labels and dead-letter headers.
    pub fn reason(&self) -> &'static str {
        match self {
            WebhookError::Malformed(_) => "malformed",
            WebhookError::WrongObject(_) => "wrong_object",
            WebhookError::UnknownNumber(_) => "unknown_business_number",
        }
    }
}

/// The business number a change was addressed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessNumber {
    pub phone_number_id: String,
    pub display_phone_number: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookMessage {
    pub to: BusinessNumber,
    /// The customer's WhatsApp id (digits of their number).
    pub from: String,
    /// `wamid.…`: the id retries repeat.
    pub id: String,
    pub timestamp_secs: u64,
    /// The message type as Meta names it ("text", "image", "interactive", ...).
    pub kind: String,
    /// The text, or a caption, or `[type]` for a message without text.
    pub text: String,
    /// The message this one replies to, if any.
    pub reply_to: Option<String>,
    /// The sender's WhatsApp profile name (`contacts[].profile.name` for their `wa_id`).
    pub profile_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookStatus {
    pub from: BusinessNumber,
    /// The `wamid` of the message we sent.
    pub id: String,
    /// "sent", "delivered", "read" or "failed".
    pub status: String,
    pub recipient: String,
    pub timestamp_secs: u64,
    /// Cloud API error codes for a failed message (130429, 131047, ...).
    pub error_codes: Vec<u32>,
    /// What the sender passed as `biz_opaque_callback_data` (switchboard's dispatches carry
    /// their send there, see `kafka::sink`).
    pub callback_data: Option<String>,
}

impl WebhookStatus {
    /// What the status says about the send: `sent` (the provider took it), `delivered` (it
    /// reached the device), `read` (the customer opened it), each its own state; `failed`
    /// carries the first error code (0 when Meta gave none). Other statuses (e.g. `deleted`)
    /// say nothing the quotas react to.
    pub fn outcome(&self) -> Option<ProviderOutcome> {
        match self.status.as_str() {
            "sent" => Some(ProviderOutcome::Sent),
            "delivered" => Some(ProviderOutcome::Delivered),
            "read" => Some(ProviderOutcome::Read),
            "failed" => Some(ProviderOutcome::Failed {
                code: self.error_codes.first().copied().unwrap_or(0),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookBatch {
    pub messages: Vec<WebhookMessage>,
    pub statuses: Vec<WebhookStatus>,
}

// --- the wire shape (only what switchboard reads; the rest is ignored) ------------------------

#[derive(Deserialize)]
struct Payload {
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    value: Value,
}

#[derive(Deserialize)]
struct Value {
    metadata: Metadata,
    #[serde(default)]
    contacts: Vec<RawContact>,
    #[serde(default)]
    messages: Vec<RawMessage>,
    #[serde(default)]
    statuses: Vec<RawStatus>,
}

#[derive(Deserialize)]
struct RawContact {
    #[serde(default)]
    wa_id: String,
    #[serde(default)]
    profile: Option<RawProfile>,
}

#[derive(Deserialize)]
struct RawProfile {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    display_phone_number: String,
    phone_number_id: String,
}

#[derive(Deserialize)]
struct RawMessage {
    from: String,
    id: String,
    #[serde(default)]
    timestamp: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    text: Option<Body>,
    #[serde(default)]
    context: Option<Context>,
    // Media carry an optional caption.
    #[serde(default)]
    image: Option<Media>,
    #[serde(default)]
    video: Option<Media>,
    #[serde(default)]
    document: Option<Media>,
    #[serde(default)]
    button: Option<Button>,
}

#[derive(Deserialize)]
struct Body {
    body: String,
}

#[derive(Deserialize)]
struct Media {
    #[serde(default)]
    caption: Option<String>,
}

#[derive(Deserialize)]
struct Button {
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct Context {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
struct RawStatus {
    id: String,
    status: String,
    #[serde(default)]
    timestamp: String,
    #[serde(default)]
    recipient_id: String,
    #[serde(default)]
    errors: Vec<RawError>,
    #[serde(default)]
    biz_opaque_callback_data: Option<String>,
}

/// A business number as a payload names it, borrowed from the payload where it can be.
#[derive(Deserialize, Debug, PartialEq, Eq)]
pub struct BusinessNumberRef<'a> {
    #[serde(borrow)]
    pub phone_number_id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub display_phone_number: Cow<'a, str>,
}

/// The outer shape again, for [`addressed`]: the items are counted, not read.
#[derive(Deserialize)]
struct Addressed<'a> {
    #[serde(borrow)]
    object: Cow<'a, str>,
    #[serde(borrow, default)]
    entry: Vec<AddressedEntry<'a>>,
}

#[derive(Deserialize)]
struct AddressedEntry<'a> {
    #[serde(borrow, default)]
    changes: Vec<AddressedChange<'a>>,
}

#[derive(Deserialize)]
struct AddressedChange<'a> {
    #[serde(borrow)]
    value: AddressedValue<'a>,
}

#[derive(Deserialize)]
struct AddressedValue<'a> {
    #[serde(borrow)]
    metadata: BusinessNumberRef<'a>,
    #[serde(default)]
    messages: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    statuses: Vec<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct RawError {
    code: u32,
}

/// Reads one webhook payload.
pub fn parse(bytes: &[u8]) -> Result<WebhookBatch, WebhookError> {
    let payload: Payload =
        serde_json::from_slice(bytes).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    if payload.object != "whatsapp_business_account" {
        return Err(WebhookError::WrongObject(payload.object));
    }
    let mut batch = WebhookBatch::default();
    for change in payload.entry.into_iter().flat_map(|e| e.changes) {
        let number = BusinessNumber {
            phone_number_id: change.value.metadata.phone_number_id,
            display_phone_number: change.value.metadata.display_phone_number,
        };
        let contacts = change.value.contacts;
        for m in change.value.messages {
            let text = message_text(&m);
            let profile_name = contacts
                .iter()
                .find(|c| c.wa_id == m.from)
                .and_then(|c| c.profile.as_ref()?.name.clone());
            batch.messages.push(WebhookMessage {
                to: number.clone(),
                from: m.from,
                id: m.id,
                timestamp_secs: m.timestamp.parse().unwrap_or(0),
                kind: m.kind,
                text,
                reply_to: m.context.and_then(|c| c.id),
                profile_name,
            });
        }
        for s in change.value.statuses {
            batch.statuses.push(WebhookStatus {
                from: number.clone(),
                id: s.id,
                status: s.status,
                recipient: s.recipient_id,
                timestamp_secs: s.timestamp.parse().unwrap_or(0),
                error_codes: s.errors.iter().map(|e| e.code).collect(),
                callback_data: s.biz_opaque_callback_data,
            });
        }
    }
    Ok(batch)
}

/// Reads only which business numbers a payload's messages and statuses were sent to: what the
/// webhook endpoint keys its records by, without building the messages (the Kafka input reads
/// them whole, and dead-letters an item it cannot read). Errors as [`parse`] for a payload that
/// is not JSON, not the webhook's outer shape, or another `object`.
pub fn addressed(bytes: &[u8]) -> Result<Vec<BusinessNumberRef<'_>>, WebhookError> {
    let payload: Addressed =
        serde_json::from_slice(bytes).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    if payload.object != "whatsapp_business_account" {
        return Err(WebhookError::WrongObject(payload.object.into_owned()));
    }
    Ok(payload
        .entry
        .into_iter()
        .flat_map(|e| e.changes)
        .filter(|c| !c.value.messages.is_empty() || !c.value.statuses.is_empty())
        .map(|c| c.value.metadata)
        .collect())
}

/// What a message says, for routing and context: its text or caption, else its type.
fn message_text(m: &RawMessage) -> String {
    let caption = [&m.image, &m.video, &m.document]
        .into_iter()
        .flatten()
        .find_map(|media| media.caption.clone());
    match (m.kind.as_str(), &m.text, caption, &m.button) {
        ("text", Some(t), _, _) => t.body.clone(),
        (kind, _, Some(caption), _) => format!("[{kind}] {caption}"),
        ("button", _, _, Some(b)) if !b.text.is_empty() => b.text.clone(),
        (
            "image" | "video" | "audio" | "document" | "sticker" | "location" | "contacts"
            | "interactive" | "reaction" | "order" | "button",
            _,
            _,
            _,
        ) => format!("[{}]", m.kind),
        (kind, _, _, _) => format!(
            "[unsupported: {}]",
            if kind.is_empty() { "?" } else { kind }
        ),
    }
}

/// Which tenant each configured business number belongs to. A webhook names the number by its
/// `phone_number_id` and its display number (digits without `+`); either may be configured.
#[derive(Debug, Clone, Default)]
pub struct NumberDirectory {
    numbers: HashMap<String, (TenantId, String)>,
}

impl NumberDirectory {
    pub fn new(config: &Config) -> Self {
        let mut numbers = HashMap::new();
        for t in &config.tenants {
            for n in &t.numbers {
                let entry = (TenantId::new(&t.id), n.id.clone());
                numbers.insert(n.id.clone(), entry.clone());
                numbers.insert(n.id.trim_start_matches('+').to_owned(), entry);
            }
        }
        Self { numbers }
    }

    /// The tenant and the configured id of the number a change was addressed to.
    pub fn find(&self, n: &BusinessNumber) -> Result<&(TenantId, String), WebhookError> {
        self.lookup(&n.phone_number_id, &n.display_phone_number)
            .ok_or_else(|| WebhookError::UnknownNumber(n.phone_number_id.clone()))
    }

    /// A number by its `phone_number_id`, else by its display number.
    fn lookup(&self, phone_number_id: &str, display: &str) -> Option<&(TenantId, String)> {
        self.numbers
            .get(phone_number_id)
            .or_else(|| self.numbers.get(display))
    }

    /// The inbound command for a webhook message.
    pub fn inbound(&self, m: &WebhookMessage) -> Result<Inbound, WebhookError> {
        let (tenant, number) = self.find(&m.to)?;
        Ok(message_inbound(m.clone(), tenant, number))
    }
}

/// The inbound command for a message to `tenant`'s `number`, taking the message's strings.
fn message_inbound(m: WebhookMessage, tenant: &TenantId, number: &str) -> Inbound {
    let mut customer = String::with_capacity(m.from.len() + 1);
    customer.push('+');
    customer.push_str(&m.from);
    Inbound {
        tenant: tenant.clone(),
        customer,
        channel: Channel::WhatsApp,
        provider_message_id: m.id,
        text: m.text,
        business_number: Some(number.to_owned()),
        email: None,
        visitor_id: None,
        profile_name: m.profile_name,
    }
}

/// One thing a payload asks of the shards: a message to route, a status to feed back, or why
/// an item cannot be either. The Kafka input and the webhook endpoint (without Kafka) both
/// act on these.
#[derive(Debug)]
pub enum Item {
    Route(Inbound),
    /// The provider's answer about one of the tenant's sends.
    Status {
        tenant: TenantId,
        id: crate::core::quota::SendId,
        outcome: ProviderOutcome,
    },
    /// A status with nothing to react to (`"ignored"`: a state switchboard does not track;
    /// `"unmatched"`: not one of this tenant's sends), counted by that name.
    Skip(&'static str),
    /// A message or status (its `wamid`) naming a number no tenant has.
    Dead {
        wamid: String,
        error: WebhookError,
    },
}

impl NumberDirectory {
    /// The items of `batch` for the tenants `here` accepts, in payload order (messages, then
    /// statuses); the tenants it refused are left out.
    pub fn plan(&self, batch: WebhookBatch, mut here: impl FnMut(&TenantId) -> bool) -> Vec<Item> {
        let mut items = Vec::with_capacity(batch.messages.len() + batch.statuses.len());
        for m in batch.messages {
            match self.find(&m.to) {
                Ok((tenant, number)) if here(tenant) => {
                    items.push(Item::Route(message_inbound(m, tenant, number)));
                }
                Ok(_) => {}
                Err(error) => items.push(Item::Dead { wamid: m.id, error }),
            }
        }
        for s in &batch.statuses {
            let tenant = match self.find(&s.from) {
                Ok((tenant, _)) if here(tenant) => tenant,
                Ok(_) => continue,
                Err(error) => {
                    items.push(Item::Dead {
                        wamid: s.id.clone(),
                        error,
                    });
                    continue;
                }
            };
            let Some(outcome) = s.outcome() else {
                items.push(Item::Skip("ignored"));
                continue;
            };
            // Not one of ours (sent by another system from the same number), or the callback
            // names a send of another tenant.
            items.push(match s.callback_data.as_deref().and_then(parse_callback) {
                Some((named, id)) if named == tenant.as_str() => Item::Status {
                    tenant: tenant.clone(),
                    id,
                    outcome,
                },
                _ => Item::Skip("unmatched"),
            });
        }
        items
    }

    /// Every configured tenant `batch` names (through its business numbers), in order.
    pub fn tenants(&self, batch: &WebhookBatch) -> Vec<TenantId> {
        let to = batch.messages.iter().map(|m| &m.to);
        let from = batch.statuses.iter().map(|s| &s.from);
        self.tenants_of(
            to.chain(from)
                .map(|n| (&*n.phone_number_id, &*n.display_phone_number)),
        )
    }

    /// Every configured tenant the numbers [`addressed`] read belong to, in order: the same
    /// set as [`NumberDirectory::tenants`] of the whole payload.
    pub fn tenants_addressed(&self, numbers: &[BusinessNumberRef<'_>]) -> Vec<TenantId> {
        self.tenants_of(
            numbers
                .iter()
                .map(|n| (&*n.phone_number_id, &*n.display_phone_number)),
        )
    }

    /// The tenants of (`phone_number_id`, display number) pairs, the unknown left out, in
    /// order and each once (a payload names one or a few).
    fn tenants_of<'n>(&self, numbers: impl Iterator<Item = (&'n str, &'n str)>) -> Vec<TenantId> {
        let mut tenants: Vec<TenantId> = numbers
            .filter_map(|(id, display)| self.lookup(id, display))
            .map(|(tenant, _)| tenant.clone())
            .collect();
        tenants.sort_unstable();
        tenants.dedup();
        tenants
    }
}

/// Marks callback data as switchboard's own (other systems may send from the same number).
const CALLBACK_PREFIX: &str = "sb1:";

/// What a dispatch asks the egress to pass as `biz_opaque_callback_data`.
pub fn callback_data(tenant: &TenantId, id: crate::core::quota::SendId) -> String {
    format!("{CALLBACK_PREFIX}{tenant}:{id}")
}

/// The tenant and send a status webhook's callback data names; None if it is not ours.
pub fn parse_callback(data: &str) -> Option<(&str, crate::core::quota::SendId)> {
    let (tenant, id) = data.strip_prefix(CALLBACK_PREFIX)?.rsplit_once(':')?;
    Some((tenant, id.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two changes: two messages (text and captioned image) and a failed and a read status.
    const PAYLOAD: &str = r#"{
      "object": "whatsapp_business_account",
      "entry": [{
        "id": "102290129340398",
        "changes": [{
          "field": "messages",
          "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "34910000001", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Lucía"}, "wa_id": "34612345678"}],
            "messages": [
              {"from": "34612345678", "id": "wamid.A", "timestamp": "1749416383", "type": "text",
               "text": {"body": "¿Dónde está mi pedido?"}, "context": {"from": "34910000001", "id": "wamid.PREV"}},
              {"from": "34612345678", "id": "wamid.B", "timestamp": "1749416390", "type": "image",
               "image": {"caption": "la caja llegó rota", "mime_type": "image/jpeg", "id": "m1"}}
            ]
          }
        }, {
          "field": "messages",
          "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "34910000001", "phone_number_id": "106540352242922"},
            "statuses": [
              {"id": "wamid.OUT1", "status": "failed", "timestamp": "1749416400", "recipient_id": "34699999999",
               "biz_opaque_callback_data": "sb1:demo:s-7", "errors": [{"code": 131047, "title": "Re-engagement message", "message": "..."}]},
              {"id": "wamid.OUT2", "status": "read", "timestamp": "1749416401", "recipient_id": "34612345678",
               "pricing": {"billable": true, "category": "utility"}}
            ]
          }
        }]
      }]
    }"#;

    /// The embedded demo config, its tenant also known by the payloads' `phone_number_id`.
    fn demo_with_number() -> Config {
        Config::from_toml_str(&format!(
            "{}\n[[tenants.numbers]]\nid = \"106540352242922\"\n",
            crate::config::EMBEDDED_DEFAULT
        ))
        .unwrap()
    }

    #[test]
    fn reads_several_messages_and_statuses_from_one_payload() {
        let b = parse(PAYLOAD.as_bytes()).unwrap();
        assert_eq!(b.messages.len(), 2);
        assert_eq!(b.statuses.len(), 2);
        let m = &b.messages[0];
        assert_eq!(
            (m.from.as_str(), m.id.as_str(), m.timestamp_secs),
            ("34612345678", "wamid.A", 1_749_416_383)
        );
        assert_eq!(m.text, "¿Dónde está mi pedido?");
        assert_eq!(m.reply_to.as_deref(), Some("wamid.PREV"));
        assert_eq!(m.to.phone_number_id, "106540352242922");
        assert_eq!(b.messages[1].text, "[image] la caja llegó rota");
        assert_eq!(b.statuses[0].error_codes, vec![131047]);
        assert_eq!(b.statuses[0].status, "failed");
        assert!(b.statuses[1].error_codes.is_empty());
        assert_eq!(b.statuses[0].callback_data.as_deref(), Some("sb1:demo:s-7"));
        assert_eq!(b.statuses[1].callback_data, None);
        assert_eq!(
            b.statuses[0].outcome(),
            Some(ProviderOutcome::Failed { code: 131047 })
        );
        assert_eq!(b.statuses[1].outcome(), Some(ProviderOutcome::Read));
    }

    #[test]
    fn sent_delivered_and_read_are_outcomes_of_their_own() {
        let status = |status: &str| {
            let payload = format!(
                r#"{{"object": "whatsapp_business_account", "entry": [{{"changes": [{{"field": "messages", "value": {{
                "messaging_product": "whatsapp",
                "metadata": {{"display_phone_number": "34910000001", "phone_number_id": "106540352242922"}},
                "statuses": [{{"id": "wamid.OUT", "status": "{status}", "timestamp": "1749416400",
                  "recipient_id": "34612345678", "biz_opaque_callback_data": "sb1:demo:s-7",
                  "conversation": {{"id": "c1", "origin": {{"type": "utility"}}}},
                  "pricing": {{"billable": true, "pricing_model": "PMP", "category": "utility"}}}}]
                }}}}]}}]}}"#
            );
            parse(payload.as_bytes()).unwrap().statuses[0].outcome()
        };
        assert_eq!(status("sent"), Some(ProviderOutcome::Sent));
        assert_eq!(status("delivered"), Some(ProviderOutcome::Delivered));
        assert_eq!(status("read"), Some(ProviderOutcome::Read));
        assert_eq!(status("deleted"), None, "says nothing about our send");
    }

    #[test]
    fn unknown_types_are_routed_as_unsupported_not_dropped() {
        let payload = PAYLOAD
            .replace(r#""type": "text""#, r#""type": "hologram""#)
            .replace(r#""text": {"body": "¿Dónde está mi pedido?"}, "#, "");
        let b = parse(payload.as_bytes()).unwrap();
        assert_eq!(b.messages[0].text, "[unsupported: hologram]");
    }

    #[test]
    fn bad_payloads_say_why() {
        // The whole reading and the endpoint's reading of the numbers refuse alike.
        let whole = |b: &[u8]| parse(b).map(|_| ());
        let numbers = |b: &[u8]| addressed(b).map(|_| ());
        for read in [
            &whole as &dyn Fn(&[u8]) -> Result<(), WebhookError>,
            &numbers,
        ] {
            assert_eq!(read(b"{not json").unwrap_err().reason(), "malformed");
            let e = read(br#"{"object": "page", "entry": []}"#).unwrap_err();
            assert_eq!(e, WebhookError::WrongObject("page".into()));
            let e = read(
                br#"{"object": "whatsapp_business_account", "entry": [{"changes": [{"value": {}}]}]}"#,
            )
            .unwrap_err();
            assert_eq!(e.reason(), "malformed", "metadata is required: {e}");
        }
    }

    #[test]
    fn business_numbers_map_to_tenants_by_id_or_display_number() {
        let config = demo_with_number();
        let dir = NumberDirectory::new(&config);
        let b = parse(PAYLOAD.as_bytes()).unwrap();
        let inbound = dir.inbound(&b.messages[0]).unwrap();
        assert_eq!(inbound.tenant.as_str(), "demo");
        assert_eq!(inbound.customer, "+34612345678");
        assert_eq!(inbound.business_number.as_deref(), Some("106540352242922"));
        // The demo's "+34910000001" is found by the display number too.
        let mut by_display = b.messages[0].clone();
        by_display.to.phone_number_id = "999".into();
        assert_eq!(
            dir.inbound(&by_display).unwrap().business_number.as_deref(),
            Some("+34910000001")
        );
        by_display.to.display_phone_number = "1555".into();
        assert_eq!(
            dir.inbound(&by_display).unwrap_err().reason(),
            "unknown_business_number"
        );
    }

    #[test]
    fn the_addressed_numbers_name_the_tenants_the_whole_payload_names() {
        let config = demo_with_number();
        let dir = NumberDirectory::new(&config);
        let other = PAYLOAD.replacen("106540352242922", "999", 1);
        let unknown = PAYLOAD
            .replace("106540352242922", "999")
            .replace("34910000001", "1555");
        let empty = r#"{"object": "whatsapp_business_account", "entry": [{"changes": [
            {"value": {"metadata": {"phone_number_id": "106540352242922"}}}]}]}"#;
        for payload in [PAYLOAD, &other, &unknown, empty] {
            let whole = dir.tenants(&parse(payload.as_bytes()).unwrap());
            let read = dir.tenants_addressed(&addressed(payload.as_bytes()).unwrap());
            assert_eq!(read, whole, "{payload}");
        }
        assert_eq!(
            dir.tenants_addressed(&addressed(PAYLOAD.as_bytes()).unwrap())
                .iter()
                .map(TenantId::as_str)
                .collect::<Vec<_>>(),
            ["demo"]
        );
        assert!(
            dir.tenants_addressed(&addressed(empty.as_bytes()).unwrap())
                .is_empty(),
            "a change without messages or statuses names no tenant"
        );
        // An escaped string is read (owned), not refused.
        let escaped = PAYLOAD.replacen("\"106540352242922\"", "\"10654035224292\\u0032\"", 1);
        assert_eq!(
            addressed(escaped.as_bytes()).unwrap()[0].phone_number_id,
            "106540352242922"
        );
    }

    #[test]
    fn webhook_messages_route_like_any_inbound_message() {
        use crate::clock::Timestamp;
        use crate::core::{Command, Reason, Reply, Shard, Target};
        let config = demo_with_number();
        let dir = NumberDirectory::new(&config);
        let mut shard = Shard::new(&config, |_| true);
        let mut effects = Vec::new();
        let batch = parse(PAYLOAD.as_bytes()).unwrap();
        let mut decisions = Vec::new();
        for m in &batch.messages {
            let command = Command::Ingest(dir.inbound(m).unwrap());
            match shard
                .handle(Timestamp(1_749_416_400_000), command, &mut effects)
                .unwrap()
            {
                Reply::Decision(d) => decisions.push(d),
                other => panic!("{other:?}"),
            }
        }
        // "¿Dónde está mi pedido?" is the demo's order-status intent (accents folded): the bot.
        assert_eq!(
            (decisions[0].target, decisions[0].reason),
            (Target::Bot, Reason::SimpleIntent)
        );
        assert_eq!(decisions[0].intent.as_deref(), Some("order_status"));
        assert_eq!(
            decisions[0].conversation, decisions[1].conversation,
            "one customer, one conversation"
        );
        // Meta retries the same payload: nothing routes twice.
        let again = Command::Ingest(dir.inbound(&batch.messages[0]).unwrap());
        match shard
            .handle(Timestamp(1_749_416_500_000), again, &mut effects)
            .unwrap()
        {
            Reply::Decision(d) => assert!(d.duplicate),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn callback_data_names_the_send_and_only_ours_parse() {
        let data = callback_data(
            &crate::model::TenantId::new("acme:es"),
            crate::core::quota::SendId(42),
        );
        assert_eq!(data, "sb1:acme:es:s-42");
        assert_eq!(
            parse_callback(&data),
            Some(("acme:es", crate::core::quota::SendId(42)))
        );
        assert_eq!(parse_callback("order-1234"), None);
        assert_eq!(parse_callback("sb1:acme:s-x"), None);
    }
}
