//! `switchboard.v1.Inbound`: a customer message in, its routing decision out.
use super::*;

service!(proto::inbound_server::Inbound, proto::inbound_client::InboundClient<Channel> {
    unary ingest(&self, request: proto::InboundMessage) -> proto::RoutingDecision {
        let inbound = inbound_in(request.into_inner())?;
        let id = inbound.provider_message_id.clone();
        let mut decision = self.decision_call(Command::Ingest(inbound)).await?;
        decision.get_mut().provider_message_id = id;
        Ok(decision)
    }
});
