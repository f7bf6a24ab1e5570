//! `switchboard.v1.Customers`: a customer's consent to marketing, read and set.
use super::*;
use crate::sender::Journaled;
use crate::wire::lifecycle::{consent_out, get_consent_in, set_consent_in};

service!(proto::customers_server::Customers, proto::customers_client::CustomersClient<Channel> {
    unary get_consent(&self, request: proto::ConsentRef) -> proto::Consent {
        let command = get_consent_in(request.into_inner())?;
        Ok(Response::new(self.consent(command).await?))
    }

    unary set_consent(&self, request: proto::SetConsentRequest) -> proto::Consent {
        let mut r = request.into_inner();
        let consent = self.consent(set_consent_in(r.clone())?).await?;
        // Written down before the answer (Kafka mode), with its time, so a crash before the
        // next snapshot neither loses it nor sets it at another time.
        if let Some(journal) = &self.journal {
            r.at_ms = consent.at_ms;
            if let Err(e) = journal.append(Journaled::Consent(&r)).await {
                tracing::warn!(error = %e, "consent not journaled");
                return Err(Status::unavailable(format!(
                    "consent set here but not journaled ({e}); retry (the same request is safe)"
                )));
            }
        }
        Ok(Response::new(consent))
    }
});

impl Api {
    async fn consent(&self, command: Command) -> Result<proto::Consent, Status> {
        let tenant = command
            .tenant()
            .cloned()
            .expect("a consent command names its tenant");
        match self.call(command).await? {
            Reply::Consent(view) => Ok(consent_out(&tenant, view.as_ref())),
            other => Err(unexpected(other)),
        }
    }
}
