//! `switchboard.v1.Outbound`: sends under the quotas, their status, and the status stream.
use super::*;
use crate::sender::Journaled;

service!(proto::outbound_server::Outbound, proto::outbound_client::OutboundClient<Channel> {
    unary send(&self, request: proto::SendRequest) -> proto::SendResponse {
        let r = request.into_inner();
        let command = Command::Send(send_in(r.clone())?);
        match self.call(command).await? {
            Reply::Send { id, admission } => {
                // Admitted (dispatched or queued): written down before the answer, so a crash
                // before the next snapshot loses no queued send (Kafka mode).
                if let Some(journal) = &self.journal
                    && !matches!(admission, Admission::Refused { .. })
                    && let Err(e) = journal.append(Journaled::Send(&r)).await
                {
                    tracing::warn!(error = %e, "admitted send not journaled; a crash before the next snapshot would lose it if queued");
                }
                Ok(Response::new(send_response_out(id, admission)))
            }
            other => Err(unexpected(other)),
        }
    }

    unary get_status(&self, request: proto::SendRef) -> proto::SendStatus {
        let r = request.into_inner();
        let tenant = tenant(&r.tenant)?;
        let command = if r.send_id.is_empty() && !r.idempotency_key.is_empty() {
            Command::GetSendByKey {
                tenant: tenant.clone(),
                key: r.idempotency_key,
            }
        } else {
            Command::GetSend {
                tenant: tenant.clone(),
                id: send_id(&r.send_id)?,
            }
        };
        match self.call(command).await? {
            Reply::SendView(v) => Ok(Response::new(send_view_out(&tenant, &v))),
            other => Err(unexpected(other)),
        }
    }

    unary cancel(&self, request: proto::CancelRequest) -> proto::CancelResponse {
        let r = request.into_inner();
        let command = crate::wire::lifecycle::cancel_in(r.clone())?;
        match self.call(command).await? {
            Reply::Cancelled { cancelled, key } => {
                // By its idempotency key: a send's id is not kept when the journal is read
                // again after a crash (refused sends take ids and are not journaled).
                let r = match key {
                    Some(key) => proto::CancelRequest {
                        tenant: r.tenant,
                        idempotency_key: key.to_string(),
                        ..Default::default()
                    },
                    None => r,
                };
                // Written down before the answer (Kafka mode): replayed after the send it
                // cancels, so a crash now cannot bring the send back. Also when it cancelled
                // nothing now: it may be the retry of a cancel whose journaling failed.
                if let Some(journal) = &self.journal
                    && let Err(e) = journal.append(Journaled::Cancel(&r)).await
                {
                    tracing::warn!(error = %e, "cancel not journaled");
                    return Err(Status::unavailable(format!(
                        "cancelled here but not journaled ({e}); retry the cancel"
                    )));
                }
                Ok(Response::new(crate::wire::lifecycle::cancel_out(cancelled)))
            }
            other => Err(unexpected(other)),
        }
    }

    unary pause(&self, request: proto::PauseRequest) -> proto::PauseInfo {
        let actor = crate::auth::actor(&request, &request.get_ref().actor);
        let mut r = request.into_inner();
        let tenant = tenant(&r.tenant)?;
        let ttl_ms = r.expires_in_ms;
        let command = crate::wire::lifecycle::pause_in(r.clone(), actor.clone())?;
        match self.call(command).await? {
            Reply::Paused(p) => {
                // Journaled with its start and actor, so a replay ends it at the same time.
                r.at_ms = p.until.as_millis().saturating_sub(ttl_ms) as i64;
                r.actor = actor;
                self.journal_change(Journaled::Pause(&r), "pause").await?;
                Ok(Response::new(crate::wire::lifecycle::pause_out(&tenant, &p)))
            }
            other => Err(unexpected(other)),
        }
    }

    unary resume(&self, request: proto::ResumeRequest) -> proto::ResumeResponse {
        let actor = crate::auth::actor(&request, &request.get_ref().actor);
        let mut r = request.into_inner();
        let tenant = tenant(&r.tenant)?;
        let command = crate::wire::lifecycle::resume_in(r.clone(), actor.clone())?;
        match self.call(command).await? {
            Reply::Resumed { pause, released } => {
                // Also when nothing was paused: it may be the retry of a resume whose
                // journaling failed.
                r.actor = actor;
                self.journal_change(Journaled::Resume(&r), "resume").await?;
                Ok(Response::new(proto::ResumeResponse {
                    resumed: pause.is_some(),
                    released,
                    pause: pause.map(|p| crate::wire::lifecycle::pause_out(&tenant, &p)),
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    unary list_paused(&self, request: proto::ListPausedRequest) -> proto::ListPausedResponse {
        let tenant = tenant(&request.into_inner().tenant)?;
        match self.call(Command::ListPaused { tenant: tenant.clone() }).await? {
            Reply::Pauses(pauses) => Ok(Response::new(proto::ListPausedResponse {
                pauses: pauses
                    .iter()
                    .map(|p| crate::wire::lifecycle::pause_out(&tenant, p))
                    .collect(),
            })),
            other => Err(unexpected(other)),
        }
    }

    type StreamStatusStream = EventStream<proto::SendStatus>;

    stream stream_status(&self, request: proto::StatusStreamRequest) -> Self::StreamStatusStream {
        let r = request.into_inner();
        let rx = self
            .runtime
            .subscribe_status(tenant(&r.tenant)?)
            .await
            .map_err(status)?;
        Ok(Response::new(stream(rx, status_event_out)))
    }
});
