//! A backend that fails on command, for tests of the poison rule (after a
//! failed write or fdatasync the writer fails that group and every later
//! one) and of a full disk (a write refused for space is cut back).

use super::std_io::StdIo;
use super::{IoStats, WriteJob};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// When the fault backend fails (by default: never).
#[derive(Debug)]
pub struct FaultPlan {
    /// Write jobs to let through before failing every later one.
    pub fail_after_jobs: AtomicU64,
    /// Write jobs run so far.
    pub jobs_seen: AtomicU64,
    /// Fail as a full disk does instead: each write stops half way with
    /// ENOSPC.
    pub out_of_space: AtomicBool,
    /// fdatasync rounds to let through before failing every later one.
    pub fail_after_syncs: AtomicU64,
    /// fdatasync rounds run so far.
    pub syncs_seen: AtomicU64,
    /// How long each fdatasync takes at least, ms (a slow disk: what
    /// arrives meanwhile waits for the next round).
    pub sync_delay_ms: AtomicU64,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self {
            fail_after_jobs: AtomicU64::new(u64::MAX),
            jobs_seen: AtomicU64::new(0),
            out_of_space: AtomicBool::new(false),
            fail_after_syncs: AtomicU64::new(u64::MAX),
            syncs_seen: AtomicU64::new(0),
            sync_delay_ms: AtomicU64::new(0),
        }
    }
}

/// The std backend, failing once `plan` says so.
pub struct FaultIo {
    inner: StdIo,
    plan: Arc<FaultPlan>,
}

impl FaultIo {
    /// Wraps a std backend with a plan.
    pub fn new(stats: Arc<IoStats>, plan: Arc<FaultPlan>) -> Self {
        Self { inner: StdIo::new(stats), plan }
    }

    /// fdatasyncs as the std backend does, failing the way a failed
    /// fdatasync does (EIO) once the plan says so.
    pub fn sync_files(&self) -> super::SyncFiles {
        let (plan, mut plain) = (self.plan.clone(), super::plain_sync(self.inner.stats()));
        Box::new(move |files| {
            let seen = plan.syncs_seen.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(plan.sync_delay_ms.load(Ordering::SeqCst)));
            if seen >= plan.fail_after_syncs.load(Ordering::SeqCst) {
                return Err(super::sync_failed(io::Error::from_raw_os_error(libc::EIO)));
            }
            plain(files)
        })
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<IoStats> {
        self.inner.stats()
    }

    /// Runs the job, or fails it the way a failed write does (the bytes
    /// were written — they sit in the file — but the call reports EIO), or,
    /// with `out_of_space`, the way a full disk does (half of each write
    /// lands, then ENOSPC).
    pub async fn run(&mut self, mut job: WriteJob) -> io::Result<()> {
        let seen = self.plan.jobs_seen.fetch_add(1, Ordering::SeqCst);
        if seen < self.plan.fail_after_jobs.load(Ordering::SeqCst) {
            return self.inner.run(job).await;
        }
        job.sync.clear();
        if self.plan.out_of_space.load(Ordering::SeqCst) {
            for write in &mut job.writes {
                let keep = write.slices.len().div_ceil(2);
                write.slices.truncate(keep);
                if let Some(last) = write.slices.last_mut() {
                    last.end = last.start + (last.end - last.start).div_ceil(2);
                }
            }
            self.inner.run(job).await?;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.inner.run(job).await?;
        Err(io::Error::from_raw_os_error(libc::EIO))
    }
}
