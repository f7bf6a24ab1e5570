//! The provider's answers fed back into the quotas: sent and delivered confirm a send; the
//! Cloud API's errors back off the number or the pair, close the window or pause marketing.
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
        // A status webhook may report a failure after the API accepted the message ("sent",
        // then "failed"); anything else after the first answer is a late or repeated report.
        let failed = match (outcome, send.view.state) {
            (ProviderOutcome::Sent, SendState::Dispatched) => None,
            (ProviderOutcome::Failed { code }, SendState::Dispatched | SendState::Sent) => {
                Some(code)
            }
            _ => return None,
        };
        let mut closed_window = None;
        match failed {
            None => send.view.state = SendState::Sent,
            Some(code) => {
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
        }
        let send = self.log.get(id).expect("updated above");
        self.status(send, out);
        closed_window
    }
}
