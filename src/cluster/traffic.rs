//! Messages in and out per second, as registrations and `broker status`
//! report them: stored records counted by the writer, delivered messages
//! counted by pulls, sampled every second; the last 15 minutes of samples
//! (with fdatasyncs per second) are kept for the console's overview.

use crate::actors::writer::WriterStats;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The broker's message rates.
#[derive(Debug, Default)]
pub struct Traffic {
    delivered: AtomicU64,
    /// (in, out) per second, smoothed.
    rates: Mutex<(f64, f64)>,
    /// One sample a second, oldest first, at most [`HISTORY`].
    history: Mutex<std::collections::VecDeque<Sample>>,
}

/// Samples kept: 15 minutes.
pub const HISTORY: usize = 900;

/// One second of traffic.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// Messages stored per second.
    pub msgs_in: f64,
    /// Messages delivered per second.
    pub msgs_out: f64,
    /// fdatasyncs per second.
    pub fsyncs: f64,
}

impl Traffic {
    /// `n` messages went out to consumers.
    pub fn delivered(&self, n: usize) {
        self.delivered.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Messages stored and delivered per second, lately.
    pub fn rates(&self) -> (f64, f64) {
        *self.rates.lock()
    }

    /// The last 15 minutes, a sample a second, oldest first.
    pub fn history(&self) -> Vec<Sample> {
        self.history.lock().iter().copied().collect()
    }

    /// Samples the counters every second, for as long as the runtime runs.
    pub async fn sample(self: Arc<Self>, writer: Arc<WriterStats>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let read = |w: &WriterStats, t: &Traffic| {
            let syncs = w.fsync_us.snapshot().1;
            (Instant::now(), w.records.load(Ordering::Relaxed), t.delivered.load(Ordering::Relaxed), syncs)
        };
        let mut last = read(&writer, &self);
        loop {
            tick.tick().await;
            let now = read(&writer, &self);
            let secs = now.0.duration_since(last.0).as_secs_f64().max(1e-3);
            let per_s = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
            let fresh = (per_s(now.1, last.1), per_s(now.2, last.2));
            {
                let mut rates = self.rates.lock();
                // Half of it the last second: steady enough to read, quick to follow.
                *rates = ((rates.0 + fresh.0) / 2.0, (rates.1 + fresh.1) / 2.0);
            }
            let sample = Sample {
                at_ms: brook_proto::time::now_ms(),
                msgs_in: fresh.0,
                msgs_out: fresh.1,
                fsyncs: per_s(now.3, last.3),
            };
            let mut history = self.history.lock();
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(sample);
            last = now;
        }
    }
}
