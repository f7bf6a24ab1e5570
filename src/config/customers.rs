//! What a tenant keeps about its customers beyond routing (`[tenants.duplicates]`): how
//! duplicate customers are suggested. Enforced by `core::duplicates`.
use serde::Deserialize;

use super::{ConfigError, invalid};

/// Suggesting customers whose names are alike as possible duplicates (never merged
/// automatically: `Customers.Link` does that).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DuplicatesConfig {
    pub enabled: bool,
    /// Normalised Levenshtein similarity of the folded names (lower-cased, accents removed),
    /// 0 < x ≤ 1, at which two customers are suggested.
    pub min_similarity: f64,
    /// Names compared when one is set: the most recent this many in each of its two blocks
    /// (see `core::duplicates`), which bounds the work per name and the index's memory.
    pub max_candidates: usize,
    /// Suggestions kept for review; past it the oldest are forgotten.
    pub max_suggestions: usize,
}

impl Default for DuplicatesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            min_similarity: 0.8,
            max_candidates: 32,
            max_suggestions: 10_000,
        }
    }
}

impl DuplicatesConfig {
    pub(super) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if !(self.min_similarity > 0.0 && self.min_similarity <= 1.0) {
            return Err(invalid(
                format!("{at}.duplicates.min_similarity"),
                format!(
                    "{} is not in (0, 1]; 0.8 suggests names one edit in five apart",
                    self.min_similarity
                ),
            ));
        }
        if self.max_candidates == 0 || self.max_candidates > 4_096 {
            return Err(invalid(
                format!("{at}.duplicates.max_candidates"),
                "must be 1 to 4096 (each name set compares with up to twice this many)",
            ));
        }
        if self.max_suggestions == 0 {
            return Err(invalid(
                format!("{at}.duplicates.max_suggestions"),
                "must be at least 1 (set enabled = false to turn suggestions off)",
            ));
        }
        Ok(())
    }
}
