//! Customers' identities, links and profiles: proto ⇄ core.
use crate::core::Command;
use crate::core::customer::{Attr, Conflict, Field, Identity, Profile};
use crate::core::tenant::{CustomerView, DuplicateView, IdentityRef, LinkView};
use crate::model::TenantId;
use crate::proto;

use super::lifecycle::at_in;
use super::{Invalid, invalid, required, tenant};

/// Conflicts or suggestions listed when the request does not say how many.
const DEFAULT_LIMIT: usize = 100;

pub fn identity_in(
    field: &'static str,
    i: Option<proto::Identity>,
) -> Result<IdentityRef, Invalid> {
    use proto::identity::Kind;
    match i.and_then(|i| i.kind) {
        Some(Kind::Phone(p)) => Ok(IdentityRef::Phone(p)),
        Some(Kind::Email(e)) => Ok(IdentityRef::Email(e)),
        Some(Kind::VisitorId(v)) => Ok(IdentityRef::Visitor(v)),
        None => Err(invalid(
            field,
            "is required: set one of phone, email or visitor_id",
        )),
    }
}

pub fn identity_out(i: &Identity) -> proto::Identity {
    use proto::identity::Kind;
    let kind = match i {
        Identity::Phone(p) => Kind::Phone(p.as_e164().to_owned()),
        Identity::Email(e) => Kind::Email(e.to_string()),
        Identity::Visitor(v) => Kind::VisitorId(v.to_string()),
    };
    proto::Identity { kind: Some(kind) }
}

pub fn link_in(r: proto::LinkRequest) -> Result<Command, Invalid> {
    Ok(Command::Link {
        tenant: tenant(&r.tenant)?,
        a: identity_in("a", r.a)?,
        b: identity_in("b", r.b)?,
        source: required("source", &r.source)?.to_owned(),
        actor: required("actor", &r.actor)?.to_owned(),
        reason: r.reason,
    })
}

pub fn link_out(v: &LinkView) -> proto::LinkResponse {
    let text = |x: Option<String>| x.unwrap_or_default();
    proto::LinkResponse {
        conversation_id: v.conversation.to_string(),
        merged_conversation_id: text(v.merged.map(|c| c.to_string())),
        agent_id: text(v.agent.as_ref().map(ToString::to_string)),
        released_agent_id: text(v.released_agent.as_ref().map(ToString::to_string)),
    }
}

pub fn get_customer_in(r: proto::CustomerRef) -> Result<Command, Invalid> {
    Ok(Command::GetCustomer {
        tenant: tenant(&r.tenant)?,
        identity: identity_in("identity", r.identity)?,
    })
}

pub fn update_profile_in(r: proto::UpdateProfileRequest) -> Result<Command, Invalid> {
    let values: Vec<(Field, String)> = [
        (Field::Name, r.name),
        (Field::Email, r.email),
        (Field::Language, r.language),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect();
    if values.is_empty() {
        return Err(invalid(
            "name",
            "and email and language are all empty: set at least one",
        ));
    }
    Ok(Command::UpdateProfile {
        tenant: tenant(&r.tenant)?,
        identity: identity_in("identity", r.identity)?,
        values,
        source: required("source", &r.source)?.to_owned(),
        at: at_in(r.at_ms)?,
    })
}

pub fn list_conflicts_in(r: proto::ListConflictsRequest) -> Result<Command, Invalid> {
    Ok(Command::ListConflicts {
        tenant: tenant(&r.tenant)?,
        limit: limit(r.limit),
    })
}

fn limit(given: u32) -> usize {
    match given {
        0 => DEFAULT_LIMIT,
        n => n as usize,
    }
}

pub fn suggest_duplicates_in(r: proto::SuggestDuplicatesRequest) -> Result<Command, Invalid> {
    Ok(Command::SuggestDuplicates {
        tenant: tenant(&r.tenant)?,
        identity: r
            .identity
            .map(|i| identity_in("identity", Some(i)))
            .transpose()?,
        limit: limit(r.limit),
    })
}

pub fn duplicates_out(list: &[DuplicateView]) -> proto::SuggestDuplicatesResponse {
    let text = |n: &Option<std::sync::Arc<str>>| n.as_deref().unwrap_or_default().to_owned();
    proto::SuggestDuplicatesResponse {
        suggestions: list
            .iter()
            .map(|d| proto::DuplicateSuggestion {
                conversation_id: d.conversation.to_string(),
                identities: d.identities.iter().map(identity_out).collect(),
                name: text(&d.name),
                similarity: d.similarity,
                of_conversation_id: d.of.to_string(),
                of_name: text(&d.of_name),
            })
            .collect(),
    }
}

fn value_out(a: &Attr) -> proto::ProfileValue {
    proto::ProfileValue {
        value: a.value.to_string(),
        source: a.source.to_string(),
        at_ms: a.at.as_millis() as i64,
    }
}

fn profile_out(p: &Profile) -> proto::Profile {
    proto::Profile {
        name: p.name.as_ref().map(value_out),
        email: p.email.as_ref().map(value_out),
        language: p.language.as_ref().map(value_out),
    }
}

pub fn customer_out(tenant: &TenantId, v: &CustomerView) -> proto::Customer {
    proto::Customer {
        tenant: tenant.to_string(),
        conversation_id: v.conversation.to_string(),
        identities: v.identities.iter().map(identity_out).collect(),
        profile: Some(profile_out(&v.profile)),
    }
}

pub fn conflicts_out(list: &[(Conflict, Vec<Identity>)]) -> proto::ListConflictsResponse {
    proto::ListConflictsResponse {
        conflicts: list
            .iter()
            .map(|(c, identities)| proto::ProfileConflict {
                conversation_id: c.conversation.to_string(),
                identities: identities.iter().map(identity_out).collect(),
                field: c.field.as_str().to_owned(),
                kept: Some(value_out(&c.kept)),
                other: Some(value_out(&c.other)),
            })
            .collect(),
    }
}
