//! The send lifecycle's messages (tags, schedules, cancels, consent): proto ⇄ core.
use crate::clock::Timestamp;
use crate::core::quota::{ConsentState, ConsentView, PauseView};
use crate::core::{Cancel, Command};
use crate::model::TenantId;
use crate::proto;

use super::{Invalid, invalid, required, send_id, tenant};

/// Longest tag accepted.
pub const MAX_TAG_BYTES: usize = 128;

pub fn tag_in(tag: String) -> Result<Option<String>, Invalid> {
    if tag.len() > MAX_TAG_BYTES {
        return Err(invalid(
            "tag",
            format!(
                "is {} bytes; use at most {MAX_TAG_BYTES}, e.g. \"collections\"",
                tag.len()
            ),
        ));
    }
    Ok((!tag.is_empty()).then_some(tag))
}

pub fn send_at_in(ms: i64) -> Result<Option<Timestamp>, Invalid> {
    match ms {
        0 => Ok(None),
        ms if ms < 0 => Err(invalid(
            "send_at_ms",
            format!("is {ms}; give milliseconds since the epoch, or 0 to send now"),
        )),
        ms => Ok(Some(Timestamp::from_millis(ms as u64))),
    }
}

/// A cancel names exactly one of: a send id, an idempotency key, a customer with a tag.
pub fn cancel_in(r: proto::CancelRequest) -> Result<Command, Invalid> {
    let tenant = tenant(&r.tenant)?;
    let named = [
        !r.send_id.is_empty(),
        !r.idempotency_key.is_empty(),
        !r.customer.is_empty() || !r.tag.is_empty(),
    ];
    if named.iter().filter(|n| **n).count() != 1 {
        return Err(invalid(
            "send_id",
            "name exactly one of: send_id, idempotency_key, or customer with tag",
        ));
    }
    let target = if !r.send_id.is_empty() {
        Cancel::Id(send_id(&r.send_id)?)
    } else if !r.idempotency_key.is_empty() {
        Cancel::Key(r.idempotency_key)
    } else {
        Cancel::Match {
            customer: required("customer", &r.customer)?.to_owned(),
            tag: required("tag", &r.tag)?.to_owned(),
        }
    };
    Ok(Command::Cancel { tenant, target })
}

pub fn cancel_out(cancelled: u32) -> proto::CancelResponse {
    proto::CancelResponse { cancelled }
}

/// A pause request; `actor` is who asks (the token's principal, or the request's actor).
pub fn pause_in(r: proto::PauseRequest, actor: String) -> Result<Command, Invalid> {
    Ok(Command::PauseTag {
        tenant: tenant(&r.tenant)?,
        tag: required("tag", &r.tag)?.to_owned(),
        ttl_ms: r.expires_in_ms,
        actor,
        reason: r.reason,
        at: at_in(r.at_ms)?,
    })
}

pub fn resume_in(r: proto::ResumeRequest, actor: String) -> Result<Command, Invalid> {
    Ok(Command::ResumeTag {
        tenant: tenant(&r.tenant)?,
        tag: required("tag", &r.tag)?.to_owned(),
        actor,
        reason: r.reason,
    })
}

pub fn pause_out(tenant: &TenantId, p: &PauseView) -> proto::PauseInfo {
    proto::PauseInfo {
        tenant: tenant.to_string(),
        tag: p.tag.to_string(),
        since_ms: p.since.as_millis() as i64,
        until_ms: p.until.as_millis() as i64,
        actor: p.actor.to_string(),
        reason: p.reason.to_string(),
        held: p.held,
    }
}

pub fn get_consent_in(r: proto::ConsentRef) -> Result<Command, Invalid> {
    Ok(Command::GetConsent {
        tenant: tenant(&r.tenant)?,
        customer: required("customer", &r.customer)?.to_owned(),
    })
}

pub fn set_consent_in(r: proto::SetConsentRequest) -> Result<Command, Invalid> {
    let state = match proto::ConsentState::try_from(r.state) {
        Ok(proto::ConsentState::OptedIn) => ConsentState::OptedIn,
        Ok(proto::ConsentState::OptedOut) => ConsentState::OptedOut,
        _ => {
            return Err(invalid(
                "state",
                "must be CONSENT_STATE_OPTED_IN or CONSENT_STATE_OPTED_OUT",
            ));
        }
    };
    Ok(Command::SetConsent {
        tenant: tenant(&r.tenant)?,
        customer: required("customer", &r.customer)?.to_owned(),
        state,
        source: required("source", &r.source)?.to_owned(),
        actor: required("actor", &r.actor)?.to_owned(),
        reason: r.reason,
        at: at_in(r.at_ms)?,
    })
}

/// When something was true, as `at_ms` gives it: 0 is now.
pub fn at_in(ms: i64) -> Result<Option<Timestamp>, Invalid> {
    match ms {
        0 => Ok(None),
        ms if ms < 0 => Err(invalid(
            "at_ms",
            format!("is {ms}; give milliseconds since the epoch, or 0 for now"),
        )),
        ms => Ok(Some(Timestamp::from_millis(ms as u64))),
    }
}

pub fn consent_out(tenant: &TenantId, view: Option<&ConsentView>) -> proto::Consent {
    let Some(v) = view else {
        return proto::Consent {
            tenant: tenant.to_string(),
            ..Default::default()
        };
    };
    proto::Consent {
        tenant: tenant.to_string(),
        state: match v.state {
            ConsentState::OptedIn => proto::ConsentState::OptedIn,
            ConsentState::OptedOut => proto::ConsentState::OptedOut,
        } as i32,
        source: v.source.to_string(),
        actor: v.actor.to_string(),
        at_ms: v.at.as_millis() as i64,
    }
}
