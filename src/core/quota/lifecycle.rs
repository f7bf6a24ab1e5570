//! The send lifecycle the ERP and CRM flows need, inside the shard with its injected time:
//!
//! - **Scheduled sends** (`send_at`): held until their time, then admitted by the same rules
//!   as any send (window, buckets, daily limit, batch mode). One refused for a reason that
//!   passes (throughput, pair, back-off, limit, cap) waits in the batch queue instead: nobody
//!   is there to retry it.
//! - **Cancel**: by id, by idempotency key, or every waiting send of one customer carrying a
//!   tag. A cancelled send leaves its queue at once and never dispatches; one already
//!   dispatched cannot be cancelled.
//! - **Consent**: opt-out and opt-in keywords on the whole text of an inbound message, or set
//!   through the API (audited). Marketing to an opted-out customer is refused `OptedOut`, and
//!   their waiting marketing is cancelled when they opt out.
//! - **Frequency cap**: business-initiated low-priority sends per customer in any moving 24
//!   hours (one cap without an opt-in, another with one).
//! - **131049** (Meta's per-user marketing limit): low-priority sends to that customer wait
//!   `customer_hold_secs`; the number is not held.
//! - **Quiet hours**: low-priority sends wait until the tenant's quiet hours end.
use std::collections::BTreeSet;

use crate::clock::quiet::QuietHours;
use crate::core::Set;
use crate::core::classify::fold;

use super::*;

/// Where consent stands for a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsentState {
    OptedIn,
    OptedOut,
}

/// A customer's consent as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsentView {
    pub state: ConsentState,
    /// Where it came from: `keyword:<word>` for an inbound message, else what the API caller
    /// said ("crm", "web-form").
    pub source: Arc<str>,
    pub actor: Arc<str>,
    pub at: Timestamp,
}

/// Which sends a cancel names.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelTarget {
    Id(SendId),
    Key(String),
    /// Every queued or scheduled send to `customer` carrying `tag`.
    Match {
        customer: CustomerNumber,
        tag: String,
    },
}

/// Why a cancel could not be done.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CancelError {
    #[error("send {0} is not known (never requested, or forgotten past max_tracked_sends)")]
    NotFound(String),
    #[error("send {id} is already {state}: it was dispatched and cannot be cancelled")]
    Dispatched { id: SendId, state: &'static str },
}

/// Which rule holds a low-priority send back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hold {
    /// The tenant's quiet hours: it waits even past its validity (and then expires).
    QuietHours,
    /// Meta's per-user marketing limit (131049) held the customer.
    CustomerHold,
    /// The per-customer frequency cap.
    FrequencyCap,
    /// Its tag is paused (`Quotas::pause`).
    Paused,
}

impl Hold {
    pub fn as_str(self) -> &'static str {
        match self {
            Hold::QuietHours => "quiet_hours",
            Hold::CustomerHold => "customer_hold",
            Hold::FrequencyCap => "frequency_cap",
            Hold::Paused => "paused",
        }
    }
}

/// Why a low-priority send waits, and until when.
pub(super) struct Wait {
    pub until: Timestamp,
    pub hold: Hold,
}

/// The lifecycle rules' state of one portfolio.
#[derive(Debug)]
pub(super) struct Lifecycle {
    /// Scheduled sends by due time.
    pub scheduled: BTreeSet<(Timestamp, SendId)>,
    pub consent: Map<CustomerNumber, ConsentView>,
    /// Times of the business-initiated low-priority sends of the last 24 hours, per customer
    /// (oldest first): the frequency cap's count.
    pub capped: Map<CustomerNumber, VecDeque<Timestamp>>,
    /// Customers held after a 131049, until when.
    pub holds: Map<CustomerNumber, Timestamp>,
    quiet: Option<QuietHours>,
    opt_out: Set<String>,
    opt_in: Set<String>,
    /// The longest keyword, in bytes (normalised).
    longest: usize,
}

/// The moving window of the frequency cap.
const DAY_MS: u64 = 24 * 3_600 * 1_000;

/// Lower-cased, accents folded, punctuation around it and repeated spaces removed: how a
/// keyword and an inbound text are compared ("¡BAJA!" is "baja").
pub fn normalize_keyword(text: &str) -> String {
    let words = fold(text).split_whitespace().collect::<Vec<_>>().join(" ");
    trim_keyword(&words).to_owned()
}

/// A text as keywords see it (folded, each run of white space one space) without what is
/// not alphanumeric at its ends.
fn trim_keyword(spaced: &str) -> &str {
    spaced.trim_matches(|c: char| !c.is_alphanumeric())
}

impl Lifecycle {
    pub fn new(config: &QuotaConfig) -> Self {
        let mut life = Self {
            scheduled: BTreeSet::new(),
            consent: Map::default(),
            capped: Map::default(),
            holds: Map::default(),
            quiet: None,
            opt_out: Set::default(),
            opt_in: Set::default(),
            longest: 0,
        };
        life.configure(config);
        life
    }

    /// Takes the keywords and quiet hours of a (re)loaded, validated config.
    pub fn configure(&mut self, config: &QuotaConfig) {
        let words = |w: &[String]| w.iter().map(|w| normalize_keyword(w)).collect();
        self.opt_out = words(&config.consent.opt_out_keywords);
        self.opt_in = words(&config.consent.opt_in_keywords);
        self.longest = self
            .opt_out
            .iter()
            .chain(&self.opt_in)
            .map(String::len)
            .max()
            .unwrap_or(0);
        self.quiet = config
            .quiet_hours
            .as_ref()
            .and_then(|q| QuietHours::new(&q.time_zone, &q.start, &q.end).ok());
    }

    pub fn opted_out(&self, customer: &CustomerNumber) -> bool {
        self.consent
            .get(customer)
            .is_some_and(|c| c.state == ConsentState::OptedOut)
    }

    fn cap(&self, customer: &CustomerNumber, config: &QuotaConfig) -> u32 {
        match self.consent.get(customer).map(|c| c.state) {
            Some(ConsentState::OptedIn) => config.frequency_cap.opted_in,
            _ => config.frequency_cap.without_opt_in,
        }
    }

    /// Whether a low-priority `send` must wait now, and until when (the latest of the rules
    /// that hold it).
    pub fn wait(&self, now: Timestamp, send: &Send, config: &QuotaConfig) -> Option<Wait> {
        let mut wait: Option<Wait> = None;
        let mut hold = |until: Timestamp, hold: Hold| {
            if wait.as_ref().is_none_or(|w| until > w.until) {
                wait = Some(Wait { until, hold });
            }
        };
        if let Some(until) = self.quiet.as_ref().and_then(|q| q.quiet_until(now)) {
            hold(until, Hold::QuietHours);
        }
        if let Some(&until) = self.holds.get(&send.to)
            && until > now
        {
            hold(until, Hold::CustomerHold);
        }
        let cap = self.cap(&send.to, config) as usize;
        if send.business_initiated
            && cap > 0
            && let Some(times) = self.capped.get(&send.to)
        {
            let live: Vec<&Timestamp> = times
                .iter()
                .filter(|t| t.as_millis() + DAY_MS > now.as_millis())
                .collect();
            if live.len() >= cap {
                // It fits once all but cap - 1 of them are out of the 24 hours.
                let frees = live[live.len() - cap].as_millis() + DAY_MS;
                hold(Timestamp(frees), Hold::FrequencyCap);
            }
        }
        wait
    }

    /// A business-initiated low-priority send to `customer` was dispatched now.
    pub fn counted(&mut self, customer: &CustomerNumber, now: Timestamp) {
        self.capped
            .entry(customer.clone())
            .or_default()
            .push_back(now);
    }

    /// Forgets counts older than 24 hours and holds that ended.
    pub fn sweep(&mut self, now: Timestamp, _window_ms: u64) {
        self.capped.retain(|_, times| {
            while times
                .front()
                .is_some_and(|t| t.as_millis() + DAY_MS <= now.as_millis())
            {
                times.pop_front();
            }
            !times.is_empty()
        });
        self.capped.shrink_to_fit();
        self.holds.retain(|_, until| *until > now);
    }

    /// The consent a text means, if it is one of the keywords; `spaced` is the text as
    /// keywords see it (the intent's classification read it).
    pub fn keyword(&self, spaced: &str) -> Option<(ConsentState, String)> {
        let word = trim_keyword(spaced);
        // Every inbound message comes here: most are sentences longer than any keyword.
        if word.len() > self.longest {
            return None;
        }
        if self.opt_out.contains(word) {
            Some((ConsentState::OptedOut, word.to_owned()))
        } else if self.opt_in.contains(word) {
            Some((ConsentState::OptedIn, word.to_owned()))
        } else {
            None
        }
    }
}

impl Quotas {
    /// A `send_at` must not be in the past, nor past the horizon; `now` or None is "now".
    pub(super) fn check_schedule(
        &self,
        now: Timestamp,
        send_at: Option<Timestamp>,
    ) -> Result<Option<Timestamp>, BadSend> {
        let Some(at) = send_at else { return Ok(None) };
        if at < now {
            return Err(BadSend {
                field: "send_at_ms",
                problem: format!(
                    "is {} ms in the past; leave it 0 to send now, or give a future time",
                    now.as_millis() - at.as_millis()
                ),
            });
        }
        let horizon = self.config.max_schedule_ahead_secs * 1_000;
        if at.as_millis() - now.as_millis() > horizon {
            return Err(BadSend {
                field: "send_at_ms",
                problem: format!(
                    "is more than {} s ahead (quotas.max_schedule_ahead_secs); schedule it later",
                    self.config.max_schedule_ahead_secs
                ),
            });
        }
        Ok((at > now).then_some(at))
    }

    /// The answer to a send scheduled for `at`.
    pub(super) fn schedule(&self, send: &Send, at: Timestamp) -> Admission {
        if send.view.category == Category::Marketing && self.life.opted_out(&send.to) {
            return refuse(Refusal::OptedOut, None);
        }
        if self.life.scheduled.len() >= self.config.max_scheduled_sends {
            return refuse(Refusal::QueueFull, None);
        }
        Admission::Scheduled { at }
    }

    /// Queues `send` (if the queue has room) to wait at least until `until`.
    pub(super) fn queue_until(
        &self,
        now: Timestamp,
        send: &Send,
        until: Timestamp,
        held: Option<Hold>,
    ) -> Admission {
        match self.queue_or_refuse(now, send) {
            Admission::Queued {
                estimated_release, ..
            } => Admission::Queued {
                estimated_release: Some(estimated_release.map_or(until, |e| e.max(until))),
                held,
            },
            other => other,
        }
    }

    /// Scheduled sends whose time came: admitted now, as fresh sends. `window_open` says
    /// whether a customer's service window is open now.
    pub(super) fn release_scheduled(
        &mut self,
        now: Timestamp,
        window_open: &dyn Fn(&CustomerNumber) -> bool,
        out: &mut Vec<Effect>,
    ) {
        while let Some(&(at, id)) = self.life.scheduled.first() {
            if at > now {
                break;
            }
            self.life.scheduled.pop_first();
            let Some(mut send) = self.log.take(id) else {
                continue;
            };
            if send.view.state != SendState::Scheduled {
                self.log.put(send);
                continue;
            }
            let open = window_open(&send.to);
            send.business_initiated = !open;
            let mut answer = self.first_admission(now, &mut send, open);
            if let Admission::Refused {
                reason:
                    Refusal::ThroughputLimit
                    | Refusal::PairLimit
                    | Refusal::NumberBackoff
                    | Refusal::MessagingLimit
                    | Refusal::MarketingPaused
                    | Refusal::FrequencyCap,
                retry_after_ms,
            } = answer
            {
                let until = Timestamp(now.as_millis() + retry_after_ms.unwrap_or(0));
                if until < send.view.valid_until {
                    answer = self.queue_until(now, &send, until, None);
                }
            }
            self.flush_shadow(out);
            self.settle(now, &mut send, answer, false, out);
            self.log.put(send);
        }
    }

    /// Cancels what `target` names; how many sends were cancelled (0: none was waiting).
    pub fn cancel(
        &mut self,
        target: &CancelTarget,
        out: &mut Vec<Effect>,
    ) -> Result<u32, CancelError> {
        self.cancel_keyed(target, out).map(|(n, _)| n)
    }

    /// [`Quotas::cancel`], and the idempotency key of the send named by id or key.
    pub fn cancel_keyed(
        &mut self,
        target: &CancelTarget,
        out: &mut Vec<Effect>,
    ) -> Result<(u32, Option<Arc<str>>), CancelError> {
        let ids: Vec<SendId> = match target {
            CancelTarget::Id(id) => vec![self.cancellable(*id, &id.to_string())?],
            CancelTarget::Key(key) => {
                let id = self
                    .log
                    .by_key(key)
                    .ok_or_else(|| CancelError::NotFound(format!("with key {key:?}")))?;
                vec![self.cancellable(id, &format!("with key {key:?}"))?]
            }
            CancelTarget::Match { customer, tag } => self.waiting_where(|s| {
                &s.to == customer && s.view.tag.as_deref() == Some(tag.as_str())
            }),
        };
        let key = match target {
            CancelTarget::Match { .. } => None,
            _ => ids
                .first()
                .and_then(|&id| self.log.get(id))
                .map(|s| s.view.idempotency_key.clone()),
        };
        Ok((self.cancel_ids(&ids, out), key))
    }

    /// `id` if it exists and was not dispatched (it may be waiting or not).
    fn cancellable(&self, id: SendId, named: &str) -> Result<SendId, CancelError> {
        let send = self
            .log
            .get(id)
            .ok_or_else(|| CancelError::NotFound(named.to_owned()))?;
        if send.view.state.delivery_progress().is_some() || send.view.state == SendState::Failed {
            return Err(CancelError::Dispatched {
                id,
                state: send.view.state.as_str(),
            });
        }
        Ok(id)
    }

    /// The waiting sends (queued or scheduled) for which `pick` is true.
    fn waiting_where(&self, pick: impl Fn(&Send) -> bool) -> Vec<SendId> {
        let queued = (self.queue_free.iter())
            .chain(&self.queue_new)
            .chain(&self.paused)
            .copied();
        let scheduled = self.life.scheduled.iter().map(|&(_, id)| id);
        queued
            .chain(scheduled)
            .filter(|&id| self.log.get(id).is_some_and(&pick))
            .collect()
    }

    /// Cancels the waiting sends among `ids`: they leave their queues now.
    fn cancel_ids(&mut self, ids: &[SendId], out: &mut Vec<Effect>) -> u32 {
        let mut gone = Set::default();
        for &id in ids {
            let Some(send) = self.log.get_mut(id) else {
                continue;
            };
            if !send.view.waiting() {
                continue;
            }
            send.view.state = SendState::Cancelled;
            gone.insert(id);
            let send = self.log.get(id).expect("just updated");
            self.status(send, out);
        }
        if !gone.is_empty() {
            self.queue_free.retain(|id| !gone.contains(id));
            self.queue_new.retain(|id| !gone.contains(id));
            self.paused.retain(|id| !gone.contains(id));
            self.life.scheduled.retain(|(_, id)| !gone.contains(id));
        }
        gone.len() as u32
    }

    /// An inbound message from `customer`: if its whole text is a consent keyword, the
    /// customer's consent changes (and opting out cancels their waiting marketing). `spaced`
    /// is the text as keywords see it.
    pub fn consent_keyword(
        &mut self,
        now: Timestamp,
        customer: &CustomerNumber,
        spaced: &str,
        out: &mut Vec<Effect>,
    ) {
        let Some((state, word)) = self.life.keyword(spaced) else {
            return;
        };
        let view = ConsentView {
            state,
            source: Arc::from(format!("keyword:{word}")),
            actor: Arc::from("customer"),
            at: now,
        };
        self.put_consent(customer, view, out);
    }

    /// Sets a customer's consent through the API (audited). The same state, source and time
    /// again (a retry, a journal read again after a crash) changes nothing.
    pub fn set_consent(
        &mut self,
        customer: &CustomerNumber,
        view: ConsentView,
        reason: &str,
        out: &mut Vec<Effect>,
    ) {
        if self
            .life
            .consent
            .get(customer)
            .is_some_and(|c| (c.state, &c.source, c.at) == (view.state, &view.source, view.at))
        {
            return;
        }
        let before = self
            .life
            .consent
            .get(customer)
            .map_or("none".to_owned(), |c| format!("{:?}", c.state));
        self.record(AuditEntry {
            at: view.at,
            actor: view.actor.clone(),
            action: "consent_set",
            // Masked: the audit is logged too.
            target: format!("customer {customer}"),
            before,
            after: format!("{:?} (source {})", view.state, view.source),
            reason: reason.to_owned(),
        });
        self.put_consent(customer, view, out);
    }

    fn put_consent(&mut self, customer: &CustomerNumber, view: ConsentView, out: &mut Vec<Effect>) {
        let state = view.state;
        self.life.consent.insert(customer.clone(), view);
        out.push(Effect::Consent {
            tenant: self.tenant.clone(),
            state,
        });
        if state == ConsentState::OptedOut {
            let marketing =
                self.waiting_where(|s| &s.to == customer && s.view.category == Category::Marketing);
            self.cancel_ids(&marketing, out);
        }
    }

    pub fn consent(&self, customer: &CustomerNumber) -> Option<&ConsentView> {
        self.life.consent.get(customer)
    }

    /// Customers with a consent on record (kept until changed: forgetting an opt-out would
    /// send marketing to someone who refused it).
    pub fn consents(&self) -> usize {
        self.life.consent.len()
    }

    /// Customers with a frequency count or a 131049 hold in the last 24 hours (swept).
    pub fn capped_customers(&self) -> usize {
        self.life.capped.len() + self.life.holds.len()
    }

    /// Sends waiting for their time.
    pub fn scheduled(&self) -> usize {
        self.life.scheduled.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::classify::Classifier;

    /// Told from the text the classifier folded, a text means the keyword its full
    /// normalisation is (as the configured keywords are normalised), the length check never
    /// hiding one: keywords with punctuation, odd white space, accents, and sentences.
    #[test]
    fn keywords_are_told_as_a_full_normalisation_tells_them() {
        let life = Lifecycle::new(&QuotaConfig::default());
        let texts = [
            "STOP",
            "  stop!!  ",
            "Stop.",
            "¡BAJA!",
            "¡¡¡baja!!!!!!!!!!!!!!!!",
            "  baja \t ¡¡ ",
            "darme de baja",
            "darme\tde\n baja",
            "darme\u{a0}de baja",
            "DARME DE BAJA 🙏",
            "No más mensajes",
            "no  mas   mensajes por favor",
            "start",
            "SUSCRIBIR",
            "stopp",
            "please stop sending me these messages",
            "hola, ¿cuál es el horario de la tienda?",
            "unsubscribe",
            "unsubscribe me",
            "\u{212a}\u{212a}\u{212a}\u{212a}",
            "",
            "!!!",
        ];
        // What the classifier gives.
        let spaced = |text: &str| {
            let c = Classifier::new(&[], 10).unwrap();
            c.classify_then(text, |_, spaced| spaced.to_owned())
        };
        for text in texts {
            let word = normalize_keyword(text);
            let full = if life.opt_out.contains(&word) {
                Some(ConsentState::OptedOut)
            } else if life.opt_in.contains(&word) {
                Some(ConsentState::OptedIn)
            } else {
                None
            };
            assert_eq!(
                life.keyword(&spaced(text)).map(|(s, _)| s),
                full,
                "{text:?}"
            );
        }
        let told = |text: &str| life.keyword(&spaced(text));
        assert_eq!(
            told("  ¡Darme\u{a0}de   BAJA!  "),
            Some((ConsentState::OptedOut, "darme de baja".to_owned()))
        );
        assert_eq!(told("please stop sending me these messages"), None);
    }
}
