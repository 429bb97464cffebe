//! The read side of the log, shared by everyone: pread + CRC check, in
//! runs for pulls, page-cache-only for readers that must not block.

use crate::error::{Error, Result};
use crate::store::record::{self, DecodedRecord};
use crate::store::segment::SegmentSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Most bytes [`LogReader::read_cached`] and [`LogReader::read_many`] read
/// in one call: records of one queue sit among other queues' records, so a
/// run of them spans more than their own bytes; copying a few more is
/// cheaper than another system call.
pub const READ_SPAN: u64 = 64 << 10;

/// The read side of the log, cheap to clone and share.
#[derive(Debug, Clone)]
pub struct LogReader {
    set: Arc<SegmentSet>,
}

impl LogReader {
    /// A reader over `set`.
    pub fn new(set: Arc<SegmentSet>) -> Self {
        Self { set }
    }

    /// The segments it reads.
    pub fn segments(&self) -> &Arc<SegmentSet> {
        &self.set
    }

    /// The segment holding `log_offset`, and where in it.
    fn locate(&self, log_offset: u64) -> Result<(Arc<File>, u64)> {
        let base = self.set.base_of(log_offset);
        let Some(file) = self.set.file(base) else {
            let min = self.set.min_offset();
            return Err(if log_offset < min {
                Error::BelowRetained { requested: log_offset, min }
            } else {
                Error::Corrupt { offset: log_offset, reason: "no segment holds this offset".into() }
            });
        };
        Ok((file, log_offset - base))
    }

    /// Reads and checks the record of `size` bytes at `log_offset`.
    pub fn read_raw(&self, log_offset: u64, size: u32) -> Result<Vec<u8>> {
        let buf = self.read_span(log_offset, u64::from(size))?;
        record::check(&buf, log_offset).map_err(|reason| Error::Corrupt { offset: log_offset, reason })?;
        Ok(buf)
    }

    /// [`LogReader::read_raw`] of each record of `at` (log offset and size,
    /// in ascending order, as a queue lists them) as long as the page cache
    /// holds it (`preadv2` with `RWF_NOWAIT`): hands each checked record's
    /// index and bytes to `each`, from the first on, stops at the first that
    /// would wait for the disk, and returns how many it handed over.
    /// Fresh records can then be read on a connection's thread, and only
    /// cold ones take the trip to a thread that may block. Neighbouring
    /// records are read together, one call per run of them within
    /// [`READ_SPAN`] bytes of one segment: a consumer keeping up pulls a
    /// few records at a time, and a call per record was most of a pull's
    /// system time.
    pub fn read_cached(&self, at: &[(u64, u32)], each: impl FnMut(usize, &[u8]) -> Result<()>) -> Result<usize> {
        self.read_runs(at, true, each)
    }

    /// [`LogReader::read_cached`] that waits for the disk: every record of
    /// `at` is handed over (for a consumer catching up on a cold backlog,
    /// on a thread that may block).
    pub fn read_many(&self, at: &[(u64, u32)], each: impl FnMut(usize, &[u8]) -> Result<()>) -> Result<usize> {
        self.read_runs(at, false, each)
    }

    fn read_runs(
        &self,
        at: &[(u64, u32)],
        cached_only: bool,
        mut each: impl FnMut(usize, &[u8]) -> Result<()>,
    ) -> Result<usize> {
        let mut i = 0;
        while i < at.len() {
            let (first, _) = at[i];
            let base = self.set.base_of(first);
            // The run: records after `first` in its segment, ending within the span.
            let mut end = i + 1;
            while end < at.len() {
                let (offset, size) = at[end];
                let within = offset >= at[end - 1].0 && offset + u64::from(size) - first <= READ_SPAN;
                if !within || self.set.base_of(offset) != base {
                    break;
                }
                end += 1;
            }
            let (last, last_size) = at[end - 1];
            let span = (last + u64::from(last_size)).saturating_sub(first).max(u64::from(at[i].1));
            let buf = if cached_only { self.read_nowait(first, span as usize)? } else { self.read_span(first, span)? };
            for (n, &(offset, size)) in at[i..end].iter().enumerate() {
                let from = (offset - first) as usize;
                let Some(bytes) = buf.get(from..from + size as usize) else {
                    return Ok(i + n);
                };
                record::check(bytes, offset).map_err(|reason| Error::Corrupt { offset, reason })?;
                each(i + n, bytes)?;
            }
            i = end;
        }
        Ok(at.len())
    }

    /// `len` bytes at `log_offset`, all of them in one segment.
    fn read_span(&self, log_offset: u64, len: u64) -> Result<Vec<u8>> {
        let (file, at) = self.locate(log_offset)?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, at).map_err(|e| Error::io(format!("read log at {log_offset}"), e))?;
        Ok(buf)
    }

    /// Up to `len` bytes at `log_offset` that the page cache holds, from the
    /// first on (none when the first page is not cached).
    pub(crate) fn read_nowait(&self, log_offset: u64, len: usize) -> Result<Vec<u8>> {
        let (file, at) = self.locate(log_offset)?;
        // Not zero-filled first: a span is up to 64 KiB and the read fills it.
        let mut buf: Vec<u8> = Vec::with_capacity(len);
        let iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: len };
        let at =
            i64::try_from(at).map_err(|_| Error::Corrupt { offset: log_offset, reason: "offset too large".into() })?;
        // SAFETY: `iov` describes `buf`'s capacity, which lives and is
        // borrowed by nothing else for the duration of the call.
        let n = unsafe { libc::preadv2(std::os::fd::AsRawFd::as_raw_fd(&*file), &iov, 1, at, libc::RWF_NOWAIT) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // Not cached, or a kernel or file system without the flag.
                Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => Ok(Vec::new()),
                _ => Err(Error::io(format!("read log at {log_offset}"), e)),
            };
        }
        // SAFETY: the kernel wrote the first `n` (≤ `len`) bytes.
        unsafe { buf.set_len((n as usize).min(len)) };
        // Partly cached: the caller reads the rest where waiting is allowed.
        Ok(buf)
    }

    /// Reads, checks and decodes the record at `log_offset` without knowing
    /// its size (message ids carry only the offset).
    pub fn read_at(&self, log_offset: u64) -> Result<DecodedRecord> {
        let base = self.set.base_of(log_offset);
        let file =
            self.set.file(base).ok_or(Error::BelowRetained { requested: log_offset, min: self.set.min_offset() })?;
        let mut len = [0u8; 4];
        file.read_exact_at(&mut len, log_offset - base)
            .map_err(|e| Error::io(format!("read log at {log_offset}"), e))?;
        let size = u32::from_le_bytes(len);
        // A record arrived in one frame: anything longer is not a record
        // start (an id naming the middle of one), and is not allocated.
        let limit = self.set.segment_bytes().min(brook_proto::MAX_FRAME_BYTES_CEILING as u64);
        if (size as usize) < record::HEADER_LEN || u64::from(size) > limit {
            return Err(Error::Corrupt {
                offset: log_offset,
                reason: format!("no record starts here (length {size})"),
            });
        }
        self.read(log_offset, size)
    }

    /// Reads, checks and decodes the record at `log_offset`.
    pub fn read(&self, log_offset: u64, size: u32) -> Result<DecodedRecord> {
        let buf = self.read_raw(log_offset, size)?;
        record::decode(&buf).map_err(|reason| Error::Corrupt { offset: log_offset, reason })
    }
}
