//! The writer while the disk is full. A group refused for space leaves the
//! log as it was (see `commitlog::GroupError`); from then on appends are
//! refused at once with `DiskFull` — no write is tried per send — until the
//! file system holding the log has `store.disk_resume_free_bytes` free
//! again (retention frees space meanwhile), checked every second. One log
//! line on the way in and one on the way out.

use crate::clock::now_ms;
use crate::error::Error;
use crate::store::retention::free_bytes;
use std::path::Path;

/// When the disk filled up, and how much must be free to write again.
#[derive(Debug, Clone, Copy)]
pub(super) struct DiskFull {
    pub since_ms: i64,
}

impl DiskFull {
    /// Entered now.
    pub fn now() -> Self {
        Self { since_ms: now_ms() }
    }

    /// The error appends get meanwhile.
    pub fn error(&self) -> Error {
        Error::DiskFull { since_ms: self.since_ms }
    }
}

/// Whether the file system holding `dir` has `needed` bytes free again
/// (a failed look counts as not yet).
pub(super) fn has_room(dir: &Path, needed: u64) -> Option<u64> {
    free_bytes(dir).ok().filter(|free| *free >= needed)
}
