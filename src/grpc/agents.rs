//! `switchboard.v1.Agents`: agents register, set presence, take, finish and hand over conversations, and follow their stream.
use super::*;

service!(proto::agents_server::Agents, proto::agents_client::AgentsClient<Channel> {
    unary register(&self, request: proto::RegisterAgentRequest) -> proto::Agent {
        let r = request.into_inner();
        self.agent_call(Command::RegisterAgent {
            tenant: tenant(&r.tenant)?,
            agent: agent("agent_id", &r.agent_id)?,
            presence: presence(r.presence)?,
            capacity: r.capacity,
            queues: r.queues,
        })
        .await
    }

    unary set_presence(&self, request: proto::SetPresenceRequest) -> proto::Agent {
        let r = request.into_inner();
        self.agent_call(Command::SetPresence {
            tenant: tenant(&r.tenant)?,
            agent: agent("agent_id", &r.agent_id)?,
            presence: presence(r.presence)?,
        })
        .await
    }

    unary get(&self, request: proto::AgentRef) -> proto::Agent {
        let r = request.into_inner();
        self.agent_call(Command::GetAgent {
            tenant: tenant(&r.tenant)?,
            agent: agent("agent_id", &r.agent_id)?,
        })
        .await
    }

    type SubscribeStream = EventStream<proto::AgentEvent>;

    stream subscribe(&self, request: proto::AgentRef) -> Self::SubscribeStream {
        let r = request.into_inner();
        let rx = self
            .runtime
            .subscribe_agent(tenant(&r.tenant)?, agent("agent_id", &r.agent_id)?)
            .await
            .map_err(status)?;
        Ok(Response::new(stream(rx, agent_event_out)))
    }

    unary complete(&self, request: proto::ConversationAction) -> proto::Agent {
        let r = request.into_inner();
        self.agent_call(Command::Complete {
            tenant: tenant(&r.tenant)?,
            agent: agent("agent_id", &r.agent_id)?,
            conversation: conversation_id(&r.conversation_id)?,
        })
        .await
    }

    unary release(&self, request: proto::ConversationAction) -> proto::Agent {
        let r = request.into_inner();
        self.agent_call(Command::Release {
            tenant: tenant(&r.tenant)?,
            agent: agent("agent_id", &r.agent_id)?,
            conversation: conversation_id(&r.conversation_id)?,
        })
        .await
    }

    unary transfer(&self, request: proto::TransferRequest) -> proto::Agent {
        use proto::transfer_request::To;
        let r = request.into_inner();
        let to = match r.to {
            Some(To::Queue(q)) => TransferTarget::Queue(QueueName::new(required("queue", &q)?)),
            Some(To::ToAgentId(a)) => TransferTarget::Agent(agent("to_agent_id", &a)?),
            None => return Err(invalid("to", "is required: set queue or to_agent_id").into()),
        };
        self.agent_call(Command::Transfer {
            tenant: tenant(&r.tenant)?,
            agent: agent("agent_id", &r.agent_id)?,
            conversation: conversation_id(&r.conversation_id)?,
            to,
        })
        .await
    }
});
