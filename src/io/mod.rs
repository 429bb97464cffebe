//! The writer backends: the only code that writes commit-log bytes to disk.
//! A [`WriteJob`] is one group commit — positioned vectored writes into one or
//! two segment files, then (when asked) one fdatasync per file — and a backend
//! runs it to completion or returns the first error. Both backends pass the
//! same tests; `store.io_backend` picks one, `auto` probes io_uring first.

use crate::config::IoBackendKind;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[cfg(any(test, feature = "failpoints"))]
pub mod fault;
pub mod std_io;
pub mod uring;

/// An fdatasync's failure, carried inside the `io::Error` a job returns so
/// the writer tells it from a write's: a failed fdatasync may have dropped
/// pages the kernel will not report again (the log is poisoned), while a
/// write refused for space can be cut back and tried again later.
#[derive(Debug)]
pub struct SyncFailed(pub io::Error);

impl std::fmt::Display for SyncFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fdatasync failed: {}", self.0)
    }
}

impl std::error::Error for SyncFailed {}

/// Marks `e` as an fdatasync's failure.
pub fn sync_failed(e: io::Error) -> io::Error {
    io::Error::new(e.kind(), SyncFailed(e))
}

/// Whether a job's error came from an fdatasync.
pub fn is_sync_failure(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<SyncFailed>())
}

/// Whether an error means the file system is out of space (or the quota is
/// spent): the write can be undone and tried again once space is back.
pub fn is_out_of_space(e: &io::Error) -> bool {
    !is_sync_failure(e) && matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// A byte range of one of the job's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// Index into [`WriteJob::bufs`].
    pub buf: usize,
    /// Start within that buffer.
    pub start: usize,
    /// End (exclusive) within that buffer.
    pub end: usize,
}

/// A buffer a job writes from: the job's own, or one it shares (a slave's
/// replicated bytes, which its applier scans too).
#[derive(Debug)]
pub enum Buf {
    /// Owned by the job.
    Owned(Vec<u8>),
    /// Shared, immutable while anyone holds it.
    Shared(bytes::Bytes),
}

impl Default for Buf {
    fn default() -> Self {
        Buf::Owned(Vec::new())
    }
}

impl From<Vec<u8>> for Buf {
    fn from(buf: Vec<u8>) -> Self {
        Buf::Owned(buf)
    }
}

impl std::ops::Deref for Buf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Buf::Owned(buf) => buf,
            Buf::Shared(buf) => buf,
        }
    }
}

/// Contiguous bytes for one file, gathered from several buffers.
#[derive(Debug)]
pub struct FileWrite {
    /// The segment file.
    pub file: Arc<File>,
    /// Where in the file the first slice goes.
    pub offset: u64,
    /// The bytes, in order.
    pub slices: Vec<Slice>,
}

impl FileWrite {
    /// Bytes it writes.
    pub fn len(&self) -> u64 {
        self.slices.iter().map(|s| (s.end - s.start) as u64).sum()
    }

    /// Whether it writes nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One group commit's I/O.
#[derive(Debug, Default)]
pub struct WriteJob {
    /// Owned buffers the slices point into; they live until the job is done,
    /// which is what lets the kernel read them asynchronously.
    pub bufs: Vec<Buf>,
    /// Writes in log order.
    pub writes: Vec<FileWrite>,
    /// Files to fdatasync after every write has completed (empty: no sync).
    pub sync: Vec<Arc<File>>,
}

impl WriteJob {
    /// Total bytes the job writes.
    pub fn bytes(&self) -> u64 {
        self.writes.iter().map(FileWrite::len).sum()
    }

    fn slice(&self, slice: Slice) -> &[u8] {
        self.bufs.get(slice.buf).and_then(|b| b.get(slice.start..slice.end)).unwrap_or(&[])
    }
}

/// Counters every backend keeps, read by benches and tests (group commit
/// shows up as records per fdatasync).
#[derive(Debug, Default)]
pub struct IoStats {
    /// Jobs run.
    pub jobs: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
    /// fdatasync calls completed.
    pub fdatasyncs: AtomicU64,
    /// Jobs written on the caller's thread ([`IoBackend::write_inline`]).
    pub inline_jobs: AtomicU64,
}

impl IoStats {
    fn record(&self, job: &WriteJob) {
        self.jobs.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(job.bytes(), Ordering::Relaxed);
        self.fdatasyncs.fetch_add(job.sync.len() as u64, Ordering::Relaxed);
    }
}

/// The backend chosen at start.
pub enum IoBackend {
    /// io_uring, completions awaited on an eventfd through the runtime.
    Uring(Box<uring::UringIo>),
    /// `pwritev` + `fdatasync` on a blocking thread.
    Std(std_io::StdIo),
    /// A backend that fails on command (tests and the failpoints feature).
    #[cfg(any(test, feature = "failpoints"))]
    Fault(fault::FaultIo),
}

impl IoBackend {
    /// Builds the backend `kind` resolves to. Must run inside the runtime
    /// that will drive it (io_uring registers its eventfd there).
    pub fn open(kind: ResolvedBackend, stats: Arc<IoStats>) -> io::Result<IoBackend> {
        Ok(match kind {
            ResolvedBackend::Uring => IoBackend::Uring(Box::new(uring::UringIo::new(stats)?)),
            ResolvedBackend::Std => IoBackend::Std(std_io::StdIo::new(stats)),
        })
    }

    /// Runs a job to completion.
    pub async fn run(&mut self, job: WriteJob) -> io::Result<()> {
        match self {
            IoBackend::Uring(io) => io.run(job).await,
            IoBackend::Std(io) => io.run(job).await,
            #[cfg(any(test, feature = "failpoints"))]
            IoBackend::Fault(io) => io.run(job).await,
        }
    }

    /// Whether [`IoBackend::write_inline`] may take this backend's jobs (the
    /// fault backend's must go through its plan).
    pub fn writes_inline(&self) -> bool {
        match self {
            IoBackend::Uring(_) | IoBackend::Std(_) => true,
            #[cfg(any(test, feature = "failpoints"))]
            IoBackend::Fault(_) => false,
        }
    }

    /// Writes a job without fdatasync with `pwritev` on the caller's
    /// thread. For small groups: a buffered write of a few KiB into the
    /// page cache costs less than handing it to another thread and being
    /// woken with its completion (io_uring punts buffered ext4 writes to a
    /// worker thread; the std backend uses the blocking pool).
    pub fn write_inline(&self, job: &WriteJob) -> io::Result<()> {
        debug_assert!(job.sync.is_empty(), "an fdatasync never blocks the writer's thread");
        std_io::run_blocking(job)?;
        let stats = self.stats();
        stats.record(job);
        stats.inline_jobs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How the writer's syncer thread fdatasyncs, reporting into the same
    /// counters: a plain `fdatasync` per file for both real backends (the
    /// syncer's thread exists to block in it), the plan for the fault one.
    pub fn sync_files(&self) -> SyncFiles {
        match self {
            IoBackend::Uring(_) | IoBackend::Std(_) => plain_sync(self.stats()),
            #[cfg(any(test, feature = "failpoints"))]
            IoBackend::Fault(io) => io.sync_files(),
        }
    }

    /// The counters it reports into.
    pub fn stats(&self) -> Arc<IoStats> {
        match self {
            IoBackend::Uring(io) => io.stats(),
            IoBackend::Std(io) => io.stats(),
            #[cfg(any(test, feature = "failpoints"))]
            IoBackend::Fault(io) => io.stats(),
        }
    }

    /// The backend's name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            IoBackend::Uring(_) => "uring",
            IoBackend::Std(_) => "std",
            #[cfg(any(test, feature = "failpoints"))]
            IoBackend::Fault(_) => "fault",
        }
    }
}

/// fdatasyncs one round's files, on the thread that calls it.
pub type SyncFiles = Box<dyn FnMut(&[Arc<File>]) -> io::Result<()> + Send>;

/// `fdatasync` per file, failures marked as a sync's ([`sync_failed`]).
pub(crate) fn plain_sync(stats: Arc<IoStats>) -> SyncFiles {
    Box::new(move |files| {
        for file in files {
            file.sync_data().map_err(sync_failed)?;
        }
        stats.fdatasyncs.fetch_add(files.len() as u64, Ordering::Relaxed);
        Ok(())
    })
}

/// A backend choice after probing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedBackend {
    /// io_uring.
    Uring,
    /// pwritev + fdatasync.
    Std,
}

/// Resolves `auto` by probing io_uring (a ring and a NOP round trip).
/// `uring` fails if the probe fails; `std` never probes.
pub fn resolve(kind: IoBackendKind) -> io::Result<(ResolvedBackend, Option<String>)> {
    match kind {
        IoBackendKind::Std => Ok((ResolvedBackend::Std, None)),
        IoBackendKind::Uring => uring::probe().map(|()| (ResolvedBackend::Uring, None)),
        IoBackendKind::Auto => match uring::probe() {
            Ok(()) => Ok((ResolvedBackend::Uring, None)),
            Err(e) => {
                Ok((ResolvedBackend::Std, Some(format!("io_uring unavailable ({e}); using pwritev + fdatasync"))))
            }
        },
    }
}

/// Writes `iov` at `offset` fully, retrying partial writes. Shared by the std
/// backend and by tests.
pub(crate) fn pwritev_all(file: &File, mut offset: u64, mut iov: &mut [io::IoSlice<'_>]) -> io::Result<()> {
    // NOTE: IOV_MAX on Linux is 1024; larger vectors fail with EINVAL.
    const IOV_MAX: usize = 1024;
    while !iov.is_empty() {
        let count = iov.len().min(IOV_MAX);
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset overflows off_t"))?;
        // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix, the
        // pointer and count describe `count` live slices, and the fd is open.
        let written =
            unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr().cast::<libc::iovec>(), count as libc::c_int, off) };
        if written < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if written == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "pwritev wrote nothing"));
        }
        offset += written as u64;
        io::IoSlice::advance_slices(&mut iov, written as usize);
    }
    Ok(())
}
