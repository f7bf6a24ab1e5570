//! Who a customer is beyond the phone number, and what is known about them.
//!
//! - **Identities**: a phone number (E.164, see `identity::normalize`), an e-mail address, or
//!   a channel's visitor id (web chat). Any of them finds the customer's one conversation.
//! - **Profile**: name, e-mail and language, each with where it came from and when. The most
//!   recent value wins, compared to the millisecond; a value from another source that
//!   disagrees is kept as a [`Conflict`] for someone to review (the CRM integration guides
//!   ask for that), never silently dropped.
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::model::{ConversationId, CustomerNumber};

/// Longest e-mail address (RFC 5321's path limit) and visitor id accepted.
const MAX_EMAIL_BYTES: usize = 254;
const MAX_VISITOR_BYTES: usize = 128;
/// Longest profile value (a name, a language code) accepted.
pub const MAX_ATTRIBUTE_BYTES: usize = 256;

/// One way of knowing a customer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    Phone(CustomerNumber),
    /// Lower-cased, trimmed.
    Email(Arc<str>),
    /// A channel's visitor id (web chat), as the channel gives it.
    Visitor(Arc<str>),
}

impl Identity {
    /// An e-mail address: trimmed and lower-cased; one `@` with text on both sides and a dot
    /// in the domain. The error says what is wrong.
    pub fn email(raw: &str) -> Result<Self, String> {
        let email = raw.trim().to_lowercase();
        if email.len() > MAX_EMAIL_BYTES {
            return Err(format!("is longer than {MAX_EMAIL_BYTES} bytes"));
        }
        let valid = email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !email.chars().any(char::is_whitespace)
        });
        if !valid {
            return Err(format!(
                "{raw:?} is not an e-mail address; send one like ana@example.com"
            ));
        }
        Ok(Identity::Email(email.into()))
    }

    /// A visitor id: non-empty, at most 128 bytes, no control characters.
    pub fn visitor(raw: &str) -> Result<Self, String> {
        let id = raw.trim();
        if id.is_empty() {
            return Err("is empty".into());
        }
        if id.len() > MAX_VISITOR_BYTES || id.chars().any(char::is_control) {
            return Err(format!(
                "must be at most {MAX_VISITOR_BYTES} bytes without control characters"
            ));
        }
        Ok(Identity::Visitor(id.into()))
    }

    /// Rebuilds a saved identity (`kind` and `value` as [`Identity::kind`] and
    /// [`Identity::value`] gave them); None if it does not check.
    pub fn restore(kind: &str, value: &str) -> Option<Self> {
        match kind {
            "phone" => crate::core::identity::looks_e164(value)
                .then(|| Identity::Phone(CustomerNumber::from_valid_e164(value))),
            "email" => Identity::email(value).ok(),
            "visitor" => Identity::visitor(value).ok(),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Identity::Phone(_) => "phone",
            Identity::Email(_) => "email",
            Identity::Visitor(_) => "visitor",
        }
    }

    /// The identity as the API shows it.
    pub fn value(&self) -> &str {
        match self {
            Identity::Phone(p) => p.as_e164(),
            Identity::Email(e) | Identity::Visitor(e) => e,
        }
    }

    /// For logs and the audit: the kind and the last characters only.
    pub fn masked(&self) -> String {
        let v = self.value();
        let tail: String = v
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{}:…{tail}", self.kind())
    }
}

/// A profile attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Field {
    Name,
    Email,
    Language,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Email => "email",
            Field::Language => "language",
        }
    }
}

/// A profile value, where it came from and when it was true.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attr {
    pub value: Arc<str>,
    /// `whatsapp` (the webhook's `contacts[].profile.name`), or what the API caller said
    /// ("crm", "erp").
    pub source: Arc<str>,
    pub at: Timestamp,
}

/// What is known about a customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub name: Option<Attr>,
    pub email: Option<Attr>,
    pub language: Option<Attr>,
}

/// Two sources disagreeing on a customer's attribute: `kept` is the value in the profile (the
/// most recent), `other` the one it was compared with.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub conversation: ConversationId,
    pub field: Field,
    pub kept: Attr,
    pub other: Attr,
}

impl Profile {
    fn slot(&mut self, field: Field) -> &mut Option<Attr> {
        match field {
            Field::Name => &mut self.name,
            Field::Email => &mut self.email,
            Field::Language => &mut self.language,
        }
    }

    pub fn get(&self, field: Field) -> Option<&Attr> {
        match field {
            Field::Name => self.name.as_ref(),
            Field::Email => self.email.as_ref(),
            Field::Language => self.language.as_ref(),
        }
    }

    /// Takes `new` for `field` if it is at least as recent as the value held (a later
    /// millisecond wins; on the same millisecond the newcomer does). Returns the conflict when
    /// the two values differ and came from different sources; the same source changing its
    /// value is an update, not a conflict.
    pub fn set(&mut self, field: Field, new: Attr) -> Option<(Attr, Attr)> {
        let slot = self.slot(field);
        let Some(old) = slot.as_ref() else {
            *slot = Some(new);
            return None;
        };
        if old.value == new.value {
            if new.at > old.at {
                *slot = Some(new);
            }
            return None;
        }
        let conflict = old.source != new.source;
        if new.at >= old.at {
            let old = slot.replace(new.clone()).expect("held");
            conflict.then_some((new, old))
        } else {
            conflict.then(|| (old.clone(), new))
        }
    }

    /// Merges `other` in (a link): per field, the most recent wins; disagreements between
    /// sources are returned as conflicts (kept, other).
    pub fn merge(&mut self, other: Profile) -> Vec<(Field, Attr, Attr)> {
        let mut conflicts = Vec::new();
        for (field, attr) in [
            (Field::Name, other.name),
            (Field::Email, other.email),
            (Field::Language, other.language),
        ] {
            if let Some(attr) = attr
                && let Some((kept, lost)) = self.set(field, attr)
            {
                conflicts.push((field, kept, lost));
            }
        }
        conflicts
    }

    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.email.is_none() && self.language.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(value: &str, source: &str, at: u64) -> Attr {
        Attr {
            value: value.into(),
            source: source.into(),
            at: Timestamp(at),
        }
    }

    #[test]
    fn identities_are_normalised_or_refused_with_the_reason() {
        assert_eq!(
            Identity::email(" Ana.Perez@Example.COM ").unwrap(),
            Identity::Email("ana.perez@example.com".into())
        );
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "a b@x.es",
            "a@b@c.es",
        ] {
            let e = Identity::email(bad).unwrap_err();
            assert!(e.contains("e-mail") || e.contains("bytes"), "{bad}: {e}");
        }
        assert_eq!(
            Identity::visitor(" v-81f2 ").unwrap(),
            Identity::Visitor("v-81f2".into())
        );
        assert!(Identity::visitor("  ").is_err());
        assert!(Identity::visitor(&"x".repeat(129)).is_err());
        assert_eq!(
            Identity::email("ana.perez@example.com").unwrap().masked(),
            "email:….com"
        );
    }

    #[test]
    fn the_most_recent_value_wins_to_the_millisecond_and_disagreement_is_kept() {
        let mut p = Profile::default();
        assert_eq!(p.set(Field::Name, attr("María", "whatsapp", 1_000)), None);
        // The CRM's value one millisecond later wins; the WhatsApp one is the conflict.
        let (kept, other) = p
            .set(Field::Name, attr("María José", "crm", 1_001))
            .unwrap();
        assert_eq!((&*kept.value, &*other.value), ("María José", "María"));
        assert_eq!(p.name.as_ref().unwrap().value.as_ref(), "María José");
        // An older value arriving late does not win, but the disagreement is still kept.
        let (kept, other) = p.set(Field::Name, attr("Mery", "erp", 1_000)).unwrap();
        assert_eq!((&*kept.value, &*other.value), ("María José", "Mery"));
        assert_eq!(p.name.as_ref().unwrap().value.as_ref(), "María José");
        // The same source changing its value is an update, not a conflict.
        assert_eq!(p.set(Field::Name, attr("María J.", "crm", 2_000)), None);
        assert_eq!(p.name.as_ref().unwrap().value.as_ref(), "María J.");
        // The same value from another source agrees.
        assert_eq!(
            p.set(Field::Name, attr("María J.", "whatsapp", 3_000)),
            None
        );
    }
}
