//! A histogram of atomics: recording is one relaxed add per bucket hit and
//! two for sum and count, with no lock, so the send path and the writer can
//! afford it per message; a scrape reads it cumulatively.

use std::sync::atomic::{AtomicU64, Ordering};

/// Fixed buckets (upper bounds, rising), counts, sum and count.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// A histogram over `bounds` (one more bucket, +Inf, is added).
    pub fn new(bounds: &'static [u64]) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self { bounds, counts, sum: AtomicU64::new(0), count: AtomicU64::new(0) }
    }

    /// Records one value.
    pub fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|b| *b < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Sum, count and buckets `(upper bound, values in it and above the
    /// bound before)`, the last bound `f64::MAX` (+Inf), as the Prometheus
    /// client's encoder wants them (it makes them cumulative).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, n) in self.counts.iter().enumerate() {
            let bound = self.bounds.get(i).map_or(f64::MAX, |b| *b as f64);
            buckets.push((bound, n.load(Ordering::Relaxed)));
        }
        (self.sum.load(Ordering::Relaxed) as f64, self.count.load(Ordering::Relaxed), buckets)
    }
}

/// Message sizes in bytes (RocketMQ's `rocketmq_message_size` buckets).
pub const MESSAGE_BYTES: &[u64] = &[1 << 10, 4 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20];

/// fdatasync times in microseconds.
pub const SYNC_US: &[u64] = &[50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 50_000, 100_000, 1_000_000];

/// Request latencies in milliseconds (RocketMQ's `rocketmq_rpc_latency`
/// buckets).
pub const RPC_MS: &[u64] = &[1, 3, 5, 10, 30, 100, 1_000, 3_000];

/// Records per group commit.
pub const GROUP_RECORDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_their_bucket_and_the_last_is_inf() {
        let h = Histogram::new(&[10, 100]);
        for v in [1, 10, 11, 100, 101, 5000] {
            h.observe(v);
        }
        let (sum, count, buckets) = h.snapshot();
        assert_eq!((sum, count), (5223.0, 6));
        assert_eq!(buckets, vec![(10.0, 2), (100.0, 2), (f64::MAX, 2)]);
    }
}
