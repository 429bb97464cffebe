//! The writer while the disk is full. A group refused for space leaves the
//! log as it was (see `commitlog::GroupError`); from then on appends are
//! refused at once with `DiskFull` — no write is tried per send — until the
//! file system holding the log has `store.disk_resume_free_bytes` free
//! again (retention frees space meanwhile), checked every second. One log
//! line on the way in and one on the way out.

use super::{Pending, WriterActor};
use crate::clock::now_ms;
use crate::error::Error;
use crate::store::retention::free_bytes;
use actix::prelude::*;
use std::path::Path;
use std::sync::atomic::Ordering;

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

impl super::WriterActor {
    /// The disk is full: appends are refused until it has room again.
    pub(super) fn enter_full(&mut self, e: &std::io::Error) -> DiskFull {
        let full = *self.full.get_or_insert_with(|| {
            let full = DiskFull::now();
            slog::error!(self.logger, "disk full: refusing writes until space is freed";
                "error" => %e, "resume_free_bytes" => self.config.resume_free_bytes);
            self.stats.disk_full_since_ms.store(full.since_ms, Ordering::Relaxed);
            full
        });
        full
    }

    /// Leaves the full state once the disk has room again.
    pub(super) fn check_space(&mut self) {
        if self.full.is_none() {
            return;
        }
        if let Some(free) = has_room(self.segments.dir(), self.config.resume_free_bytes) {
            slog::info!(self.logger, "disk has room again: writes accepted"; "free_bytes" => free);
            self.full = None;
            self.stats.disk_full_since_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Refuses every append waiting (the disk is full); `Sync` markers stay.
    pub(super) fn refuse_appends(&mut self, full: DiskFull) {
        let pending = std::mem::take(&mut self.pending);
        for item in pending {
            match item {
                Pending::Append(a) => (a.done)(Err(full.error())),
                marker => self.pending.push_back(marker),
            }
        }
    }
}

/// Looks whether the full disk has room again (sent to itself).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct CheckSpace;

impl Handler<CheckSpace> for WriterActor {
    type Result = ();

    fn handle(&mut self, _: CheckSpace, _: &mut Context<Self>) {
        self.check_space();
    }
}
