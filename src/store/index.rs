//! The key index: find messages by business key without scanning the log,
//! in RocketMQ's IndexFile shape. Each file holds a fixed slot table (hash of
//! `topic` + key → newest entry) and a fixed number of entries chained
//! newest to oldest (`key hash, log offset, store time, previous entry`), so
//! a lookup costs one slot read plus one read per entry on the chain, and a
//! file's size and speed do not change as the log grows: a full file is
//! sealed and a new one started.
//!
//! The active file lives in memory and is written at each checkpoint (new
//! entries, then the header naming the log offset it covers). At open,
//! entries at or past that offset are dropped and the chains are rebuilt
//! from the rest; the caller re-indexes the log from
//! [`KeyIndex::covered_to`]. So the active file's slot table is written only
//! when the file is sealed: random keys dirty nearly every page of it
//! between two checkpoints, and rewriting it each second cost more than the
//! inserts.
//!
//! Layout (little-endian), file `index/<20-digit sequence>`:
//! header 64 bytes: magic u32 "BKIX", version u32, slots u32, capacity u32,
//! count u32, reserved u32, begin_ts i64, end_ts i64, min_log u64,
//! covered_to u64, max_log u64; then `slots` × u32 (entry number + 1, 0 =
//! empty); then `capacity` × 32-byte entries: key_hash u64, log_offset u64,
//! store_ts i64, prev u32 (entry number + 1, 0 = end), reserved u32.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: u32 = 0x5849_4B42; // "BKIX"
const VERSION: u32 = 1;
const HEADER: u64 = 64;
const ENTRY: u64 = 32;

/// The hash a key is indexed under (topic and key together).
pub fn key_hash(topic: &str, key: &str) -> u64 {
    brook_proto::hash::fnv1a64_parts(&[topic.as_bytes(), b"\x01", key.as_bytes()])
}

/// One indexed key occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyEntry {
    /// [`key_hash`] of topic and key.
    pub hash: u64,
    /// Where the message is.
    pub log_offset: u64,
    /// When it was stored.
    pub store_ts: i64,
}

/// Sizes of each index file.
#[derive(Debug, Clone, Copy)]
pub struct IndexShape {
    /// Hash slots per file.
    pub slots: u32,
    /// Entries per file.
    pub capacity: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Header {
    count: u32,
    begin_ts: i64,
    end_ts: i64,
    min_log: u64,
    covered_to: u64,
    max_log: u64,
}

#[derive(Debug, Clone, Copy)]
struct Placed {
    entry: KeyEntry,
    prev: u32,
}

/// A sealed file: read with pread.
#[derive(Debug)]
struct Sealed {
    file: Arc<File>,
    path: PathBuf,
    slots: u32,
    header: Header,
}

#[derive(Debug)]
struct Active {
    file: File,
    seq: u64,
    shape: IndexShape,
    header: Header,
    slots: Vec<u32>,
    entries: Vec<Placed>,
    written: usize,
    /// Reused for the entries written at each checkpoint.
    scratch: Vec<u8>,
}

/// The key index of a store.
#[derive(Debug)]
pub struct KeyIndex {
    dir: PathBuf,
    shape: IndexShape,
    sealed: Vec<Sealed>,
    active: Active,
}

fn file_name(seq: u64) -> String {
    format!("{seq:020}")
}

fn read_header(file: &File) -> io::Result<(u32, u32, Header)> {
    let mut buf = [0u8; HEADER as usize];
    file.read_exact_at(&mut buf, 0)?;
    let u32_at = |p: usize| u32::from_le_bytes(buf[p..p + 4].try_into().unwrap_or_default());
    let u64_at = |p: usize| u64::from_le_bytes(buf[p..p + 8].try_into().unwrap_or_default());
    if u32_at(0) != MAGIC || u32_at(4) != VERSION {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not an index file"));
    }
    let header = Header {
        count: u32_at(16),
        begin_ts: u64_at(24) as i64,
        end_ts: u64_at(32) as i64,
        min_log: u64_at(40),
        covered_to: u64_at(48),
        max_log: u64_at(56),
    };
    Ok((u32_at(8), u32_at(12), header))
}

fn header_bytes(shape: IndexShape, h: &Header) -> [u8; HEADER as usize] {
    let mut buf = [0u8; HEADER as usize];
    buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    buf[4..8].copy_from_slice(&VERSION.to_le_bytes());
    buf[8..12].copy_from_slice(&shape.slots.to_le_bytes());
    buf[12..16].copy_from_slice(&shape.capacity.to_le_bytes());
    buf[16..20].copy_from_slice(&h.count.to_le_bytes());
    buf[24..32].copy_from_slice(&h.begin_ts.to_le_bytes());
    buf[32..40].copy_from_slice(&h.end_ts.to_le_bytes());
    buf[40..48].copy_from_slice(&h.min_log.to_le_bytes());
    buf[48..56].copy_from_slice(&h.covered_to.to_le_bytes());
    buf[56..64].copy_from_slice(&h.max_log.to_le_bytes());
    buf
}

fn entry_bytes(s: &Placed) -> [u8; ENTRY as usize] {
    let mut buf = [0u8; ENTRY as usize];
    buf[0..8].copy_from_slice(&s.entry.hash.to_le_bytes());
    buf[8..16].copy_from_slice(&s.entry.log_offset.to_le_bytes());
    buf[16..24].copy_from_slice(&s.entry.store_ts.to_le_bytes());
    buf[24..28].copy_from_slice(&s.prev.to_le_bytes());
    buf
}

fn parse_entry(buf: &[u8]) -> Placed {
    let u64_at = |p: usize| buf.get(p..p + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    let prev = buf.get(24..28).map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap_or_default()));
    Placed { entry: KeyEntry { hash: u64_at(0), log_offset: u64_at(8), store_ts: u64_at(16) as i64 }, prev }
}

fn entries_at(slots: u32) -> u64 {
    HEADER + 4 * u64::from(slots)
}

impl Active {
    fn create(dir: &Path, seq: u64, shape: IndexShape) -> io::Result<Active> {
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(dir.join(file_name(seq)))?;
        // Sparse: pages are allocated as they are written.
        file.set_len(entries_at(shape.slots) + ENTRY * u64::from(shape.capacity))?;
        let header = Header { min_log: u64::MAX, ..Header::default() };
        file.write_all_at(&header_bytes(shape, &header), 0)?;
        Ok(Active {
            file,
            seq,
            shape,
            header,
            slots: vec![0; shape.slots as usize],
            // Room for the whole file up front: growing a vector of millions
            // of entries copied and re-faulted it at every doubling.
            entries: Vec::with_capacity(shape.capacity as usize),
            written: 0,
            scratch: Vec::new(),
        })
    }

    /// Loads a file, keeping only entries below its `covered_to`, and
    /// rebuilds its chains from them.
    fn load(path: &Path, seq: u64) -> io::Result<Active> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let (slots, capacity, header) = read_header(&file)?;
        let shape = IndexShape { slots, capacity };
        let count = header.count.min(capacity) as usize;
        let mut raw = vec![0u8; count * ENTRY as usize];
        file.read_exact_at(&mut raw, entries_at(slots))?;
        let mut active = Active {
            file,
            seq,
            shape,
            header: Header { count: 0, min_log: u64::MAX, covered_to: header.covered_to, ..Header::default() },
            slots: vec![0; slots as usize],
            entries: Vec::with_capacity(capacity as usize),
            written: 0,
            scratch: Vec::new(),
        };
        for chunk in raw.chunks_exact(ENTRY as usize) {
            let stored = parse_entry(chunk);
            if stored.entry.log_offset < header.covered_to {
                active.insert(stored.entry);
            }
        }
        // The next flush rewrites the entries from the start, over any the
        // file held past `covered_to`.
        Ok(active)
    }

    fn full(&self) -> bool {
        self.entries.len() >= self.shape.capacity as usize
    }

    fn slot_of(&self, hash: u64) -> usize {
        (hash % u64::from(self.shape.slots)) as usize
    }

    /// Reads the slots `entries` will update. The slot table is larger than
    /// the CPU's caches and every key lands in a random slot: loads with no
    /// dependency between them miss in parallel, where inserting one by one
    /// waits for each miss in turn.
    fn warm(&self, entries: &[KeyEntry]) {
        let touched =
            entries.iter().fold(0u32, |acc, e| acc ^ self.slots.get(self.slot_of(e.hash)).copied().unwrap_or(0));
        std::hint::black_box(touched);
    }

    fn insert(&mut self, entry: KeyEntry) {
        let slot = self.slot_of(entry.hash);
        let prev = self.slots[slot];
        self.entries.push(Placed { entry, prev });
        self.slots[slot] = self.entries.len() as u32;
        let h = &mut self.header;
        if h.count == 0 {
            h.begin_ts = entry.store_ts;
        }
        h.count += 1;
        h.begin_ts = h.begin_ts.min(entry.store_ts);
        h.end_ts = h.end_ts.max(entry.store_ts);
        h.min_log = h.min_log.min(entry.log_offset);
        h.max_log = h.max_log.max(entry.log_offset);
    }

    /// Writes the new entries, the whole slot table when `seal` (the
    /// file is full and will be read from disk from now on), the header
    /// last, and syncs.
    fn flush(&mut self, covered_to: u64, seal: bool) -> io::Result<()> {
        // An idle broker checkpoints every second: nothing to write then.
        if !seal && self.written == self.entries.len() && covered_to <= self.header.covered_to {
            return Ok(());
        }
        let new = &self.entries[self.written.min(self.entries.len())..];
        if !new.is_empty() {
            self.scratch.clear();
            for s in new {
                self.scratch.extend_from_slice(&entry_bytes(s));
            }
            self.file.write_all_at(&self.scratch, entries_at(self.shape.slots) + ENTRY * self.written as u64)?;
            self.written = self.entries.len();
        }
        if seal {
            // In pieces: the table of a default file is 20 MB.
            for (i, chunk) in self.slots.chunks(1 << 16).enumerate() {
                self.scratch.clear();
                chunk.iter().for_each(|slot| self.scratch.extend_from_slice(&slot.to_le_bytes()));
                self.file.write_all_at(&self.scratch, HEADER + (i << 18) as u64)?;
            }
            self.scratch = Vec::new();
        }
        self.header.covered_to = self.header.covered_to.max(covered_to);
        self.file.write_all_at(&header_bytes(self.shape, &self.header), 0)?;
        self.file.sync_data()
    }
}

impl KeyIndex {
    /// Opens (or creates) the index under `dir`.
    pub fn open(dir: PathBuf, shape: IndexShape) -> io::Result<KeyIndex> {
        std::fs::create_dir_all(&dir)?;
        let mut seqs: Vec<u64> =
            std::fs::read_dir(&dir)?.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
        seqs.sort_unstable();
        let shape = IndexShape { slots: shape.slots.max(1), capacity: shape.capacity.max(1) };
        let active = match seqs.pop() {
            Some(seq) => match Active::load(&dir.join(file_name(seq)), seq) {
                Ok(active) => active,
                // A file torn before its first header: start it again.
                Err(_) => Active::create(&dir, seq, shape)?,
            },
            None => Active::create(&dir, 0, shape)?,
        };
        let mut sealed = Vec::new();
        for seq in seqs {
            let path = dir.join(file_name(seq));
            let file = File::open(&path)?;
            match read_header(&file) {
                Ok((slots, _, header)) => sealed.push(Sealed { file: Arc::new(file), path, slots, header }),
                Err(_) => std::fs::remove_file(&path)?,
            }
        }
        Ok(KeyIndex { dir, shape, sealed, active })
    }

    /// Every entry below this log offset is indexed (as of the last flush).
    pub fn covered_to(&self) -> u64 {
        self.active.header.covered_to
    }

    /// Indexes one key occurrence.
    pub fn insert(&mut self, entry: KeyEntry) -> io::Result<()> {
        if self.active.full() {
            let covered = self.active.header.covered_to;
            self.active.flush(covered, true)?;
            let next = Active::create(&self.dir, self.active.seq + 1, self.shape)?;
            let old = std::mem::replace(&mut self.active, next);
            self.active.header.covered_to = covered;
            let path = self.dir.join(file_name(old.seq));
            self.sealed.push(Sealed { file: Arc::new(old.file), path, slots: old.shape.slots, header: old.header });
        }
        self.active.insert(entry);
        Ok(())
    }

    /// Inserts `entries` in order, warming the slots of each few ahead.
    pub fn insert_all(&mut self, entries: &[KeyEntry]) -> io::Result<()> {
        const AHEAD: usize = 32;
        for chunk in entries.chunks(AHEAD) {
            self.active.warm(chunk);
            for entry in chunk {
                self.insert(*entry)?;
            }
        }
        Ok(())
    }

    /// Makes everything inserted durable and records that every key below
    /// `covered_to` is in.
    pub fn flush(&mut self, covered_to: u64) -> io::Result<()> {
        self.active.flush(covered_to, false)
    }

    /// Log offsets of entries for `hash` stored in `[begin_ts, end_ts]`,
    /// newest first, at most `max` (duplicates from a replay removed).
    pub fn lookup(&self, hash: u64, begin_ts: i64, end_ts: i64, max: usize) -> io::Result<Vec<u64>> {
        let mut out: Vec<u64> = Vec::new();
        let wanted = |e: &KeyEntry| e.hash == hash && e.store_ts >= begin_ts && e.store_ts <= end_ts;
        let a = &self.active;
        let mut at = a.slots[(hash % u64::from(a.shape.slots)) as usize];
        while at != 0 && out.len() < max {
            let Some(s) = a.entries.get(at as usize - 1) else { break };
            if wanted(&s.entry) && !out.contains(&s.entry.log_offset) {
                out.push(s.entry.log_offset);
            }
            at = s.prev;
        }
        for f in self.sealed.iter().rev() {
            if out.len() >= max {
                break;
            }
            if f.header.count == 0 || f.header.end_ts < begin_ts || f.header.begin_ts > end_ts {
                continue;
            }
            let mut slot = [0u8; 4];
            f.file.read_exact_at(&mut slot, HEADER + 4 * (hash % u64::from(f.slots)))?;
            let mut at = u32::from_le_bytes(slot);
            let mut buf = [0u8; ENTRY as usize];
            while at != 0 && out.len() < max {
                f.file.read_exact_at(&mut buf, entries_at(f.slots) + ENTRY * u64::from(at - 1))?;
                let s = parse_entry(&buf);
                if wanted(&s.entry) && !out.contains(&s.entry.log_offset) {
                    out.push(s.entry.log_offset);
                }
                at = s.prev;
            }
        }
        Ok(out)
    }

    /// Deletes sealed files whose entries all point below `log_min`
    /// (retention deleted those segments).
    pub fn retain(&mut self, log_min: u64) -> io::Result<usize> {
        let mut removed = 0;
        let mut keep = Vec::with_capacity(self.sealed.len());
        for f in std::mem::take(&mut self.sealed) {
            if f.header.max_log < log_min {
                std::fs::remove_file(&f.path)?;
                removed += 1;
            } else {
                keep.push(f);
            }
        }
        self.sealed = keep;
        Ok(removed)
    }

    /// Index files (sealed and active).
    pub fn files(&self) -> usize {
        self.sealed.len() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, log_offset: u64, ts: i64) -> KeyEntry {
        KeyEntry { hash: key_hash("t", key), log_offset, store_ts: ts }
    }

    #[test]
    fn lookups_cross_sealed_files_newest_first_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shape = IndexShape { slots: 8, capacity: 4 };
        let mut index = KeyIndex::open(dir.path().join("index"), shape).expect("open");
        for i in 0..10u64 {
            index.insert(entry(if i % 3 == 0 { "k" } else { "other" }, i * 100, 1_000 + i as i64)).expect("insert");
        }
        assert!(index.files() >= 3, "small files roll");
        let hash = key_hash("t", "k");
        assert_eq!(index.lookup(hash, 0, i64::MAX, 10).expect("lookup"), vec![900, 600, 300, 0]);
        assert_eq!(index.lookup(hash, 1_003, 1_006, 10).expect("lookup"), vec![600, 300]);
        assert_eq!(index.lookup(hash, 0, i64::MAX, 2).expect("lookup"), vec![900, 600]);
        index.flush(1_000).expect("flush");
        drop(index);
        let index = KeyIndex::open(dir.path().join("index"), shape).expect("reopen");
        assert_eq!(index.covered_to(), 1_000);
        assert_eq!(index.lookup(hash, 0, i64::MAX, 10).expect("lookup"), vec![900, 600, 300, 0]);
        // Retention below the first sealed file's entries deletes it.
        let mut index = index;
        assert_eq!(index.retain(301).expect("retain"), 1);
        assert_eq!(index.lookup(hash, 0, i64::MAX, 10).expect("lookup"), vec![900, 600]);
    }

    #[test]
    fn entries_past_the_covered_offset_are_dropped_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shape = IndexShape { slots: 16, capacity: 100 };
        let mut index = KeyIndex::open(dir.path().join("index"), shape).expect("open");
        index.insert(entry("k", 10, 1)).expect("insert");
        index.flush(20).expect("flush");
        // Written but not covered (a crash before the checkpoint).
        index.insert(entry("k", 30, 2)).expect("insert");
        index.active.flush(20, false).expect("write without covering");
        drop(index);
        let mut index = KeyIndex::open(dir.path().join("index"), shape).expect("reopen");
        assert_eq!(index.covered_to(), 20);
        assert_eq!(index.lookup(key_hash("t", "k"), 0, i64::MAX, 10).expect("lookup"), vec![10]);
        // The caller re-indexes from 20; a replayed entry is not doubled.
        index.insert(entry("k", 30, 2)).expect("replay");
        assert_eq!(index.lookup(key_hash("t", "k"), 0, i64::MAX, 10).expect("lookup"), vec![30, 10]);
    }
}
