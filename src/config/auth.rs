//! `[auth]`: bearer tokens (as their SHA-256) and the roles they carry (see `crate::auth` for
//! the check).
use serde::Deserialize;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A trusted service acting for people: pauses automation, provisions agents.
    Service,
    /// Contact-center supervisors: conversation overrides, agent administration.
    Supervisor,
    /// Site reliability: quota overrides, shadow mode, config reload.
    Sre,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Service => "service",
            Role::Supervisor => "supervisor",
            Role::Sre => "sre",
        }
    }
}

/// `[auth]` in the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub tokens: Vec<TokenConfig>,
}

/// One token, as `[[auth.tokens]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (the audit log's actor).
    pub principal: String,
    /// The token's SHA-256, hex (`switchboard auth hash` prints it).
    pub sha256: String,
    pub roles: Vec<Role>,
}

impl AuthConfig {
    /// Checks the tokens; the error names the field and what to do.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let mut seen = std::collections::HashSet::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let at = |f: &str| format!("auth.tokens[{i}].{f}");
            if t.principal.trim().is_empty() {
                return Err((at("principal"), "is empty; name who holds the token".into()));
            }
            if parse_hex(&t.sha256).is_none() {
                return Err((
                    at("sha256"),
                    "is not a SHA-256 in hex (64 characters); print one with `switchboard auth \
                     hash` (the token on stdin)"
                        .into(),
                ));
            }
            if !seen.insert(t.sha256.to_ascii_lowercase()) {
                return Err((at("sha256"), "is the same as an earlier token's".into()));
            }
            if t.roles.is_empty() {
                return Err((
                    at("roles"),
                    "is empty; give service, supervisor or sre".into(),
                ));
            }
        }
        Ok(())
    }
}

pub fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}
