//! The checkpoint file and the data-dir lock.
//!
//! The checkpoint says how far the consume queues are durable
//! (`cq_durable_offset`: every record below it has its entry on disk) and
//! whether the last stop was clean. Recovery after an unclean stop rescans the
//! log only from that offset; after a clean stop (`clean`, with `log_end`) it
//! does not scan at all. It is replaced atomically: written to a temporary
//! file, synced, renamed, and the directory synced.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// What the checkpoint records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every record below this commit-log offset has its consume-queue entry
    /// durably stored.
    pub cq_durable_offset: u64,
    /// End of the log at a clean stop (meaningful only when `clean`).
    pub log_end: u64,
    /// Store time of the last record at that point.
    pub last_store_ts: i64,
    /// True only when written by an orderly shutdown; a start writes false
    /// first, so a crash is always noticed.
    pub clean: bool,
}

impl Checkpoint {
    /// Reads the checkpoint at `path`; a missing file reads as "nothing is
    /// durable, unclean".
    pub fn load(path: &Path) -> io::Result<Option<Checkpoint>> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("checkpoint: {e}"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Atomically replaces the checkpoint at `path`.
    pub fn store(&self, path: &Path) -> io::Result<()> {
        super::write_atomically(path, &serde_json::to_vec(self).map_err(io::Error::other)?)
    }
}

/// An exclusive lock on a data dir, held for the life of the process so that
/// two brokers never share one store.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock, failing at once if another process holds it.
    pub fn acquire(dir: &Path) -> io::Result<DirLock> {
        let path = dir.join("lock");
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(err.kind(), format!("{} is locked by another broker ({err})", path.display())));
        }
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        Ok(DirLock { _file: file, path })
    }

    /// Where the lock lives.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Makes everything written to the filesystem holding `dir` durable with
/// one `syncfs`: cheaper than an fsync per consume-queue file when tens of
/// thousands of queues are dirty.
pub fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let file = File::open(dir)?;
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_missing_reads_as_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("checkpoint");
        assert_eq!(Checkpoint::load(&path).expect("load"), None);
        let cp = Checkpoint { cq_durable_offset: 10, log_end: 20, last_store_ts: 5, clean: true };
        cp.store(&path).expect("store");
        assert_eq!(Checkpoint::load(&path).expect("load"), Some(cp));
    }

    #[test]
    fn a_second_lock_on_the_same_dir_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DirLock::acquire(dir.path()).expect("first");
        assert!(DirLock::acquire(dir.path()).is_err());
        drop(first);
        DirLock::acquire(dir.path()).expect("after release");
    }
}
