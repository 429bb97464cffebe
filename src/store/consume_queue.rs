//! A consume queue: the per topic-queue index into the commit log. Fixed
//! 20-byte entries (commit-log offset u64, record size u32, tag hash u64, all
//! little-endian), so queue offset N is simply entry N. Entries live in files
//! of `per_file` entries, named by their first entry number.
//!
//! Written only by the queue's actor (or recovery before actors start), after
//! the writer has acknowledged the records, so every entry points at a record
//! that is stored. Durability comes from the checkpoint's syncfs, not from
//! per-append fsyncs: the entries are derived data and rebuilt after a crash.

use crate::store::fd_cache;
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes per entry.
pub const ENTRY_LEN: u64 = 20;

/// One consume-queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CqEntry {
    /// Where the record starts in the commit log.
    pub log_offset: u64,
    /// Record length.
    pub size: u32,
    /// Hash of the record's tag (0: none).
    pub tag_hash: u64,
}

impl CqEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.log_offset.to_le_bytes());
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.tag_hash.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> CqEntry {
        let mut u64s = [0u8; 8];
        let mut u32s = [0u8; 4];
        u64s.copy_from_slice(bytes.get(0..8).unwrap_or(&[0; 8]));
        let log_offset = u64::from_le_bytes(u64s);
        u32s.copy_from_slice(bytes.get(8..12).unwrap_or(&[0; 4]));
        let size = u32::from_le_bytes(u32s);
        u64s.copy_from_slice(bytes.get(12..20).unwrap_or(&[0; 8]));
        CqEntry { log_offset, size, tag_hash: u64::from_le_bytes(u64s) }
    }

    /// Entries with size 0 were never written (holes before a queue's first
    /// entry when it was rebuilt from a later offset).
    pub fn is_hole(&self) -> bool {
        self.size == 0
    }
}

fn file_name(first: u64) -> String {
    format!("{first:020}")
}

/// The file in `dir` whose first entry is `first`.
fn file_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(file_name(first))
}

/// One topic-queue's consume queue.
#[derive(Debug)]
pub struct ConsumeQueue {
    dir: PathBuf,
    per_file: u64,
    /// First entry of every file on disk; the files themselves come from
    /// the process-wide descriptor cache.
    files: BTreeSet<u64>,
    /// Files written since the last `take_dirty`.
    dirty: BTreeSet<u64>,
    /// Entries appended but not yet written to their file (the last
    /// `tail.len()` offsets before `next`). Writing them in bulk saves a
    /// syscall per acknowledged batch; readers see them from memory, and the
    /// checkpoint barrier writes them before it syncs.
    tail: Vec<CqEntry>,
    /// Tail entries below this offset are being written off the actor's
    /// thread ([`ConsumeQueue::detach_tail`]); they stay in `tail` for
    /// readers until the write is reported done.
    writing_end: u64,
    min_offset: u64,
    next: u64,
}

/// Tail entries a checkpoint writes to their files off the queue's thread.
#[derive(Debug, Default)]
pub struct TailWrite {
    /// The queue's directory.
    dir: PathBuf,
    /// Per file: its first entry, where the bytes go and the bytes.
    writes: Vec<(u64, u64, Vec<u8>)>,
    /// One past the last entry written.
    end: u64,
}

impl TailWrite {
    /// Writes the entries; returns the files written, to be synced. A queue
    /// deleted meanwhile (its directory gone) has nothing to write.
    pub fn run(&self) -> io::Result<Vec<PathBuf>> {
        let mut written = Vec::with_capacity(self.writes.len());
        for (base, at, bytes) in &self.writes {
            let path = file_path(&self.dir, *base);
            // Opened here, not through the descriptor cache: these files
            // are written once a checkpoint and would only churn it.
            match fs::OpenOptions::new().write(true).create(true).truncate(false).open(&path) {
                Ok(file) => file.write_all_at(bytes, *at)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            written.push(path);
        }
        Ok(written)
    }
}

/// Tail entries that trigger a write.
const TAIL_FLUSH: usize = 512;

impl ConsumeQueue {
    /// Opens (creating the directory if needed) the queue in `dir`. A torn
    /// last entry is cut off.
    pub fn open(dir: PathBuf, per_file: u64) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        let mut files = BTreeSet::new();
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if let Some(first) =
                entry.file_name().to_str().filter(|n| n.len() == 20).and_then(|n| n.parse::<u64>().ok())
            {
                files.insert(first);
            }
        }
        let mut queue = Self {
            dir,
            per_file,
            files,
            dirty: BTreeSet::new(),
            tail: Vec::new(),
            writing_end: 0,
            min_offset: 0,
            next: 0,
        };
        if let Some(&first) = queue.files.iter().next_back() {
            let path = queue.path(first);
            let len = fs::metadata(&path)?.len();
            let whole = (len / ENTRY_LEN).min(per_file);
            if len != whole * ENTRY_LEN {
                fd_cache::get(&path, false)?.set_len(whole * ENTRY_LEN)?;
            }
            queue.next = first + whole;
        }
        if let Some(&first) = queue.files.iter().next() {
            queue.min_offset = queue.first_present(first)?;
        }
        Ok(queue)
    }

    fn path(&self, base: u64) -> PathBuf {
        file_path(&self.dir, base)
    }

    fn file(&self, base: u64) -> io::Result<Option<Arc<File>>> {
        if !self.files.contains(&base) {
            return Ok(None);
        }
        fd_cache::get(&self.path(base), false).map(Some)
    }

    fn remove_file(&mut self, base: u64) -> io::Result<()> {
        self.files.remove(&base);
        let path = self.path(base);
        fd_cache::forget(&path);
        fs::remove_file(path)
    }

    /// The directory of this queue.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Smallest offset still stored.
    pub fn min_offset(&self) -> u64 {
        self.min_offset
    }

    /// Next offset to be appended (one past the last entry).
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// First non-hole offset at or after `from` (holes only ever form a
    /// prefix, so this is a binary search).
    fn first_present(&self, from: u64) -> io::Result<u64> {
        let (mut lo, mut hi) = (from, self.next);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid)? {
                Some(e) if !e.is_hole() => hi = mid,
                _ => lo = mid + 1,
            }
        }
        Ok(lo)
    }

    fn file_base(&self, offset: u64) -> u64 {
        offset - offset % self.per_file
    }

    fn file_for_write(&mut self, base: u64) -> io::Result<Arc<File>> {
        self.dirty.insert(base);
        let file = fd_cache::get(&self.path(base), true)?;
        self.files.insert(base);
        Ok(file)
    }

    /// Appends entries for offsets `offset..`. `offset` must be the next
    /// offset, except on an empty queue, where it sets the queue's start
    /// (recovery rebuilding a queue whose early records retention deleted).
    pub fn append(&mut self, offset: u64, entries: &[CqEntry]) -> io::Result<()> {
        if offset != self.next {
            if self.next == self.min_offset {
                self.min_offset = offset;
                self.next = offset;
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("append at {offset} but the queue ends at {}", self.next),
                ));
            }
        }
        self.tail.extend_from_slice(entries);
        self.next = offset + entries.len() as u64;
        // Opportunistic: a write that fails (a full disk) keeps the entries
        // in the tail, readable here; the checkpoint writes them later.
        if self.tail.len() >= TAIL_FLUSH {
            let _ = self.flush();
        }
        Ok(())
    }

    /// Offset of the first entry of the in-memory tail.
    fn tail_start(&self) -> u64 {
        self.next - self.tail.len() as u64
    }

    /// Log offset of the oldest entry not yet written to a file nor being
    /// written by a checkpoint.
    pub fn tail_low(&self) -> Option<u64> {
        let tail_start = self.tail_start();
        let detached = self.writing_end.saturating_sub(tail_start) as usize;
        self.tail.get(detached).map(|e| e.log_offset)
    }

    /// Hands the tail not yet being written to a [`TailWrite`] that runs
    /// elsewhere; its entries stay readable here until
    /// [`ConsumeQueue::tail_written`] reports the outcome. None when there
    /// is nothing to write.
    pub fn detach_tail(&mut self) -> Option<TailWrite> {
        let tail_start = self.tail_start();
        let from = self.writing_end.max(tail_start);
        let rest = self.tail.get((from - tail_start) as usize..).filter(|r| !r.is_empty())?;
        let writes = self.encode_by_file(from, rest);
        self.writing_end = self.next;
        Some(TailWrite { dir: self.dir.clone(), writes, end: self.next })
    }

    /// The outcome of a detached write: written, its entries leave memory
    /// (a flush may have written and dropped them already); failed, they
    /// count as unwritten again, for the next checkpoint.
    pub fn tail_written(&mut self, write: &TailWrite, ok: bool) {
        if !ok {
            self.writing_end = 0;
            return;
        }
        let tail_start = self.tail_start();
        let done = (write.end.saturating_sub(tail_start) as usize).min(self.tail.len());
        self.tail.drain(..done);
        self.files.extend(write.writes.iter().map(|(base, ..)| *base));
    }

    /// Writes the in-memory tail to its files.
    pub fn flush(&mut self) -> io::Result<()> {
        let start = self.tail_start();
        let tail = std::mem::take(&mut self.tail);
        let mut done = 0;
        for (base, at, bytes) in self.encode_by_file(start, &tail) {
            if let Err(e) = self.file_for_write(base).and_then(|f| f.write_all_at(&bytes, at)) {
                // Keep what was not written, so a retry or a reader still
                // sees it.
                self.tail = tail.get(done..).unwrap_or_default().to_vec();
                return Err(e);
            }
            done += bytes.len() / ENTRY_LEN as usize;
        }
        Ok(())
    }

    /// `entries`, the first at offset `at`, encoded file by file: each
    /// file's first entry, the byte position in it, and the bytes.
    fn encode_by_file(&self, mut at: u64, mut rest: &[CqEntry]) -> Vec<(u64, u64, Vec<u8>)> {
        let mut runs = Vec::new();
        while !rest.is_empty() {
            let base = self.file_base(at);
            let room = (base + self.per_file - at) as usize;
            let (now, later) = rest.split_at(room.min(rest.len()));
            let mut bytes = Vec::with_capacity(now.len() * ENTRY_LEN as usize);
            for entry in now {
                entry.encode(&mut bytes);
            }
            runs.push((base, (at - base) * ENTRY_LEN, bytes));
            at += now.len() as u64;
            rest = later;
        }
        runs
    }

    /// The entry at `offset`, if stored.
    pub fn entry(&self, offset: u64) -> io::Result<Option<CqEntry>> {
        Ok(self.read(offset, 1)?.into_iter().next())
    }

    /// Up to `max` entries from `from` (clamped into the stored range).
    pub fn read(&self, from: u64, max: usize) -> io::Result<Vec<CqEntry>> {
        let end = self.next.min(from.saturating_add(max as u64));
        let tail_start = self.tail_start();
        let mut out = self.read_files(from, end.min(tail_start))?;
        if end > tail_start && (from >= tail_start || out.len() as u64 == tail_start - from) {
            let skip = from.saturating_sub(tail_start) as usize;
            let take = (end - tail_start.max(from)) as usize;
            out.extend(self.tail.iter().skip(skip).take(take).copied());
        }
        Ok(out)
    }

    /// Entries `from..end` that are in files.
    fn read_files(&self, from: u64, end: u64) -> io::Result<Vec<CqEntry>> {
        let mut out = Vec::with_capacity(end.saturating_sub(from) as usize);
        let mut at = from;
        while at < end {
            let base = self.file_base(at);
            let Some(file) = self.file(base)? else {
                break;
            };
            let upto = end.min(base + self.per_file);
            let mut bytes = vec![0u8; ((upto - at) * ENTRY_LEN) as usize];
            let read = read_full_at(&file, &mut bytes, (at - base) * ENTRY_LEN)?;
            for chunk in bytes.get(..read).unwrap_or(&[]).chunks_exact(ENTRY_LEN as usize) {
                out.push(CqEntry::decode(chunk));
            }
            if read < bytes.len() {
                break;
            }
            at = upto;
        }
        Ok(out)
    }

    /// Drops every entry at or after `offset`.
    pub fn truncate(&mut self, offset: u64) -> io::Result<()> {
        if offset >= self.next {
            return Ok(());
        }
        self.flush()?;
        let keep_base = self.file_base(offset);
        let doomed: Vec<u64> = self.files.range(keep_base + 1..).copied().collect();
        for base in doomed {
            self.remove_file(base)?;
        }
        if let Some(file) = self.file(keep_base)? {
            file.set_len((offset - keep_base) * ENTRY_LEN)?;
            self.dirty.insert(keep_base);
        }
        self.next = offset;
        self.min_offset = self.min_offset.min(offset);
        Ok(())
    }

    /// Drops every entry pointing at or past `log_end` (records a crash
    /// lost). Entries are in log order, so they form a suffix.
    pub fn truncate_log_from(&mut self, log_end: u64) -> io::Result<()> {
        let (mut lo, mut hi) = (self.min_offset, self.next);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid)? {
                Some(e) if !e.is_hole() && e.log_offset < log_end => lo = mid + 1,
                _ => hi = mid,
            }
        }
        self.truncate(lo)
    }

    /// Deletes whole files whose entries all point below `log_min` (the
    /// first retained log offset) and advances the minimum offset to the
    /// first entry at or past it. Returns how many files were deleted.
    pub fn retain_from_log(&mut self, log_min: u64) -> io::Result<usize> {
        let (mut lo, mut hi) = (self.min_offset, self.next);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid)? {
                Some(e) if e.is_hole() || e.log_offset < log_min => lo = mid + 1,
                _ => hi = mid,
            }
        }
        let new_min = lo;
        let mut deleted = 0;
        let bases: Vec<u64> = self.files.iter().copied().collect();
        for base in bases {
            // Keep the file holding `new_min`, and always the last file so
            // the queue keeps its end offset.
            if base + self.per_file <= new_min && base + self.per_file < self.next {
                self.remove_file(base)?;
                deleted += 1;
            }
        }
        self.min_offset = new_min;
        Ok(deleted)
    }

    /// Writes the tail, then hands over the files written since the last
    /// call, for the checkpoint to sync off the actor's thread.
    pub fn take_dirty(&mut self) -> io::Result<Vec<PathBuf>> {
        self.flush()?;
        Ok(self.take_written())
    }

    /// The files written since the last call, the in-memory tail left
    /// alone. Paths, not open files: a checkpoint over tens of thousands
    /// of queues must not hold a descriptor for each.
    pub fn take_written(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.dirty).into_iter().filter(|b| self.files.contains(b)).map(|b| self.path(b)).collect()
    }

    /// Removes the queue's files and directory.
    pub fn destroy(self) -> io::Result<()> {
        for base in &self.files {
            fd_cache::forget(&self.path(*base));
        }
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// First offset whose record was stored at or after `ts`, using `ts_of`
    /// to read a record's store time (binary search; store times never
    /// decrease along the log).
    pub fn offset_at_time(&self, ts: i64, mut ts_of: impl FnMut(&CqEntry) -> Option<i64>) -> io::Result<u64> {
        let (mut lo, mut hi) = (self.min_offset, self.next);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let before = match self.entry(mid)? {
                Some(e) => ts_of(&e).is_some_and(|t| t < ts),
                None => false,
            };
            if before {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let Some(rest) = buf.get_mut(done..) else {
            break;
        };
        match file.read_at(rest, offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(log_offset: u64) -> CqEntry {
        CqEntry { log_offset, size: 100, tag_hash: log_offset * 3 }
    }

    #[test]
    fn a_detached_tail_is_read_from_memory_until_its_write_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q");
        let mut cq = ConsumeQueue::open(path.clone(), 4).expect("open");
        let entries: Vec<_> = (0..9).map(|i| entry(i * 100)).collect();
        cq.append(0, &entries[..6]).expect("append");
        assert_eq!(cq.tail_low(), Some(0));
        let first = cq.detach_tail().expect("a tail to write");
        assert_eq!(cq.tail_low(), None, "being written counts as written");
        assert!(cq.detach_tail().is_none(), "nothing new to detach");
        cq.append(6, &entries[6..8]).expect("append");
        assert_eq!(cq.tail_low(), Some(600), "only what came after");
        assert_eq!(cq.read(0, 8).expect("read"), entries[..8], "all readable before the write");
        let files = first.run().expect("write");
        assert_eq!(files.len(), 2, "two files of four entries: {files:?}");
        cq.tail_written(&first, true);
        assert_eq!(cq.read(0, 8).expect("read"), entries[..8], "the first six now from files");
        assert_eq!(ConsumeQueue::open(path.clone(), 4).expect("reopen").next_offset(), 6, "on disk");
        // A failed write: its entries count as unwritten again.
        let second = cq.detach_tail().expect("the last two");
        assert_eq!(cq.tail_low(), None);
        cq.tail_written(&second, false);
        assert_eq!(cq.tail_low(), Some(600));
        assert_eq!(cq.read(6, 2).expect("read"), entries[6..8]);
        // A flush while a write is out writes everything; the report then
        // must not drop entries appended after the flush.
        let third = cq.detach_tail().expect("again");
        cq.flush().expect("flush");
        cq.append(8, &entries[8..9]).expect("append");
        third.run().expect("write");
        cq.tail_written(&third, true);
        assert_eq!(cq.tail_low(), Some(800), "the entry after the flush stays");
        assert_eq!(cq.read(0, 9).expect("read"), entries, "every entry once, in order");
    }

    #[test]
    fn append_across_files_reopen_and_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q");
        let mut cq = ConsumeQueue::open(path.clone(), 4).expect("open");
        let entries: Vec<_> = (0..10).map(|i| entry(i * 100)).collect();
        cq.append(0, &entries[..3]).expect("append");
        cq.append(3, &entries[3..]).expect("append");
        assert!(cq.append(5, &entries[..1]).is_err(), "gaps are refused");
        assert_eq!(cq.read(2, 5).expect("read from memory"), entries[2..7].to_vec());
        cq.flush().expect("flush");
        drop(cq);
        let cq = ConsumeQueue::open(path, 4).expect("reopen");
        assert_eq!((cq.min_offset(), cq.next_offset()), (0, 10));
        assert_eq!(cq.read(2, 5).expect("read"), entries[2..7].to_vec());
        assert_eq!(cq.read(8, 5).expect("read"), entries[8..].to_vec());
        assert!(cq.read(10, 5).expect("read").is_empty());
    }

    #[test]
    fn torn_entry_is_cut_and_truncation_follows_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q");
        let mut cq = ConsumeQueue::open(path.clone(), 100).expect("open");
        let entries: Vec<_> = (0..10).map(|i| entry(i * 100)).collect();
        cq.append(0, &entries).expect("append");
        cq.flush().expect("flush");
        drop(cq);
        let file = std::fs::OpenOptions::new().write(true).open(path.join(file_name(0))).expect("f");
        file.set_len(10 * ENTRY_LEN - 7).expect("tear");
        let mut cq = ConsumeQueue::open(path, 100).expect("reopen");
        assert_eq!(cq.next_offset(), 9);
        cq.truncate_log_from(450).expect("truncate");
        assert_eq!(cq.next_offset(), 5);
        cq.append(5, &[entry(450)]).expect("append continues");
    }

    #[test]
    fn reads_span_files_and_the_unwritten_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cq = ConsumeQueue::open(dir.path().join("q"), 4).expect("open");
        let entries: Vec<_> = (0..10).map(|i| entry(i * 100)).collect();
        cq.append(0, &entries[..6]).expect("append");
        cq.flush().expect("flush");
        cq.append(6, &entries[6..]).expect("append");
        assert_eq!(cq.read(0, 100).expect("read"), entries);
        assert_eq!(cq.read(5, 3).expect("read"), entries[5..8].to_vec());
        assert_eq!(cq.read(7, 100).expect("read"), entries[7..].to_vec());
        let files = cq.take_dirty().expect("dirty");
        assert!(!files.is_empty());
        drop(cq);
        let cq = ConsumeQueue::open(dir.path().join("q"), 4).expect("reopen");
        assert_eq!(cq.read(0, 100).expect("read"), entries, "take_dirty wrote the tail");
    }

    #[test]
    fn retention_drops_whole_files_and_moves_the_minimum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cq = ConsumeQueue::open(dir.path().join("q"), 4).expect("open");
        let entries: Vec<_> = (0..10).map(|i| entry(i * 100)).collect();
        cq.append(0, &entries).expect("append");
        cq.flush().expect("flush");
        assert_eq!(cq.retain_from_log(550).expect("retain"), 1);
        assert_eq!(cq.min_offset(), 6);
        assert_eq!(cq.next_offset(), 10);
        assert_eq!(cq.files.len(), 2);
    }

    #[test]
    fn rebuilding_from_a_later_offset_leaves_a_hole_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q");
        let mut cq = ConsumeQueue::open(path.clone(), 4).expect("open");
        cq.append(6, &[entry(10), entry(20)]).expect("start later");
        cq.flush().expect("flush");
        drop(cq);
        let cq = ConsumeQueue::open(path, 4).expect("reopen");
        assert_eq!((cq.min_offset(), cq.next_offset()), (6, 8));
    }
}
