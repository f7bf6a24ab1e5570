//! `[egress]`: `switchboard egress`, which sends the dispatch topic through the Cloud API
//! (see `crate::egress`; the endpoint, token and retries are `[cloud_api]`).
use serde::Deserialize;

/// `[egress]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressConfig {
    /// The egress's own consumer group (not the replicas').
    pub group_id: String,
    /// Dispatches of one partition read and not yet committed, at most: the bound on what a
    /// crash of the egress can send twice (the platform has no idempotency key).
    pub max_in_flight: usize,
    /// How often finished offsets are committed.
    pub commit_interval_ms: u64,
    /// On taking a partition, how many of the outcomes topic's last records of that partition
    /// are read to skip dispatches already answered before a crash; 0: none.
    pub dedup_lookback: i64,
    /// How long a revoke or a shutdown waits for the sends in flight.
    pub drain_ms: u64,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            group_id: "switchboard-egress".into(),
            max_in_flight: 128,
            commit_interval_ms: 500,
            dedup_lookback: 1_000,
            drain_ms: 15_000,
        }
    }
}

impl EgressConfig {
    /// Checks the section; the error names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |f: &str, p: &str| Err((format!("egress.{f}"), p.to_owned()));
        if self.group_id.trim().is_empty() {
            return bad("group_id", "is empty; name the egress's consumer group");
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", "must be at least 1");
        }
        if self.commit_interval_ms == 0 || self.drain_ms == 0 {
            return bad(
                "commit_interval_ms",
                "and drain_ms must be above 0 (milliseconds)",
            );
        }
        if self.dedup_lookback < 0 {
            return bad("dedup_lookback", "must be 0 or more (records)");
        }
        Ok(())
    }
}
