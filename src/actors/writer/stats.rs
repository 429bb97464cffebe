//! The writer's counters and state (writable, disk full, poisoned), shared
//! with the broker's status, its metrics, benches and tests.

use crate::metrics::histogram::Histogram;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Group-commit counters and the writer's state, shared with the broker's
/// status and metrics, benches and tests.
#[derive(Debug)]
pub struct WriterStats {
    /// Groups written.
    pub groups: AtomicU64,
    /// Records written.
    pub records: AtomicU64,
    /// Append requests answered.
    pub appends: AtomicU64,
    /// One past the last byte written to the log.
    pub write_pos: AtomicU64,
    /// Since when (ms since the epoch) the disk has been full and writes
    /// refused; 0: it is not.
    pub disk_full_since_ms: AtomicI64,
    /// Why the writer is poisoned (refusing every write until a restart),
    /// if it is.
    pub poisoned: parking_lot::Mutex<Option<String>>,
    /// One past the last byte an fdatasync covered.
    pub synced_pos: AtomicU64,
    /// Appends (and sync requests) waiting for the writer.
    pub queued: AtomicU64,
    /// Produce requests handed to the queues' thread and not yet taken in
    /// there: whether anything is about to reach the writer.
    pub arriving: AtomicU64,
    /// fdatasync times, µs.
    pub fsync_us: Histogram,
    /// Records per group commit.
    pub group_records: Histogram,
    /// Bumped whenever `write_pos` or `synced_pos` moves: replication
    /// waits on it.
    pub progress: tokio::sync::watch::Sender<u64>,
}

impl Default for WriterStats {
    fn default() -> Self {
        Self {
            groups: AtomicU64::new(0),
            records: AtomicU64::new(0),
            appends: AtomicU64::new(0),
            write_pos: AtomicU64::new(0),
            disk_full_since_ms: AtomicI64::new(0),
            poisoned: parking_lot::Mutex::new(None),
            synced_pos: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            arriving: AtomicU64::new(0),
            fsync_us: Histogram::new(crate::metrics::histogram::SYNC_US),
            group_records: Histogram::new(crate::metrics::histogram::GROUP_RECORDS),
            progress: tokio::sync::watch::channel(0).0,
        }
    }
}

impl WriterStats {
    /// Since when the disk has been full, if it is.
    pub fn disk_full_since(&self) -> Option<i64> {
        Some(self.disk_full_since_ms.load(Ordering::Relaxed)).filter(|ms| *ms != 0)
    }

    /// Tells whoever waits on `progress` that the log moved.
    pub fn moved(&self) {
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// One past the last byte written to the log.
    pub fn write_pos(&self) -> u64 {
        self.write_pos.load(Ordering::Relaxed)
    }

    /// Why every write is refused until a restart, if one failed.
    pub fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().clone()
    }
}
