//! `switchboard.v1.Quotas`: quotas read and tuned by SREs (overrides, shadow mode, reload, plans).
use super::*;

service!(proto::quotas_server::Quotas, proto::quotas_client::QuotasClient<Channel> {
    unary get(&self, request: proto::QuotaRef) -> proto::PortfolioQuota {
        let tenant = tenant(&request.into_inner().tenant)?;
        Ok(Response::new(self.quota(tenant).await?))
    }

    local list(&self, request: proto::ListQuotasRequest) -> proto::ListQuotasResponse {
        let mut tenants = Vec::new();
        for t in self.runtime.tenants() {
            let quota = match self.owner_of(t.as_str(), request.metadata())? {
                Some((channel, owner)) => {
                    let get = Request::from_parts(
                        request.metadata().clone(),
                        Default::default(),
                        proto::QuotaRef {
                            tenant: t.to_string(),
                        },
                    );
                    proto::quotas_client::QuotasClient::new(channel)
                        .get(forwarded(get))
                        .await
                        .map_err(|s| self.unreached(t.as_str(), &owner, s))?
                        .into_inner()
                }
                None => self.quota(t).await?,
            };
            tenants.push(quota);
        }
        Ok(Response::new(proto::ListQuotasResponse { tenants }))
    }

    unary set_override(&self, request: proto::SetOverrideRequest) -> proto::OverrideInfo {
        use proto::set_override_request::Change as C;
        let actor = crate::auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        let change = match r.change {
            Some(C::MessagingLimit(n)) => {
                let n = u32::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
                    invalid(
                        "messaging_limit",
                        "must be from 1 to 4294967295; for no limit set messaging_unlimited",
                    )
                })?;
                Change::MessagingLimit(MessagingLimit::Customers(n))
            }
            Some(C::MessagingUnlimited(true)) => Change::MessagingLimit(MessagingLimit::Unlimited(
                crate::config::Unlimited::Unlimited,
            )),
            Some(C::BatchThreshold(x)) => Change::BatchThreshold(x),
            Some(C::Reserve(x)) => Change::Reserve(x),
            Some(C::NumberRate(n)) => Change::NumberRate {
                number: required("number_rate.number", &n.number)?.to_owned(),
                mps: n.mps,
                burst: (n.burst > 0).then_some(n.burst),
            },
            Some(C::Shadow(s)) => Change::Shadow {
                rule: rule_in(s.rule)?,
                on: s.on,
            },
            Some(C::MessagingUnlimited(false)) | None => {
                return Err(invalid(
                    "change",
                    "is required: set messaging_limit, messaging_unlimited, batch_threshold, reserve, number_rate or shadow",
                ).into());
            }
        };
        match self
            .call(Command::SetOverride {
                tenant: tenant(&r.tenant)?,
                change,
                reason: r.reason,
                actor,
                expires_in_ms: r.expires_in_ms,
            })
            .await?
        {
            Reply::Override(o) => Ok(Response::new(override_out(&o))),
            other => Err(unexpected(other)),
        }
    }

    unary clear_override(&self, request: proto::ClearOverrideRequest) -> proto::OverrideInfo {
        let actor = crate::auth::actor(&request, &request.get_ref().actor);
        let r = request.into_inner();
        match self
            .call(Command::ClearOverride {
                tenant: tenant(&r.tenant)?,
                id: r.override_id,
                actor,
            })
            .await?
        {
            Reply::Override(o) => Ok(Response::new(override_out(&o))),
            other => Err(unexpected(other)),
        }
    }

    unary list_audit(&self, request: proto::ListAuditRequest) -> proto::ListAuditResponse {
        let r = request.into_inner();
        let limit = if r.limit == 0 { 100 } else { r.limit as usize };
        match self
            .call(Command::ListAudit {
                tenant: tenant(&r.tenant)?,
                limit,
            })
            .await?
        {
            Reply::Audit(entries) => Ok(Response::new(proto::ListAuditResponse {
                entries: entries.iter().map(audit_out).collect(),
            })),
            other => Err(unexpected(other)),
        }
    }

    unary plan_campaign(&self, request: proto::PlanCampaignRequest) -> proto::CampaignPlan {
        let r = request.into_inner();
        let plan = PlanRequest {
            customers: r.customers,
            interactions: if r.interactions == 0 {
                3
            } else {
                r.interactions
            },
            start: crate::clock::Timestamp(u64::try_from(r.start_ms).unwrap_or(0)),
            duration_ms: r.duration_ms,
        };
        match self
            .call(Command::PlanCampaign {
                tenant: tenant(&r.tenant)?,
                plan,
            })
            .await?
        {
            Reply::Plan(p) => Ok(Response::new(proto::CampaignPlan {
                messages: p.messages,
                mps_needed: p.mps_needed,
                mps_available: p.mps_available,
                messaging_limit: p.limit.unwrap_or_default(),
                unlimited: p.limit.is_none(),
                used_at_start: p.used_at_start,
                peak_used: p.peak_used,
                peak_ratio: p.peak_ratio,
                batch_mode: p.batch_mode_at.is_some(),
                batch_mode_at_ms: millis(p.batch_mode_at),
                sent_directly: p.sent_directly,
                batched: p.batched,
                completes: p.done_at.is_some(),
                done_at_ms: millis(p.done_at),
            })),
            other => Err(unexpected(other)),
        }
    }

    local reload_config(&self, request: proto::ReloadConfigRequest) -> proto::ReloadConfigResponse {
        let actor = crate::auth::actor(&request, &request.get_ref().actor);
        let actor = if actor.trim().is_empty() {
            "grpc".to_owned()
        } else {
            actor
        };
        match self.reloader.reload(&actor).await {
            Ok(notes) => Ok(Response::new(proto::ReloadConfigResponse { notes })),
            Err(ReloadError::Tenant { error, .. }) => Err(status(error)),
            Err(e) => Err(Status::failed_precondition(e.to_string())),
        }
    }
});
