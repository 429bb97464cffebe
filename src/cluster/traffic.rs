//! Messages in and out per second, as registrations and `broker status`
//! report them: stored records counted by the writer, delivered messages
//! counted by pulls, sampled every second.

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

    /// Samples the counters every second, for as long as the runtime runs.
    pub async fn sample(self: Arc<Self>, writer: Arc<WriterStats>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last = (Instant::now(), writer.records.load(Ordering::Relaxed), self.delivered.load(Ordering::Relaxed));
        loop {
            tick.tick().await;
            let now = (Instant::now(), writer.records.load(Ordering::Relaxed), self.delivered.load(Ordering::Relaxed));
            let secs = now.0.duration_since(last.0).as_secs_f64().max(1e-3);
            let fresh = ((now.1 - last.1) as f64 / secs, (now.2 - last.2) as f64 / secs);
            let mut rates = self.rates.lock();
            // Half of it the last second: steady enough to read, quick to follow.
            *rates = ((rates.0 + fresh.0) / 2.0, (rates.1 + fresh.1) / 2.0);
            last = now;
        }
    }
}
