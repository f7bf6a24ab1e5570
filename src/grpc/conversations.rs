//! `switchboard.v1.Conversations`: a conversation's state, automation pauses and route overrides.
use super::*;

service!(proto::conversations_server::Conversations, proto::conversations_client::ConversationsClient<Channel> {
    unary get(&self, request: proto::ConversationRef) -> proto::Conversation {
        let r = request.into_inner();
        self.conversation_call(Command::GetConversation {
            tenant: tenant(&r.tenant)?,
            conversation: conversation_id(&r.conversation_id)?,
        })
        .await
    }

    unary pause_automation(&self, request: proto::ConversationRef) -> proto::Conversation {
        let r = request.into_inner();
        self.conversation_call(Command::PauseAutomation {
            tenant: tenant(&r.tenant)?,
            conversation: conversation_id(&r.conversation_id)?,
        })
        .await
    }

    unary resume_automation(&self, request: proto::ConversationRef) -> proto::Conversation {
        let r = request.into_inner();
        self.conversation_call(Command::ResumeAutomation {
            tenant: tenant(&r.tenant)?,
            conversation: conversation_id(&r.conversation_id)?,
        })
        .await
    }

    unary override_route(&self, request: proto::OverrideRouteRequest) -> proto::Conversation {
        use proto::override_route_request::To;
        let r = request.into_inner();
        let to = match r.to {
            Some(To::Queue(q)) => {
                Some(RouteOverride::Queue(QueueName::new(required("queue", &q)?)))
            }
            Some(To::AgentId(a)) => Some(RouteOverride::Agent(agent("agent_id", &a)?)),
            Some(To::Clear(true)) => None,
            Some(To::Clear(false)) | None => {
                return Err(
                    invalid("to", "is required: set queue, agent_id or clear = true").into(),
                );
            }
        };
        self.conversation_call(Command::OverrideRoute {
            tenant: tenant(&r.tenant)?,
            conversation: conversation_id(&r.conversation_id)?,
            to,
        })
        .await
    }

    unary escalate(&self, request: proto::EscalateRequest) -> proto::RoutingDecision {
        let r = request.into_inner();
        self.decision_call(Command::Escalate {
            tenant: tenant(&r.tenant)?,
            conversation: conversation_id(&r.conversation_id)?,
            queue: (!r.queue.is_empty()).then_some(r.queue),
            note: r.note,
            author: (!r.author.trim().is_empty()).then_some(r.author),
        })
        .await
    }
});
