//! The commit log: every message of every topic, appended to one log cut into
//! fixed-size segments. [`CommitLog`] is the write side, owned by exactly one
//! writer; it lays out a group of append batches (offsets, store times,
//! padding at segment ends, CRCs) and hands the bytes to the io backend.
//! [`LogReader`] is the read side, shared by everyone: pread + CRC check.

mod blocks;
mod reader;
mod replica;
mod space;

pub use reader::{LogReader, READ_SPAN};
pub use space::GroupError;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::io::{Buf, FileWrite, IoBackend, Slice, WriteJob};
use crate::store::record::{self, PAD_MIN};
use crate::store::segment::{self, Prealloc, Preallocator, SegmentSet};
use std::fs::File;
use std::io;
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
    /// The next segment asked of the preallocator, and its answer (`None`
    /// until it comes, or once taken: then it was a success).
    next_ready: Option<(u64, Option<oneshot::Receiver<io::Result<()>>>)>,
    /// The next segment was looked at for this active one (found, or asked
    /// of the preallocator): no lookup per group until the next roll.
    next_asked: bool,
    /// Files written since their last fdatasync (async flush).
    dirty: Vec<(u64, Arc<File>)>,
    last_store_ts: i64,
    clock: Arc<dyn Clock>,
    /// Largest group written on the caller's thread (0: none).
    inline_write_max: u64,
    /// Segments are zero-filled ahead: writes are carried on to the end of
    /// their last block of this size ([`blocks`]).
    carry_block: Option<u64>,
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
        let carry_block = match preallocate {
            Some(Prealloc::Zeroed) => blocks::block_of(&active),
            _ => None,
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
            carry_block,
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

    /// How its syncer fdatasyncs (see [`IoBackend::sync_files`]).
    pub fn sync_files(&self) -> crate::io::SyncFiles {
        self.backend.sync_files()
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

    /// Whether preparing the next segment failed since the last look: then
    /// the roll tries again, and if the disk still has no room, the group
    /// that reaches the segment's end is refused for space. Reported as
    /// soon as the preallocator answers, while the active segment still
    /// has room (returns the segment and the error).
    pub fn prepare_failure(&mut self) -> Option<(u64, io::Error)> {
        let (base, waiting) = self.next_ready.as_mut()?;
        let failed = match waiting.as_mut()?.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => return None,
            Ok(Ok(())) => {
                *waiting = None;
                return None;
            }
            Ok(Err(e)) => e,
            Err(oneshot::error::TryRecvError::Closed) => io::Error::other("preallocator dropped the request"),
        };
        let base = *base;
        self.next_ready = None;
        Some((base, failed))
    }

    /// Bytes left in the active segment.
    pub fn active_room(&self) -> u64 {
        (self.active_base + self.set.segment_bytes()).saturating_sub(self.write_pos)
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
                self.next_ready = Some((next, Some(prealloc.prepare(next))));
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
                if let Some((base, waiting)) = self.next_ready.take() {
                    let prepared = match waiting {
                        Some(rx) => matches!(rx.await, Ok(Ok(()))),
                        None => true,
                    };
                    // A preparation that failed (for space, most likely) is
                    // tried once more below: retention may have freed room.
                    if base == next && prepared {
                        file = Some(segment::open_segment(self.set.dir(), next)?);
                    }
                }
                let file = match file {
                    Some(file) => file,
                    // Never a sparse file here: a segment whose blocks are
                    // not reserved could run out of space half way.
                    None => {
                        segment::create_fallocated(self.set.dir(), next, self.set.segment_bytes())?;
                        segment::open_segment(self.set.dir(), next)?
                    }
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
    /// Returns the positions per batch, in order. A group refused for space
    /// leaves the log as it was ([`GroupError::OutOfSpace`]).
    pub async fn write_group(
        &mut self,
        batches: Vec<AppendBatch>,
        sync: bool,
    ) -> std::result::Result<Vec<Vec<RecordPos>>, GroupError> {
        let before = self.place();
        let written = self.lay_out_and_write(batches, sync).await;
        self.unless_out_of_space(before, written)
    }

    /// Where the log stands now (for [`CommitLog::unless_out_of_space`]).
    fn place(&self) -> (u64, u64, Arc<File>) {
        (self.write_pos, self.active_base, self.active.clone())
    }

    /// A write's outcome; one the disk refused for space leaves the log
    /// where it stood `before`: nothing of it may stay, the next write goes
    /// where this one began.
    fn unless_out_of_space<T>(
        &mut self,
        before: (u64, u64, Arc<File>),
        written: io::Result<T>,
    ) -> std::result::Result<T, GroupError> {
        match written {
            Err(e) if space::refused_for_space(&e) => {
                (self.write_pos, self.active_base, self.active) = before;
                self.next_ready = None;
                self.next_asked = false;
                Err(GroupError::OutOfSpace(e))
            }
            other => other.map_err(GroupError::Failed),
        }
    }

    async fn lay_out_and_write(&mut self, batches: Vec<AppendBatch>, sync: bool) -> io::Result<Vec<Vec<RecordPos>>> {
        let seg_bytes = self.set.segment_bytes();
        let group_start = self.write_pos;
        let mut job = WriteJob::default();
        let mut positions = Vec::with_capacity(batches.len());
        let mut current =
            FileWrite { file: self.active.clone(), offset: self.write_pos - self.active_base, slices: Vec::new() };
        let mut touched_base = self.active_base;
        let now = self.clock.now_ms();
        job.bufs = batches.iter().map(|_| Buf::default()).collect();
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
                        job.bufs.push(record::pad_header(rem as u32).to_vec().into());
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
                *slot = std::mem::take(&mut batch.buf).into();
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
        self.carry_to_block_end(&mut job);
        self.prepare_next();
        // The log's advance bounds the group's bytes (a roll's skipped
        // segment end counts too: such a group merely goes to the backend).
        let inline = job.sync.is_empty() && self.write_pos - group_start <= self.inline_write_max;
        self.run_job(job, inline).await?;
        Ok(positions)
    }

    /// See [`blocks`].
    fn carry_to_block_end(&self, job: &mut WriteJob) {
        if let Some(block) = self.carry_block {
            blocks::carry_to_block_end(job, block, self.set.segment_bytes());
        }
    }

    /// Runs a group's job; if it was refused for space, cuts back whatever
    /// of it landed before answering (if that fails too, the log cannot be
    /// trusted).
    async fn run_job(&mut self, job: WriteJob, inline: bool) -> io::Result<()> {
        let ranges: Vec<(Arc<File>, u64, u64)> =
            job.writes.iter().map(|w| (w.file.clone(), w.offset, w.len())).collect();
        let written = if inline && self.backend.writes_inline() {
            self.backend.write_inline(&job)
        } else {
            self.backend.run(job).await
        };
        match written {
            Err(e) if space::refused_for_space(&e) => {
                space::cut_back(&ranges).map_err(|cut| io::Error::other(format!("{e}; cutting it back: {cut}")))?;
                Err(e)
            }
            other => other,
        }
    }

    /// fdatasyncs every file written since its last sync.
    pub async fn sync(&mut self) -> io::Result<()> {
        self.write_group(Vec::new(), true).await.map(|_| ()).map_err(|e| io::Error::new(e.io().kind(), e.to_string()))
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
        // Looked at after every group: a success, seen once, stays one.
        for _ in 0..50 {
            assert!(log.prepare_failure().is_none(), "a prepared segment is no failure");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
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

    pub(super) fn record_of(body: Vec<u8>) -> AppendBatch {
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
