//! The provider's answers fed back into the quotas: sent, delivered and read move a send
//! forward; the Cloud API's errors back off the number or the pair, close the window or pause
//! marketing.
//!
//! Status webhooks come in any order and may repeat (Meta retries them), so a send only ever
//! moves forward along Dispatched → Sent → Delivered → Read: a `read` before its `delivered`
//! is taken (and the `delivered` then changes nothing), a repeated or late report changes
//! nothing and emits nothing. A failure is taken while the send is dispatched or sent (the API
//! may accept a message and a webhook report it failed later); once delivered it reached the
//! customer, and a failure reported after that is ignored.
use super::*;

impl Quotas {
    /// The provider's answer for a dispatched send, and the reaction it calls for.
    pub fn provider_result(
        &mut self,
        now: Timestamp,
        id: SendId,
        outcome: ProviderOutcome,
        out: &mut Vec<Effect>,
    ) -> Option<CustomerNumber> {
        let send = self.log.get_mut(id)?;
        let reached = match outcome {
            ProviderOutcome::Sent => SendState::Sent,
            ProviderOutcome::Delivered => SendState::Delivered,
            ProviderOutcome::Read => SendState::Read,
            ProviderOutcome::Failed { .. } => SendState::Failed,
            ProviderOutcome::Handed => return None, // stays dispatched until a report
        };
        let was = send.view.state;
        let forward = match reached {
            SendState::Failed => matches!(was, SendState::Dispatched | SendState::Sent),
            // Only along the path: a failed or expired send is never "delivered" back to life.
            _ => matches!(
                (was.delivery_progress(), reached.delivery_progress()),
                (Some(from), Some(to)) if from < to
            ),
        };
        if !forward {
            return None; // a late, repeated or out-of-order report
        }
        let mut closed_window = None;
        match outcome {
            ProviderOutcome::Failed { code } => {
                send.view.state = SendState::Failed;
                send.view.provider_code = Some(code);
                let number = &mut self.numbers[send.number as usize];
                send.view.reason = Some(match code {
                    130429 => {
                        number.backoff_until = now
                            .saturating_add(Duration::from_millis(self.config.number_backoff_ms));
                        Refusal::ThroughputLimit
                    }
                    // The number is being upgraded: hold it for the minute that takes.
                    131057 => {
                        number.backoff_until = now.saturating_add(Duration::from_secs(60));
                        Refusal::NumberBackoff
                    }
                    131056 => {
                        self.pair_backoff.insert(
                            (send.number, send.to.clone()),
                            now.saturating_add(Duration::from_millis(self.config.pair_backoff_ms)),
                        );
                        Refusal::PairLimit
                    }
                    131047 => {
                        closed_window = Some(send.to.clone());
                        Refusal::TemplateRequired
                    }
                    // Meta's per-user marketing limit: that customer's low-priority sends
                    // wait (see `lifecycle`); the number is not held.
                    131049 => {
                        let until =
                            now.saturating_add(Duration::from_secs(self.config.customer_hold_secs));
                        self.life.holds.insert(send.to.clone(), until);
                        out.push(Effect::CustomerHeld {
                            tenant: self.tenant.clone(),
                        });
                        Refusal::FrequencyCap
                    }
                    131048 => {
                        number.marketing_paused_until = now
                            .saturating_add(Duration::from_secs(self.config.marketing_pause_secs));
                        out.push(Effect::SpamRateAlert {
                            tenant: self.tenant.clone(),
                            number: number.id.clone(),
                        });
                        Refusal::MarketingPaused
                    }
                    _ => Refusal::ProviderError,
                });
            }
            _ => send.view.state = reached,
        }
        let send = self.log.get(id).expect("updated above");
        self.status(send, out);
        closed_window
    }
}
