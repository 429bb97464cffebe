//! The commit log: every message of every topic, appended to one log cut into
//! fixed-size segments. [`CommitLog`] is the write side, owned by exactly one
//! writer; it lays out a group of append batches (offsets, store times,
//! padding at segment ends, CRCs) and hands the bytes to the io backend.
//! [`LogReader`] is the read side, shared by everyone: pread + CRC check.

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::io::{FileWrite, IoBackend, Slice, WriteJob};
use crate::store::record::{self, DecodedRecord, PAD_MIN};
use crate::store::segment::{self, Prealloc, Preallocator, SegmentSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Encoded records bound for one queue: one buffer, records back to back.
#[derive(Debug, Default)]
pub struct AppendBatch {
    /// The records.
    pub buf: Vec<u8>,
    /// Start of each record within `buf`; each runs to the next start (or
    /// the end of `buf`).
    pub starts: Vec<usize>,
}

impl AppendBatch {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// `(start, end)` of record `i`.
    pub fn bounds(&self, i: usize) -> (usize, usize) {
        let start = self.starts.get(i).copied().unwrap_or(self.buf.len());
        let end = self.starts.get(i + 1).copied().unwrap_or(self.buf.len());
        (start, end)
    }

    /// Length of the largest record.
    pub fn max_record(&self) -> usize {
        (0..self.len())
            .map(|i| {
                let (s, e) = self.bounds(i);
                e - s
            })
            .max()
            .unwrap_or(0)
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPos {
    /// Commit-log offset.
    pub log_offset: u64,
    /// Record length.
    pub size: u32,
    /// Store time assigned by the writer.
    pub store_ts: i64,
}

/// The write side of the log. Not shared: the writer actor owns it.
pub struct CommitLog {
    set: Arc<SegmentSet>,
    active_base: u64,
    active: Arc<File>,
    write_pos: u64,
    backend: IoBackend,
    prealloc: Option<Preallocator>,
    next_ready: Option<(u64, oneshot::Receiver<io::Result<()>>)>,
    /// The next segment was looked at for this active one (found, or asked
    /// of the preallocator): no lookup per group until the next roll.
    next_asked: bool,
    /// Files written since their last fdatasync (async flush).
    dirty: Vec<(u64, Arc<File>)>,
    last_store_ts: i64,
    clock: Arc<dyn Clock>,
    /// Largest group written on the caller's thread (0: none).
    inline_write_max: u64,
}

impl CommitLog {
    /// Opens the write side at `write_pos` (as recovery found it). The
    /// segment holding `write_pos` must be in `set` or is created.
    pub fn open(
        set: Arc<SegmentSet>,
        write_pos: u64,
        last_store_ts: i64,
        backend: IoBackend,
        preallocate: Option<Prealloc>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let active_base = set.base_of(write_pos);
        let active = match set.file(active_base) {
            Some(file) => file,
            None => {
                let file = Arc::new(
                    segment::create_sparse(set.dir(), active_base, set.segment_bytes())
                        .map_err(|e| Error::io("create first segment", e))?,
                );
                set.insert(active_base, file.clone());
                file
            }
        };
        let prealloc = match preallocate {
            Some(how) => Some(
                Preallocator::start(set.dir().to_path_buf(), set.segment_bytes(), how)
                    .map_err(|e| Error::io("start preallocator", e))?,
            ),
            None => None,
        };
        let mut log = Self {
            set,
            active_base,
            active,
            write_pos,
            backend,
            prealloc,
            next_ready: None,
            next_asked: false,
            dirty: Vec::new(),
            last_store_ts,
            clock,
            inline_write_max: 0,
        };
        log.prepare_next();
        Ok(log)
    }

    /// Groups of at most `bytes` that need no fdatasync are written on the
    /// caller's thread ([`IoBackend::write_inline`]); 0: none are.
    pub fn with_inline_writes(mut self, bytes: u64) -> Self {
        self.inline_write_max = bytes;
        self
    }

    /// One past the last byte handed to the backend.
    pub fn write_pos(&self) -> u64 {
        self.write_pos
    }

    /// The backend's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Takes the files written since their last fdatasync: the caller now
    /// owns syncing them (async flush syncs beside the writes).
    pub fn take_unsynced(&mut self) -> Vec<Arc<File>> {
        self.dirty.drain(..).map(|(_, f)| f).collect()
    }

    /// A second backend like the log's, for fdatasyncs that run while the
    /// log writes.
    pub fn sync_backend(&self) -> io::Result<IoBackend> {
        self.backend.sibling()
    }

    /// The segments it writes.
    pub fn segment_set(&self) -> &Arc<SegmentSet> {
        &self.set
    }

    /// The backend's counters.
    pub fn io_stats(&self) -> Arc<crate::io::IoStats> {
        self.backend.stats()
    }

    /// Whether any write is not yet covered by an fdatasync.
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Asks the preallocator for the next segment once the active one is
    /// half written: soon enough to be ready at the roll, late enough that a
    /// broker just started (or just rolled) is not writing a segment of
    /// zeros beside its first appends — with sync flush that doubled the
    /// disk's load and slowed every fdatasync of a fresh broker.
    fn prepare_next(&mut self) {
        if self.next_asked || self.write_pos - self.active_base < self.set.segment_bytes() / 2 {
            return;
        }
        self.next_asked = true;
        let next = self.active_base + self.set.segment_bytes();
        if let Some(prealloc) = &self.prealloc {
            if self.set.file(next).is_none() {
                self.next_ready = Some((next, prealloc.prepare(next)));
            }
        }
    }

    async fn roll(&mut self) -> io::Result<()> {
        let next = self.active_base + self.set.segment_bytes();
        self.set.set_last_store_ts(self.active_base, self.last_store_ts);
        let file = match self.set.file(next) {
            Some(file) => file,
            None => {
                let mut file = None;
                if let Some((base, rx)) = self.next_ready.take() {
                    if base == next {
                        rx.await.map_err(|_| io::Error::other("preallocator dropped the request"))??;
                        file = Some(segment::open_segment(self.set.dir(), next)?);
                    }
                }
                let file = match file {
                    Some(file) => file,
                    None => segment::create_sparse(self.set.dir(), next, self.set.segment_bytes())?,
                };
                let file = Arc::new(file);
                self.set.insert(next, file.clone());
                file
            }
        };
        self.active_base = next;
        self.active = file;
        self.write_pos = next;
        self.next_asked = false;
        self.prepare_next();
        Ok(())
    }

    fn mark_dirty(&mut self, base: u64, file: &Arc<File>) {
        if !self.dirty.iter().any(|(b, _)| *b == base) {
            self.dirty.push((base, file.clone()));
        }
    }

    /// Writes a group of batches: assigns each record its offset and store
    /// time, seals it, pads and rolls at segment ends, and runs one job on
    /// the backend (with one fdatasync per touched file when `sync`).
    /// Returns the positions per batch, in order.
    pub async fn write_group(&mut self, batches: Vec<AppendBatch>, sync: bool) -> io::Result<Vec<Vec<RecordPos>>> {
        let seg_bytes = self.set.segment_bytes();
        let group_start = self.write_pos;
        let mut job = WriteJob::default();
        let mut positions = Vec::with_capacity(batches.len());
        let mut current =
            FileWrite { file: self.active.clone(), offset: self.write_pos - self.active_base, slices: Vec::new() };
        let mut touched_base = self.active_base;
        let now = self.clock.now_ms();
        job.bufs = batches.iter().map(|_| Vec::new()).collect();
        for (index, mut batch) in batches.into_iter().enumerate() {
            let mut batch_pos = Vec::with_capacity(batch.len());
            let mut slice_start = 0;
            for i in 0..batch.len() {
                let (start, end) = batch.bounds(i);
                let len = (end - start) as u64;
                if len > seg_bytes {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("record of {len} bytes cannot fit a segment of {seg_bytes}"),
                    ));
                }
                if self.write_pos - self.active_base + len > seg_bytes {
                    if start > slice_start {
                        current.slices.push(Slice { buf: index, start: slice_start, end: start });
                    }
                    let rem = seg_bytes - (self.write_pos - self.active_base);
                    if rem >= PAD_MIN as u64 {
                        job.bufs.push(record::pad_header(rem as u32).to_vec());
                        current.slices.push(Slice { buf: job.bufs.len() - 1, start: 0, end: PAD_MIN });
                    }
                    let done = std::mem::replace(
                        &mut current,
                        FileWrite { file: self.active.clone(), offset: 0, slices: Vec::new() },
                    );
                    self.mark_dirty(touched_base, &done.file);
                    job.writes.push(done);
                    self.roll().await?;
                    current.file = self.active.clone();
                    touched_base = self.active_base;
                    slice_start = start;
                }
                self.last_store_ts = self.last_store_ts.max(now);
                if let Some(rec) = batch.buf.get_mut(start..end) {
                    record::seal(rec, self.write_pos, self.last_store_ts);
                }
                batch_pos.push(RecordPos {
                    log_offset: self.write_pos,
                    size: len as u32,
                    store_ts: self.last_store_ts,
                });
                self.write_pos += len;
            }
            if batch.buf.len() > slice_start {
                current.slices.push(Slice { buf: index, start: slice_start, end: batch.buf.len() });
            }
            if let Some(slot) = job.bufs.get_mut(index) {
                *slot = std::mem::take(&mut batch.buf);
            }
            positions.push(batch_pos);
        }
        if !current.slices.is_empty() {
            self.mark_dirty(touched_base, &current.file);
            job.writes.push(current);
        }
        if sync {
            job.sync = self.dirty.drain(..).map(|(_, f)| f).collect();
        }
        self.prepare_next();
        // The log's advance bounds the group's bytes (a roll's skipped
        // segment end counts too: such a group merely goes to the backend).
        let inline = job.sync.is_empty() && self.write_pos - group_start <= self.inline_write_max;
        if inline && self.backend.writes_inline() {
            self.backend.write_inline(&job)?;
        } else {
            self.backend.run(job).await?;
        }
        Ok(positions)
    }

    /// fdatasyncs every file written since its last sync.
    pub async fn sync(&mut self) -> io::Result<()> {
        self.write_group(Vec::new(), true).await.map(|_| ())
    }
}

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
    fn read_nowait(&self, log_offset: u64, len: usize) -> Result<Vec<u8>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::io::IoStats;
    use brook_proto::Message;
    use std::sync::atomic::Ordering;

    fn one_record() -> AppendBatch {
        record_of(vec![b'x'; 400])
    }

    /// The next segment is asked for once the active one is half written,
    /// not at open or right after a roll, and is ready (full size) when the
    /// log rolls into it.
    #[tokio::test]
    async fn the_next_segment_is_prepared_from_half_way() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seg = 8192;
        let set = Arc::new(SegmentSet::new(dir.path().to_path_buf(), seg));
        let backend = IoBackend::Std(crate::io::std_io::StdIo::new(Arc::new(IoStats::default())));
        let mut log = CommitLog::open(set.clone(), 0, 0, backend, Some(Prealloc::Fallocated), Arc::new(SystemClock))
            .expect("open");
        assert!(log.next_ready.is_none(), "nothing asked for at open");
        let record = one_record().buf.len() as u64;
        while log.write_pos() + record < seg / 2 {
            log.write_group(vec![one_record()], false).await.expect("write");
            assert!(log.next_ready.is_none(), "asked for at {} of {seg}", log.write_pos());
        }
        log.write_group(vec![one_record()], false).await.expect("write");
        assert_eq!(log.next_ready.as_ref().map(|(base, _)| *base), Some(seg), "asked for past half way");
        while log.write_pos() < seg {
            log.write_group(vec![one_record()], false).await.expect("write");
        }
        assert_eq!(log.active_base, seg, "rolled");
        assert!(log.next_ready.is_none(), "the one after is not asked for right after the roll");
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir.path().join(format!("{seg:020}"))).expect("segment");
        assert!(meta.blocks() * 512 >= seg, "the rolled-into segment was allocated ahead ({} blocks)", meta.blocks());
    }

    /// Small groups without an fdatasync are written on the caller's
    /// thread; larger ones, and every synced one, go to the backend. On
    /// both backends, everything lands where its position says.
    #[tokio::test]
    async fn small_unsynced_groups_are_written_inline_and_the_rest_by_the_backend() {
        for uring in [false, true] {
            if uring && crate::io::uring::probe().is_err() {
                continue;
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let set = Arc::new(SegmentSet::new(dir.path().to_path_buf(), 1 << 20));
            let stats = Arc::new(IoStats::default());
            let backend = if uring {
                IoBackend::Uring(Box::new(crate::io::uring::UringIo::new(stats.clone()).expect("uring")))
            } else {
                IoBackend::Std(crate::io::std_io::StdIo::new(stats.clone()))
            };
            let mut log = CommitLog::open(set.clone(), 0, 0, backend, None, Arc::new(SystemClock))
                .expect("open")
                .with_inline_writes(4096);
            let jobs =
                |stats: &IoStats| (stats.jobs.load(Ordering::Relaxed), stats.inline_jobs.load(Ordering::Relaxed));
            let mut written = Vec::new();
            written.push(log.write_group(vec![record_of(vec![1; 500])], false).await.expect("small"));
            assert_eq!(jobs(&stats), (1, 1), "uring {uring}: a small group is written inline");
            written.push(log.write_group(vec![record_of(vec![2; 8000])], false).await.expect("large"));
            assert_eq!(jobs(&stats), (2, 1), "uring {uring}: a group over the limit goes to the backend");
            written.push(log.write_group(vec![record_of(vec![3; 500])], true).await.expect("synced"));
            assert_eq!(jobs(&stats), (3, 1), "uring {uring}: a synced group goes to the backend");
            assert_eq!(stats.fdatasyncs.load(Ordering::Relaxed), 1);
            let reader = LogReader::new(set);
            for (i, pos) in written.iter().map(|p| p[0][0]).enumerate() {
                let rec = reader.read(pos.log_offset, pos.size).expect("read back");
                assert!(rec.message.body.iter().all(|&b| usize::from(b) == i + 1), "uring {uring}: group {i}");
            }
        }
    }

    /// A write that fails on the writer's thread fails its group as the
    /// backend's would: the error comes back (the writer then poisons),
    /// nothing is counted as written.
    #[tokio::test]
    async fn a_failed_inline_write_fails_its_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let set = Arc::new(SegmentSet::new(dir.path().to_path_buf(), 1 << 20));
        segment::create_sparse(dir.path(), 0, 1 << 20).expect("segment");
        // Read-only: every write to it fails with EBADF.
        set.insert(0, Arc::new(File::open(dir.path().join(segment::segment_name(0))).expect("open")));
        let stats = Arc::new(IoStats::default());
        let backend = IoBackend::Std(crate::io::std_io::StdIo::new(stats.clone()));
        let mut log =
            CommitLog::open(set, 0, 0, backend, None, Arc::new(SystemClock)).expect("open").with_inline_writes(4096);
        let failed = log.write_group(vec![record_of(vec![1; 500])], false).await;
        assert!(failed.is_err(), "{failed:?}");
        assert_eq!((stats.jobs.load(Ordering::Relaxed), stats.inline_jobs.load(Ordering::Relaxed)), (0, 0));
    }

    fn record_of(body: Vec<u8>) -> AppendBatch {
        let mut batch = AppendBatch::default();
        batch.starts.push(0);
        record::encode_into(&mut batch.buf, &Message::new("p", body), 0, 0).expect("encode");
        batch
    }

    /// Cached reads of a queue's records — every other record of the log,
    /// some larger than a read span, across segment rolls — return each
    /// record once, in order, whole, however the runs of one call are cut.
    #[tokio::test]
    async fn reads_in_runs_return_every_listed_record_across_spans_and_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let seg = 4 * READ_SPAN;
        let set = Arc::new(SegmentSet::new(dir.path().to_path_buf(), seg));
        let backend = IoBackend::Std(crate::io::std_io::StdIo::new(Arc::new(IoStats::default())));
        let mut log = CommitLog::open(set.clone(), 0, 0, backend, None, Arc::new(SystemClock)).expect("open");
        let mut written = Vec::new();
        for i in 0..400u32 {
            // Mostly small records, a few over a whole span.
            let len = if i % 97 == 5 { READ_SPAN as usize + 1000 } else { 300 + (i as usize * 37) % 4000 };
            let mut body = vec![(i % 251) as u8; len];
            body[..4].copy_from_slice(&i.to_le_bytes());
            let pos = log.write_group(vec![record_of(body)], false).await.expect("write");
            written.push(pos[0][0]);
        }
        assert!(log.active_base >= 3 * seg, "the log rolled several times");
        let reader = LogReader::new(set);
        for (stride, skip) in [(1, 0), (2, 1), (7, 3)] {
            let listed: Vec<&RecordPos> = written.iter().skip(skip).step_by(stride).collect();
            let at: Vec<(u64, u32)> = listed.iter().map(|p| (p.log_offset, p.size)).collect();
            for cached_only in [true, false] {
                let mut records = Vec::new();
                let each = |n, bytes: &[u8]| {
                    assert_eq!(n, records.len(), "records come in order");
                    records.push(record::decode(bytes).expect("decode"));
                    Ok(())
                };
                let read = if cached_only { reader.read_cached(&at, each) } else { reader.read_many(&at, each) }
                    .expect("read");
                let all = (listed.len(), listed.len());
                assert_eq!((read, records.len()), all, "every listed record (stride {stride}, {cached_only})");
                for (n, rec) in records.iter().enumerate() {
                    let i = (skip + n * stride) as u32;
                    assert_eq!(rec.message.body[..4], i.to_le_bytes(), "record {i} in its place");
                    assert!(rec.message.body[4..].iter().all(|&b| b == (i % 251) as u8), "record {i} whole");
                }
            }
        }
    }
}
