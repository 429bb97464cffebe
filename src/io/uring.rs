//! The io_uring backend. A group commit becomes positioned `writev`s (at most
//! 1024 iovecs each) followed by `fsync(DATASYNC)` entries flagged
//! `IO_DRAIN`, so the syncs start only after every write has completed. The
//! ring signals an eventfd that the runtime's reactor watches, so the writer
//! awaits completions like any socket — no busy loop, no blocking thread.

use super::{IoStats, WriteJob};
use io_uring::{opcode, squeue, types, IoUring};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use tokio::io::unix::AsyncFd;

/// Submission-queue depth; larger jobs run in waves of this many entries.
const RING_ENTRIES: u32 = 128;
/// IOV_MAX: Linux rejects longer iovec arrays.
const IOV_MAX: usize = 1024;

/// Checks that io_uring works here: a ring can be built and a NOP completes.
pub fn probe() -> io::Result<()> {
    let mut ring = IoUring::new(2)?;
    let nop = opcode::Nop::new().build().user_data(7);
    // SAFETY: a NOP references no memory.
    unsafe { ring.submission().push(&nop) }.map_err(|_| io::Error::other("submission queue full"))?;
    ring.submit_and_wait(1)?;
    let completion = ring.completion().next();
    match completion {
        Some(cqe) if cqe.user_data() == 7 && cqe.result() >= 0 => Ok(()),
        Some(cqe) => Err(io::Error::from_raw_os_error(-cqe.result())),
        None => Err(io::Error::other("io_uring NOP did not complete")),
    }
}

/// One operation of a job, kept until it has fully completed.
enum Op {
    Write { fd: RawFd, offset: u64, iov: Vec<libc::iovec> },
    Sync { fd: RawFd },
}

impl Op {
    fn entry(&self, index: usize, first_sync: bool) -> squeue::Entry {
        match self {
            Op::Write { fd, offset, iov } => opcode::Writev::new(types::Fd(*fd), iov.as_ptr(), iov.len() as u32)
                .offset(*offset)
                .build()
                .user_data(index as u64),
            Op::Sync { fd } => {
                let entry = opcode::Fsync::new(types::Fd(*fd))
                    .flags(types::FsyncFlags::DATASYNC)
                    .build()
                    .user_data(index as u64);
                if first_sync {
                    // Drain: the sync must not start before the writes of
                    // this wave have completed.
                    entry.flags(squeue::Flags::IO_DRAIN)
                } else {
                    entry
                }
            }
        }
    }

    /// Accounts for `done` bytes written; true when nothing is left.
    fn advance(&mut self, done: usize) -> bool {
        let Op::Write { offset, iov, .. } = self else {
            return true;
        };
        *offset += done as u64;
        let mut left = done;
        while let Some(first) = iov.first_mut() {
            if left < first.iov_len {
                // SAFETY: stays within the same buffer (left < iov_len).
                first.iov_base = unsafe { first.iov_base.cast::<u8>().add(left) }.cast();
                first.iov_len -= left;
                return false;
            }
            left -= first.iov_len;
            iov.remove(0);
        }
        true
    }
}

/// io_uring with completions delivered through an eventfd.
pub struct UringIo {
    ring: IoUring,
    eventfd: AsyncFd<OwnedFd>,
    stats: Arc<IoStats>,
    /// Entries submitted whose completions were not reaped yet. Non-zero
    /// only if a job's future was dropped mid-flight; the next job and `Drop`
    /// wait for them first.
    in_flight: usize,
    /// The running job and its ops live here rather than in the future, so a
    /// cancelled future cannot free memory the kernel still reads.
    job: Option<WriteJob>,
    ops: Vec<Op>,
}

impl UringIo {
    /// Its counters.
    pub fn stats(&self) -> Arc<IoStats> {
        self.stats.clone()
    }

    /// Builds the ring and registers its eventfd with the current runtime.
    pub fn new(stats: Arc<IoStats>) -> io::Result<Self> {
        let ring = IoUring::new(RING_ENTRIES)?;
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, owned, valid descriptor.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        ring.submitter().register_eventfd(owned.as_raw_fd())?;
        Ok(Self {
            ring,
            // SAFETY: the eventfd is owned by the AsyncFd and never closed
            // or replaced while registered.
            eventfd: unsafe { AsyncFd::register(owned)? },
            stats,
            in_flight: 0,
            job: None,
            ops: Vec::new(),
        })
    }

    /// Runs a job: all writes, then the syncs, retrying short writes.
    pub async fn run(&mut self, job: WriteJob) -> io::Result<()> {
        self.reap_abandoned();
        let mut ops = Vec::new();
        for write in &job.writes {
            let mut offset = write.offset;
            let iovs: Vec<libc::iovec> = write
                .slices
                .iter()
                .map(|s| {
                    let bytes = job.slice(*s);
                    libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() }
                })
                .filter(|iov| iov.iov_len > 0)
                .collect();
            for chunk in iovs.chunks(IOV_MAX) {
                let len: usize = chunk.iter().map(|iov| iov.iov_len).sum();
                ops.push(Op::Write { fd: write.file.as_raw_fd(), offset, iov: chunk.to_vec() });
                offset += len as u64;
            }
        }
        let writes = ops.len();
        ops.extend(job.sync.iter().map(|f| Op::Sync { fd: f.as_raw_fd() }));
        // Moving a Vec moves its pointer, not its heap buffers, so the
        // iovecs built above stay valid.
        self.ops = ops;
        self.job = Some(job);
        // Writes first (in waves if there are many), then the syncs, so a
        // sync never runs before a write of an earlier wave.
        let result = match self.run_ops(0..writes).await {
            Ok(()) => self.run_ops(writes..self.ops.len()).await.map_err(super::sync_failed),
            Err(e) => Err(e),
        };
        if let Some(job) = self.job.take() {
            if result.is_ok() {
                self.stats.record(&job);
            }
        }
        self.ops.clear();
        result
    }

    /// Waits for entries of a job whose future was dropped mid-flight.
    fn reap_abandoned(&mut self) {
        while self.in_flight > 0 {
            if self.ring.submit_and_wait(1).is_err() {
                break;
            }
            let reaped = self.ring.completion().count();
            self.in_flight = self.in_flight.saturating_sub(reaped);
        }
        self.job = None;
        self.ops.clear();
    }

    /// Runs ops until each has completed fully; short writes are resubmitted
    /// for their remainder.
    async fn run_ops(&mut self, range: std::ops::Range<usize>) -> io::Result<()> {
        let mut pending: Vec<usize> = range.collect();
        while !pending.is_empty() {
            let wave: Vec<usize> = pending.drain(..pending.len().min(RING_ENTRIES as usize)).collect();
            let mut first_sync = true;
            for &index in &wave {
                let Some(op) = self.ops.get(index) else {
                    continue;
                };
                let is_sync = matches!(op, Op::Sync { .. });
                let entry = op.entry(index, is_sync && first_sync);
                first_sync &= !is_sync;
                // SAFETY: the entry points into `self.ops` (iovecs) and the
                // job's buffers in `self.job`; both stay alive until every
                // completion is reaped, here or (after a cancellation) in
                // `reap_abandoned`, which also runs on drop.
                unsafe { self.ring.submission().push(&entry) }
                    .map_err(|_| io::Error::other("io_uring submission queue full"))?;
            }
            self.ring.submit()?;
            self.in_flight += wave.len();
            let mut error = None;
            let mut remaining = wave.len();
            while remaining > 0 {
                let completed: Vec<(u64, i32)> =
                    self.ring.completion().map(|cqe| (cqe.user_data(), cqe.result())).collect();
                for (user_data, result) in completed {
                    remaining -= 1;
                    self.in_flight -= 1;
                    let index = user_data as usize;
                    if result < 0 {
                        let err = io::Error::from_raw_os_error(-result);
                        if err.kind() == io::ErrorKind::Interrupted || result == -libc::EAGAIN {
                            pending.push(index);
                        } else {
                            error.get_or_insert(err);
                        }
                    } else if let Some(op) = self.ops.get_mut(index) {
                        if matches!(op, Op::Write { .. }) && result == 0 {
                            error.get_or_insert(io::Error::new(
                                io::ErrorKind::WriteZero,
                                "io_uring writev wrote nothing",
                            ));
                        } else if !op.advance(result as usize) {
                            pending.push(index);
                        }
                    }
                }
                if remaining > 0 {
                    self.wait_eventfd().await?;
                }
            }
            if let Some(err) = error {
                return Err(err);
            }
            pending.sort_unstable();
        }
        Ok(())
    }

    async fn wait_eventfd(&mut self) -> io::Result<()> {
        let mut guard = self.eventfd.readable().await?;
        let mut counter = [0u8; 8];
        // SAFETY: reads 8 bytes into a local buffer from a nonblocking fd.
        let _ = unsafe { libc::read(guard.get_inner().as_raw_fd(), counter.as_mut_ptr().cast(), counter.len()) };
        guard.clear_ready();
        Ok(())
    }
}

impl Drop for UringIo {
    fn drop(&mut self) {
        self.reap_abandoned();
    }
}
