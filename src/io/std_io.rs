//! The portable backend: `pwritev` + `fdatasync` on tokio's blocking pool, for
//! hosts where io_uring is disabled. Blocking calls never run on an actor
//! thread; the writer awaits the blocking task.

use super::{pwritev_all, IoStats, WriteJob};
use std::io;
use std::sync::Arc;

/// pwritev + fdatasync on a blocking thread.
pub struct StdIo {
    stats: Arc<IoStats>,
}

impl StdIo {
    /// A backend that reports into `stats`.
    pub fn new(stats: Arc<IoStats>) -> Self {
        Self { stats }
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<IoStats> {
        self.stats.clone()
    }

    /// Runs the job on the blocking pool and awaits it.
    pub async fn run(&mut self, job: WriteJob) -> io::Result<()> {
        let stats = self.stats.clone();
        tokio::task::spawn_blocking(move || {
            run_blocking(&job)?;
            stats.record(&job);
            Ok(())
        })
        .await
        .map_err(|e| io::Error::other(format!("writer task failed: {e}")))?
    }
}

/// The blocking body: every write in order, then one fdatasync per file.
pub(crate) fn run_blocking(job: &WriteJob) -> io::Result<()> {
    for write in &job.writes {
        let mut iov: Vec<io::IoSlice<'_>> = write.slices.iter().map(|s| io::IoSlice::new(job.slice(*s))).collect();
        pwritev_all(&write.file, write.offset, &mut iov)?;
    }
    for file in &job.sync {
        // fdatasync, not fsync: segments are written in place at full size,
        // so no metadata the data depends on changes.
        file.sync_data().map_err(super::sync_failed)?;
    }
    Ok(())
}
