//! `switchboard.v1.Customers`: who a customer is (identities, links, profile, conflicts) and
//! their consent to marketing.
use super::*;
use crate::sender::Journaled;
use crate::wire::customers::{
    conflicts_out, customer_out, duplicates_out, get_customer_in, link_in, link_out,
    list_conflicts_in, suggest_duplicates_in, update_profile_in,
};
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

    unary link(&self, request: proto::LinkRequest) -> proto::LinkResponse {
        let r = request.into_inner();
        let linked = match self.call(link_in(r.clone())?).await? {
            Reply::Linked(v) => link_out(&v),
            other => return Err(unexpected(other)),
        };
        self.journal_change(Journaled::Link(&r), "link").await?;
        Ok(Response::new(linked))
    }

    unary get(&self, request: proto::CustomerRef) -> proto::Customer {
        let command = get_customer_in(request.into_inner())?;
        Ok(Response::new(self.customer(command).await?))
    }

    unary update_profile(&self, request: proto::UpdateProfileRequest) -> proto::Customer {
        let mut r = request.into_inner();
        let customer = self.customer(update_profile_in(r.clone())?).await?;
        if r.at_ms == 0 {
            // "Now" was the shard's time: the replay must set the values at that time too,
            // which the profile shows (a value set now is the most recent).
            let p = customer.profile.clone().unwrap_or_default();
            r.at_ms = [(&r.name, p.name), (&r.email, p.email), (&r.language, p.language)]
                .into_iter()
                .filter(|(given, _)| !given.is_empty())
                .filter_map(|(_, held)| held.map(|v| v.at_ms))
                .max()
                .unwrap_or_default();
        }
        self.journal_change(Journaled::Profile(&r), "profile update").await?;
        Ok(Response::new(customer))
    }

    unary list_conflicts(&self, request: proto::ListConflictsRequest) -> proto::ListConflictsResponse {
        match self.call(list_conflicts_in(request.into_inner())?).await? {
            Reply::Conflicts(list) => Ok(Response::new(conflicts_out(&list))),
            other => Err(unexpected(other)),
        }
    }

    unary suggest_duplicates(&self, request: proto::SuggestDuplicatesRequest) -> proto::SuggestDuplicatesResponse {
        match self.call(suggest_duplicates_in(request.into_inner())?).await? {
            Reply::Duplicates(list) => Ok(Response::new(duplicates_out(&list))),
            other => Err(unexpected(other)),
        }
    }
});

impl Api {
    async fn customer(&self, command: Command) -> Result<proto::Customer, Status> {
        let tenant = command
            .tenant()
            .cloned()
            .expect("a customer command names its tenant");
        match self.call(command).await? {
            Reply::Customer(view) => Ok(customer_out(&tenant, &view)),
            other => Err(unexpected(other)),
        }
    }

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
