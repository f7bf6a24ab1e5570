//! Meta's side of the webhook tests: its documented sample payloads (Cloud API docs, the
//! "messages" webhook: a text message, a status) and the `X-Hub-Signature-256` it signs them
//! with.
#![allow(dead_code)]

use hmac::{Hmac, Mac};

/// Meta's sample text message webhook, to the business number 34910000001 (phone-number id
/// 106540352242922).
pub fn text_message(wamid: &str, from: &str, body: &str) -> String {
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"34910000001","phone_number_id":"106540352242922"}},"contacts":[{{"profile":{{"name":"Sheena Nelson"}},"wa_id":"{from}"}}],"messages":[{{"from":"{from}","id":"{wamid}","timestamp":"1749416383","type":"text","text":{{"body":"{body}"}}}}]}},"field":"messages"}}]}}]}}"#
    )
}

/// Meta's sample status webhook: `status` of the message `wamid`, with the callback data the
/// send carried and, for a failure, the error code.
pub fn status(wamid: &str, status: &str, callback: &str, error: Option<u32>) -> String {
    let errors = error.map_or(String::new(), |code| {
        format!(
            r#","errors":[{{"code":{code},"title":"Rate limit hit","message":"Rate limit hit","error_data":{{"details":"Message failed to send because there were too many messages sent from this phone number in a short period of time"}}}}]"#
        )
    });
    format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"id":"102290129340398","changes":[{{"value":{{"messaging_product":"whatsapp","metadata":{{"display_phone_number":"34910000001","phone_number_id":"106540352242922"}},"statuses":[{{"id":"{wamid}","status":"{status}","timestamp":"1750263773","recipient_id":"34612345678","biz_opaque_callback_data":"{callback}"{errors}}}]}},"field":"messages"}}]}}]}}"#
    )
}

pub fn sign(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
