//! `switchboard.v1.Customers`: a customer's consent to marketing, read and set.
use super::*;
use crate::wire::lifecycle::{consent_out, get_consent_in, set_consent_in};

service!(proto::customers_server::Customers, proto::customers_client::CustomersClient<Channel> {
    unary get_consent(&self, request: proto::ConsentRef) -> proto::Consent {
        let command = get_consent_in(request.into_inner())?;
        self.consent(command).await
    }

    unary set_consent(&self, request: proto::SetConsentRequest) -> proto::Consent {
        let command = set_consent_in(request.into_inner())?;
        self.consent(command).await
    }
});

impl Api {
    async fn consent(&self, command: Command) -> Result<Response<proto::Consent>, Status> {
        let tenant = command
            .tenant()
            .cloned()
            .expect("a consent command names its tenant");
        match self.call(command).await? {
            Reply::Consent(view) => Ok(Response::new(consent_out(&tenant, view.as_ref()))),
            other => Err(unexpected(other)),
        }
    }
}
