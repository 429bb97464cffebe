//! The consumer-group keys (`[groups]`): defaults and checks.

use serde::{Deserialize, Serialize};

/// Consumer-group settings (`[groups]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupsConfig {
    /// A member that has not sent a heartbeat for this long is dropped and
    /// its queues reassigned, unless its heartbeat asks for another session
    /// timeout. Default: 120,000 ms (RocketMQ's channel expiry).
    pub session_timeout_ms: u64,
    /// Lifetime of an orderly-consumption queue lock unless renewed.
    /// Default: 60,000 ms (RocketMQ's lockMaxLiveTime).
    pub lock_ttl_ms: u64,
    /// How often committed offsets are written to disk (and always at
    /// shutdown). A crash re-delivers at most what was committed in this
    /// window. Default: 5,000 ms.
    pub offset_flush_interval_ms: u64,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        Self { session_timeout_ms: 120_000, lock_ttl_ms: 60_000, offset_flush_interval_ms: 5_000 }
    }
}

impl GroupsConfig {
    /// `[groups]`'s part of [`Config::sanitize`]: every period at least 10 ms.
    pub(super) fn sanitize(&mut self, warnings: &mut Vec<String>) {
        for (name, value) in [
            ("groups.session_timeout_ms", &mut self.session_timeout_ms),
            ("groups.lock_ttl_ms", &mut self.lock_ttl_ms),
            ("groups.offset_flush_interval_ms", &mut self.offset_flush_interval_ms),
        ] {
            if *value < 10 {
                warnings.push(format!("{name} = {value} clamped to 10"));
                *value = 10;
            }
        }
    }
}
