//! Authenticated control: the gRPC calls that change state for others (quota overrides and
//! shadow mode, config reload, conversation overrides, agent administration) need a bearer
//! token with one of their roles. Tokens are configured hashed (SHA-256, never the token
//! itself) under `[[auth.tokens]]`, each with a principal (who) and roles. With no token
//! configured the calls are open, as in the embedded demo, and the service says so at start.
//!
//! The check is a gate in front of every gRPC service (`crate::gate`): it sees the
//! method's path, so the rule for each call is in one table ([`PROTECTED`]). No token or an
//! unknown one: `UNAUTHENTICATED`; a known token without the role: `PERMISSION_DENIED`. The
//! caller's [`Principal`] goes into the request's extensions, where the handlers take the
//! audit log's actor from it. Tokens are never logged; a failure logs the method and why.
use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::Status;

use crate::config::auth::parse_hex;
pub use crate::config::auth::{AuthConfig, Role, TokenConfig};
use tonic::codegen::http;

/// The calls that need a token, and the roles that may make them. Every other call is open
/// (customer traffic, sends, reads, an agent's own actions).
pub const PROTECTED: &[(&str, &[Role])] = &[
    ("/switchboard.v1.Quotas/SetOverride", &[Role::Sre]),
    ("/switchboard.v1.Quotas/ClearOverride", &[Role::Sre]),
    ("/switchboard.v1.Quotas/ReloadConfig", &[Role::Sre]),
    (
        "/switchboard.v1.Outbound/Pause",
        &[Role::Sre, Role::Service],
    ),
    (
        "/switchboard.v1.Outbound/Resume",
        &[Role::Sre, Role::Service],
    ),
    (
        "/switchboard.v1.Conversations/OverrideRoute",
        &[Role::Supervisor],
    ),
    (
        "/switchboard.v1.Conversations/PauseAutomation",
        &[Role::Supervisor, Role::Service],
    ),
    (
        "/switchboard.v1.Conversations/ResumeAutomation",
        &[Role::Supervisor, Role::Service],
    ),
    (
        "/switchboard.v1.Agents/Register",
        &[Role::Supervisor, Role::Service],
    ),
    (
        "/switchboard.v1.Agents/Transfer",
        &[Role::Supervisor, Role::Service],
    ),
];

/// The SHA-256 of `token`, hex: what `[[auth.tokens]] sha256` holds.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Who made a call (from its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub Arc<str>);

/// The configured tokens, by hash.
#[derive(Debug, Default)]
pub struct Keys {
    by_hash: HashMap<[u8; 32], (Principal, Vec<Role>)>,
}

impl Keys {
    /// From a validated config.
    pub fn new(config: &AuthConfig) -> Self {
        let by_hash = config
            .tokens
            .iter()
            .filter_map(|t| {
                let hash = parse_hex(&t.sha256)?;
                Some((
                    hash,
                    (Principal(t.principal.as_str().into()), t.roles.clone()),
                ))
            })
            .collect();
        Self { by_hash }
    }

    /// On when at least one token is configured.
    pub fn enabled(&self) -> bool {
        !self.by_hash.is_empty()
    }

    /// Whether the call to `path` may go ahead: `Ok(Some(principal))` with a valid token,
    /// `Ok(None)` for an open call (or auth off), else the status to answer with.
    pub fn check(
        &self,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Option<Principal>, Status> {
        if !self.enabled() {
            return Ok(None);
        }
        let required = PROTECTED.iter().find(|(p, _)| *p == path).map(|(_, r)| *r);
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(roles) = required else {
            // Open call: a valid token still names the caller.
            return Ok(presented
                .and_then(|t| self.lookup(t))
                .map(|(p, _)| p.clone()));
        };
        let method = path.rsplit('/').next().unwrap_or(path);
        let Some(token) = presented else {
            crate::telemetry::auth_failure("missing", path);
            return Err(Status::unauthenticated(format!(
                "{method} needs a bearer token (metadata `authorization: Bearer <token>`) with \
                 role {}",
                names(roles)
            )));
        };
        let Some((principal, held)) = self.lookup(token) else {
            crate::telemetry::auth_failure("unknown", path);
            return Err(Status::unauthenticated(format!(
                "{method}: the bearer token is not one of the configured tokens"
            )));
        };
        if !held.iter().any(|r| roles.contains(r)) {
            crate::telemetry::auth_failure("role", path);
            return Err(Status::permission_denied(format!(
                "{method} needs role {}; {} has {}",
                names(roles),
                principal.0,
                names(held)
            )));
        }
        Ok(Some(principal.clone()))
    }

    fn lookup(&self, token: &str) -> Option<&(Principal, Vec<Role>)> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash.get(&hash)
    }
}

fn names(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The principal of a call, when it presented a valid token.
pub fn principal<T>(request: &tonic::Request<T>) -> Option<&Principal> {
    request.extensions().get::<Principal>()
}

/// The audit log's actor: the authenticated principal, else what the request says (auth off).
pub fn actor<T>(request: &tonic::Request<T>, claimed: &str) -> String {
    match principal(request) {
        Some(p) => p.0.to_string(),
        None => claimed.to_owned(),
    }
}

/// The token check in front of every gRPC call (see [`crate::gate`]): the caller's
/// principal goes into the request's extensions.
impl crate::gate::Gate for Arc<Keys> {
    type Guard = ();

    fn admit<B>(&self, request: &mut http::Request<B>) -> Result<(), Status> {
        if let Some(principal) = self.check(request.uri().path(), request.headers())? {
            request.extensions_mut().insert(principal);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        let config = AuthConfig {
            tokens: vec![
                TokenConfig {
                    principal: "ana".into(),
                    sha256: hash_token("sre-secret"),
                    roles: vec![Role::Sre],
                },
                TokenConfig {
                    principal: "sam".into(),
                    sha256: hash_token("sup-secret").to_uppercase(),
                    roles: vec![Role::Supervisor],
                },
            ],
        };
        config.validate().unwrap();
        Keys::new(&config)
    }

    fn bearer(token: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn tokens_are_checked_against_the_roles_of_each_call() {
        let keys = keys();
        let set = "/switchboard.v1.Quotas/SetOverride";
        let e = keys.check(set, &http::HeaderMap::new()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("role sre"), "{}", e.message());
        let e = keys.check(set, &bearer("guess")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = keys.check(set, &bearer("sup-secret")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            e.message().contains("sam has supervisor"),
            "{}",
            e.message()
        );
        assert_eq!(
            keys.check(set, &bearer("sre-secret")).unwrap(),
            Some(Principal("ana".into()))
        );
        // Open calls need nothing, and a valid token still names its caller.
        let ingest = "/switchboard.v1.Inbound/Ingest";
        assert_eq!(keys.check(ingest, &http::HeaderMap::new()).unwrap(), None);
        assert_eq!(
            keys.check(ingest, &bearer("sup-secret")).unwrap(),
            Some(Principal("sam".into()))
        );
        // Off without tokens.
        assert_eq!(
            Keys::default().check(set, &http::HeaderMap::new()).unwrap(),
            None
        );
    }

    #[test]
    fn a_bad_token_entry_names_its_field() {
        let bad = |sha256: &str, roles: Vec<Role>| AuthConfig {
            tokens: vec![TokenConfig {
                principal: "x".into(),
                sha256: sha256.into(),
                roles,
            }],
        };
        let (field, problem) = bad("abc", vec![Role::Sre]).validate().unwrap_err();
        assert_eq!(field, "auth.tokens[0].sha256");
        assert!(problem.contains("switchboard auth hash"), "{problem}");
        let (field, _) = bad(&hash_token("t"), vec![]).validate().unwrap_err();
        assert_eq!(field, "auth.tokens[0].roles");
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
