//! Messages the Kafka input produces for every record, encoded straight from the core's
//! types into the output buffer: the same bytes as building the `proto` message and
//! `encode_to_vec`, without the message's strings (each one an allocation, per record).
use std::fmt::Write as _;

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

use super::{reason_out, target_out, write_detail};
use crate::core::Decision;

/// `switchboard.v1.RoutingDecision` for `d` with the routed message's id, appended to `buf`:
/// what [`super::decision_out`] and `encode_to_vec` make (fields in number order, defaults
/// left out, as prost writes them).
pub fn routing_decision(d: &Decision, provider_message_id: &str, buf: &mut Vec<u8>) {
    if let Some(c) = d.conversation {
        written(1, buf, |out| write!(out, "{c}"));
    }
    number(2, target_out(d.target) as u64, buf);
    number(3, reason_out(d.reason) as u64, buf);
    written(4, buf, |out| write_detail(d, out));
    text(5, d.intent.as_deref().unwrap_or_default(), buf);
    text(6, d.queue.as_ref().map_or("", |q| q.as_str()), buf);
    text(7, d.agent.as_ref().map_or("", |a| a.as_str()), buf);
    text(8, d.bot.as_deref().unwrap_or_default(), buf);
    number(9, u64::from(d.position), buf);
    number(10, d.estimated_wait_ms.unwrap_or_default(), buf);
    number(11, u64::from(d.duplicate), buf);
    number(12, u64::from(d.window_open), buf);
    number(
        13,
        d.window_expires.map_or(0, |t| t.as_millis() as i64) as u64,
        buf,
    );
    text(14, provider_message_id, buf);
}

/// A varint field (enums, unsigned and signed 64-bit integers, bools), left out when 0.
fn number(tag: u32, value: u64, buf: &mut Vec<u8>) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

/// A string field, left out when empty.
fn text(tag: u32, value: &str, buf: &mut Vec<u8>) {
    if !value.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.extend_from_slice(value.as_bytes());
    }
}

/// A string field whose text `write` writes: written in place, then its length put before it.
fn written(tag: u32, buf: &mut Vec<u8>, write: impl FnOnce(&mut Text<'_>) -> std::fmt::Result) {
    let start = buf.len();
    write(&mut Text(buf)).expect("a Vec takes any text");
    let len = buf.len() - start;
    if len == 0 {
        return;
    }
    let mut head = Vec::with_capacity(6);
    encode_key(tag, WireType::LengthDelimited, &mut head);
    encode_varint(len as u64, &mut head);
    debug_assert_eq!(head.len(), 1 + encoded_len_varint(len as u64));
    buf.splice(start..start, head);
}

/// Text written to the end of a buffer.
struct Text<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Text<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prost::Message as _;

    use super::*;
    use crate::clock::Timestamp;
    use crate::core::{Reason, Target};
    use crate::model::{AgentId, ConversationId, QueueName};

    #[test]
    fn a_decision_encodes_to_the_bytes_prost_makes_of_its_message() {
        let queued = Decision {
            conversation: Some(ConversationId(300)),
            target: Target::Queue,
            reason: Reason::SlaSaturatedNoBot,
            intent: Some(Arc::from("billing")),
            queue: Some(QueueName::new("claims")),
            agent: None,
            bot: None,
            position: 7,
            estimated_wait_ms: Some(90_000),
            duplicate: false,
            window_expires: Some(Timestamp::from_millis(1_764_600_000_000)),
            window_open: true,
        };
        let mut long_queue = queued.clone();
        // A detail over 127 bytes: a length of two varint bytes.
        long_queue.queue = Some(QueueName::new("q".repeat(200)));
        let cases = [
            queued.clone(),
            long_queue,
            Decision {
                duplicate: true,
                ..Decision::new(None)
            },
            Decision {
                target: Target::Agent,
                reason: Reason::AssignedAgent,
                agent: Some(AgentId::new("ana")),
                bot: Some(Arc::from("faq-bot")),
                ..queued.clone()
            },
            // A reason without its own sentence (its name, spaced).
            Decision {
                reason: Reason::MaxWaitExceeded,
                ..queued
            },
        ];
        for (i, d) in cases.iter().enumerate() {
            for id in ["", "wamid.HBgM"] {
                let mut expected = crate::wire::decision_out(d);
                expected.provider_message_id = id.to_owned();
                let mut buf = vec![0xAB];
                routing_decision(d, id, &mut buf);
                assert_eq!(buf[0], 0xAB, "case {i}: appended, not overwritten");
                assert_eq!(buf[1..], expected.encode_to_vec(), "case {i}, id {id:?}");
            }
        }
    }
}
