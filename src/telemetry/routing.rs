//! Routing events: inbound messages, decisions, what the shard's effects mean, queue gauges,
//! stream disconnects.
use std::time::Duration;

use metrics::{Counter, Histogram, counter, gauge, histogram};

use super::*;
use crate::core::{Map, Reason, Target};
use crate::model::TenantId;

/// A decision's labels besides its tenant: target, reason, channel.
type DecisionLabels = (Target, Reason, Option<Channel>);

/// An inbound message's `outcome` label, with its `error_type` when refused: a key that
/// compares no text for the outcomes nearly every message has.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    Routed,
    Duplicate,
    Rejected(&'static str),
}

/// A shard's handles to the series every inbound message touches. A `counter!` with labels
/// builds its key (allocating the label values) and searches the registry at each call: with
/// these series and the per-topic record counts (`TopicRecords`), ~6% of the Kafka path's
/// server CPU in a profile. Here each label set is looked up once, in maps keyed by values
/// that hash in a few instructions (`foldhash`) and compare without `memcmp`: keyed by the
/// label strings with std's SipHash, and each decision's through a clone of its tenant's
/// id, these series took 6.4% of the server's samples at 80,000 records/s, 2.2% now
/// (`perf`, session 36). Handles are made at first use, so after the recorder is installed
/// (a handle made before it would count nowhere).
#[derive(Default)]
pub struct RoutingSeries {
    inbound: Map<(Outcome, Channel), Counter>,
    /// Per tenant: (target, reason, channel).
    decisions: Map<TenantId, Map<DecisionLabels, Counter>>,
    duration: Option<Histogram>,
}

impl RoutingSeries {
    /// One inbound message on `channel` was handled (or refused).
    pub fn inbound(
        &mut self,
        result: &Result<Reply, CoreError>,
        elapsed: Duration,
        channel: Channel,
    ) {
        let outcome = match result {
            Ok(Reply::Decision(d)) if d.duplicate => Outcome::Duplicate,
            Ok(Reply::Decision(d)) => {
                self.duration
                    .get_or_insert_with(|| histogram!(DECISION_DURATION))
                    .record(elapsed.as_secs_f64());
                tracing::debug!(
                    conversation = ?d.conversation,
                    target = d.target.as_str(),
                    reason = d.reason.as_str(),
                    "routed"
                );
                Outcome::Routed
            }
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(error = %e, "inbound message rejected");
                Outcome::Rejected(error_type(e))
            }
        };
        self.inbound
            .entry((outcome, channel))
            .or_insert_with(|| {
                let channel = channel.as_str();
                match outcome {
                    Outcome::Routed => {
                        counter!(INBOUND_MESSAGES, "outcome" => "routed", "channel" => channel)
                    }
                    Outcome::Duplicate => {
                        counter!(INBOUND_MESSAGES, "outcome" => "duplicate", "channel" => channel)
                    }
                    Outcome::Rejected(error) => {
                        counter!(INBOUND_MESSAGES, "outcome" => "rejected", "error_type" => error, "channel" => channel)
                    }
                }
            })
            .increment(1);
    }

    /// A routing decision of `tenant`: for inbound messages (on their channel) and
    /// escalations (channel `none`) alike.
    pub fn decision(&mut self, tenant: &TenantId, d: &Decision, channel: Option<Channel>) {
        let labels = (d.target, d.reason, channel);
        // The tenant's map found by its name, without a clone of its id (an atomic count).
        if let Some(c) = self
            .decisions
            .get(tenant)
            .and_then(|series| series.get(&labels))
        {
            c.increment(1);
            return;
        }
        self.decisions
            .entry(tenant.clone())
            .or_default()
            .entry(labels)
            .or_insert_with(|| {
                counter!(
                    ROUTING_DECISIONS,
                    "tenant" => tenant.to_string(),
                    "target" => d.target.as_str(),
                    "reason" => d.reason.as_str(),
                    "channel" => channel.map_or("none", Channel::as_str)
                )
            })
            .increment(1);
    }
}

/// Series a tenant has from its start, at 0 until something counts (a dashboard shows 0, not
/// "no data"; a ratio has both its terms): bot containment's two outcomes.
pub fn tenant_series(tenant: &str) {
    for outcome in ["contained", "handed_over"] {
        counter!(BOT_CONVERSATIONS, "tenant" => tenant.to_owned(), "outcome" => outcome)
            .increment(0);
    }
}

pub fn error_type(e: &CoreError) -> &'static str {
    match e {
        CoreError::InvalidArgument { .. } => "invalid_argument",
        CoreError::NotFound { .. } => "not_found",
        CoreError::FailedPrecondition(_) => "failed_precondition",
        CoreError::ResourceExhausted(_) => "resource_exhausted",
    }
}

/// Counts and logs what an effect means for operators.
pub fn effect(e: &Effect) {
    match e {
        Effect::Assigned {
            tenant,
            agent,
            conversation,
            queue,
            reason,
            waited_ms,
        } => {
            counter!(ASSIGNMENTS, "tenant" => tenant.to_string(), "queue" => queue.to_string())
                .increment(1);
            tracing::debug!(%tenant, %agent, %conversation, %queue, reason = reason.as_str(), waited_ms, "assigned");
        }
        Effect::SlaBreached { tenant, queue } => {
            counter!(SLA_BREACHES, "tenant" => tenant.to_string(), "queue" => queue.to_string())
                .increment(1);
        }
        Effect::Escalated {
            tenant,
            conversation,
            from,
            to,
            priority,
        } => {
            counter!(ESCALATIONS, "tenant" => tenant.to_string(), "from" => from.to_string(), "to" => to.to_string())
                .increment(1);
            tracing::info!(%tenant, %conversation, %from, %to, priority, "waited past max wait: escalated");
        }
        Effect::SendStatus {
            tenant,
            id,
            state,
            reason,
            ..
        } => {
            counter!(SEND_STATUSES, "tenant" => tenant.to_string(), "state" => state.as_str())
                .increment(1);
            tracing::debug!(%tenant, %id, state = state.as_str(), reason = reason.map(|r| r.as_str()), "send status");
        }
        Effect::BatchMode { tenant, on } => {
            gauge!(BATCH_MODE, "tenant" => tenant.to_string()).set(if *on { 1.0 } else { 0.0 });
            tracing::info!(%tenant, on, "batch mode for low-priority sends");
        }
        Effect::SpamRateAlert { tenant, number } => {
            counter!(SPAM_RATE_ALERTS, "tenant" => tenant.to_string(), "number" => number.to_string())
                .increment(1);
            tracing::warn!(%tenant, %number, "spam-rate error (131048): marketing paused on this number");
        }
        Effect::CustomerHeld { tenant } => {
            counter!(CUSTOMER_HOLDS, "tenant" => tenant.to_string()).increment(1);
            tracing::info!(%tenant, "per-user marketing limit (131049): the customer's low-priority sends wait");
        }
        Effect::BotConversationsEnded {
            tenant,
            contained,
            handed_over,
        } => {
            for (outcome, count) in [("contained", *contained), ("handed_over", *handed_over)] {
                if count > 0 {
                    counter!(BOT_CONVERSATIONS, "tenant" => tenant.to_string(), "outcome" => outcome)
                        .increment(count);
                }
            }
        }
        Effect::Consent { tenant, state } => {
            let state = match state {
                crate::core::quota::ConsentState::OptedIn => "opted_in",
                crate::core::quota::ConsentState::OptedOut => "opted_out",
            };
            counter!(CONSENT_CHANGES, "tenant" => tenant.to_string(), "state" => state)
                .increment(1);
        }
        Effect::ShadowRefusal { tenant, rule } => {
            counter!(SHADOW_REFUSALS, "tenant" => tenant.to_string(), "rule" => rule.as_str())
                .increment(1);
        }
        Effect::Unassigned { .. }
        | Effect::AgentMessage { .. }
        | Effect::BotMessage { .. }
        | Effect::Queued { .. }
        | Effect::Dispatch { .. } => {}
    }
}

/// Queue gauges, refreshed on every shard tick.
pub fn queue_gauges(stats: &[QueueStatsView]) {
    for s in stats {
        let labels = [
            ("tenant", s.tenant.to_string()),
            ("queue", s.queue.to_string()),
        ];
        gauge!(QUEUE_DEPTH, &labels).set(f64::from(s.depth));
        gauge!(QUEUE_AVAILABLE_AGENTS, &labels).set(f64::from(s.available_agents));
        gauge!(QUEUE_ESTIMATED_WAIT, &labels).set(
            s.estimated_wait_ms
                .map_or(f64::INFINITY, |ms| ms as f64 / 1_000.0),
        );
        gauge!(QUEUE_SLA_ATTAINMENT, &labels).set(s.sla_attainment);
    }
}

/// A stream subscriber fell behind and was disconnected.
pub fn stream_disconnected(kind: &'static str) {
    counter!(STREAM_DISCONNECTS, "kind" => kind).increment(1);
    tracing::warn!(
        kind,
        "stream subscriber fell behind and was disconnected; it must resubscribe"
    );
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    /// What a recorder of its own renders after `record` ran with it.
    fn rendered(record: impl FnOnce()) -> String {
        let recorder = PrometheusBuilder::new().build_recorder();
        metrics::with_local_recorder(&recorder, record);
        recorder.handle().render()
    }

    /// The value of series `name{labels}` in `text`, if it has one.
    fn count(text: &str, name: &str, labels: &str) -> Option<u64> {
        let prefix = format!("{name}{{{labels}}} ");
        let line = text.lines().find_map(|l| l.strip_prefix(prefix.as_str()));
        line.map(|v| v.trim().parse().expect("a count"))
    }

    /// A sweep's one effect adds each count to its outcome's series, and an outcome with
    /// none is not looked up (no series made for it).
    #[test]
    fn a_sweeps_bot_conversations_are_counted_by_outcome() {
        let text = rendered(|| {
            for (tenant, contained, handed_over) in [("acme", 3, 2), ("acme", 4, 1), ("beta", 5, 0)]
            {
                effect(&Effect::BotConversationsEnded {
                    tenant: TenantId::new(tenant),
                    contained,
                    handed_over,
                });
            }
        });
        let series = |tenant: &str, outcome: &str| {
            let labels = format!("tenant=\"{tenant}\",outcome=\"{outcome}\"");
            count(&text, BOT_CONVERSATIONS, &labels)
        };
        assert_eq!(series("acme", "contained"), Some(7), "{text}");
        assert_eq!(series("acme", "handed_over"), Some(3), "{text}");
        assert_eq!(series("beta", "contained"), Some(5), "{text}");
        assert_eq!(series("beta", "handed_over"), None, "{text}");
    }

    /// The series every inbound message touches count each outcome and each decision on
    /// its own labels, whichever came first.
    #[test]
    fn inbound_messages_and_decisions_count_on_their_own_series() {
        let routed = Decision {
            target: Target::Bot,
            reason: Reason::SimpleIntent,
            ..Decision::new(None)
        };
        let text = rendered(|| {
            let mut series = RoutingSeries::default();
            let duplicate = Decision {
                duplicate: true,
                ..Decision::new(None)
            };
            let refused = || CoreError::NotFound {
                what: "tenant",
                id: "x".into(),
            };
            let (acme, beta) = (TenantId::new("acme"), TenantId::new("beta"));
            let whatsapp = Channel::WhatsApp;
            for (result, channel) in [
                (Ok(Reply::Decision(routed.clone())), whatsapp),
                (Ok(Reply::Decision(duplicate)), whatsapp),
                (Err(refused()), whatsapp),
                (Ok(Reply::Decision(routed.clone())), whatsapp),
                (Err(refused()), Channel::WebChat),
                (Ok(Reply::Decision(routed.clone())), Channel::WebChat),
            ] {
                series.inbound(&result, Duration::from_micros(5), channel);
            }
            series.decision(&acme, &routed, Some(whatsapp));
            series.decision(&beta, &routed, Some(whatsapp));
            series.decision(&acme, &routed, Some(whatsapp));
            series.decision(&acme, &routed, None);
        });
        let inbound = |labels: &str| count(&text, INBOUND_MESSAGES, labels);
        let rejected = "outcome=\"rejected\",error_type=\"not_found\"";
        for (labels, expected) in [
            ("outcome=\"routed\",channel=\"whatsapp\"".to_owned(), 2),
            ("outcome=\"routed\",channel=\"webchat\"".to_owned(), 1),
            ("outcome=\"duplicate\",channel=\"whatsapp\"".to_owned(), 1),
            (format!("{rejected},channel=\"whatsapp\""), 1),
            (format!("{rejected},channel=\"webchat\""), 1),
        ] {
            assert_eq!(inbound(&labels), Some(expected), "{labels}\n{text}");
        }
        let decisions = |tenant: &str, channel: &str| {
            let labels = format!(
                "tenant=\"{tenant}\",target=\"bot\",reason=\"simple_intent\",channel=\"{channel}\""
            );
            count(&text, ROUTING_DECISIONS, &labels)
        };
        assert_eq!(decisions("acme", "whatsapp"), Some(2), "{text}");
        assert_eq!(decisions("beta", "whatsapp"), Some(1), "{text}");
        assert_eq!(decisions("acme", "none"), Some(1), "{text}");
    }
}
