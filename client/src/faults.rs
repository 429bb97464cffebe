//! Latency fault tolerance (RocketMQ's `MQFaultStrategy`, on by default
//! here): a broker that failed a send, or answered slowly, is avoided for a
//! while when picking the next round-robin queue. A failure isolates it for
//! 10 s; a slow answer for as long as the table below says.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Answer times (ms) and how long each isolates a broker (ms), as
/// RocketMQ's `latencyMax` / `notAvailableDuration`.
const LATENCY_MS: [u64; 7] = [50, 100, 550, 1800, 3000, 5000, 15000];
const ISOLATE_MS: [u64; 7] = [0, 0, 2000, 5000, 6000, 10000, 30000];

/// How long a failed broker is avoided.
pub const FAILURE_ISOLATION: Duration = Duration::from_secs(10);

/// Brokers to avoid, by address, until when.
#[derive(Debug, Default)]
pub struct Faults {
    until: Mutex<HashMap<String, Instant>>,
}

impl Faults {
    /// A send to `addr` took `took`.
    pub fn answered(&self, addr: &str, took: Duration) {
        let ms = took.as_millis() as u64;
        let isolate = LATENCY_MS.iter().zip(ISOLATE_MS).rev().find(|(limit, _)| ms >= **limit).map_or(0, |(_, i)| i);
        let mut until = self.until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if isolate == 0 {
            until.remove(addr);
        } else {
            until.insert(addr.to_string(), Instant::now() + Duration::from_millis(isolate));
        }
    }

    /// A send to `addr` failed (the broker is down or unreachable).
    pub fn failed(&self, addr: &str) {
        let mut until = self.until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        until.insert(addr.to_string(), Instant::now() + FAILURE_ISOLATION);
    }

    /// Whether `addr` is being avoided now.
    pub fn avoided(&self, addr: &str) -> bool {
        let until = self.until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        until.get(addr).is_some_and(|t| *t > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_and_failed_brokers_are_avoided_for_a_while() {
        let faults = Faults::default();
        faults.answered("a", Duration::from_millis(20));
        assert!(!faults.avoided("a"));
        faults.answered("a", Duration::from_millis(600));
        assert!(faults.avoided("a"), "slower than 550 ms: 2 s off");
        faults.answered("a", Duration::from_millis(5));
        assert!(!faults.avoided("a"), "a quick answer lifts it");
        faults.failed("b");
        assert!(faults.avoided("b"));
    }
}
