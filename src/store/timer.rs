//! The timer wheel's disk level: pending exact-time messages bucketed by the
//! span of time they are due in (a minute by default), one append-only file
//! per bucket (`timer/<bucket start, ms since the epoch>`, 20-byte entries:
//! due ms, log offset, size). Memory holds only the buckets about to fire;
//! millions of pending timers cost disk, not RAM, and a bucket is deleted
//! once it has fired. The buckets are derived from the timer topic's
//! consume queue, so a lost append is re-made from it (duplicates are
//! dropped on load). Files are named by start time, not index, so a changed
//! bucket width still finds every old bucket.

use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Mutex;

const ENTRY: usize = 20;

/// A pending timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerEntry {
    /// When it is due, ms since the epoch.
    pub due: i64,
    /// Where the message waits in the log.
    pub log_offset: u64,
    /// Its record size.
    pub size: u32,
}

/// The bucket files.
#[derive(Debug)]
pub struct Buckets {
    dir: PathBuf,
    width: i64,
    dirty: Mutex<HashSet<i64>>,
}

impl Buckets {
    /// The buckets under `dir` (created if missing), `width_ms` wide.
    pub fn open(dir: PathBuf, width_ms: u64) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let width = i64::try_from(width_ms.max(1)).unwrap_or(i64::MAX);
        Ok(Self { dir, width, dirty: Mutex::new(HashSet::new()) })
    }

    /// Bucket width in ms.
    pub fn width(&self) -> i64 {
        self.width
    }

    /// Start of the bucket a due time falls in.
    pub fn start_of(&self, due: i64) -> i64 {
        due - due.rem_euclid(self.width)
    }

    fn path(&self, bucket: i64) -> PathBuf {
        self.dir.join(bucket.to_string())
    }

    /// Appends entries to their buckets (page cache; see [`Buckets::sync`])
    /// and returns the buckets touched.
    pub fn append(&self, entries: &[TimerEntry]) -> io::Result<Vec<i64>> {
        let mut by_bucket: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
        for e in entries {
            let buf = by_bucket.entry(self.start_of(e.due)).or_default();
            buf.extend_from_slice(&e.due.to_le_bytes());
            buf.extend_from_slice(&e.log_offset.to_le_bytes());
            buf.extend_from_slice(&e.size.to_le_bytes());
        }
        for (bucket, bytes) in &by_bucket {
            OpenOptions::new().create(true).append(true).open(self.path(*bucket))?.write_all(bytes)?;
        }
        if let Ok(mut dirty) = self.dirty.lock() {
            dirty.extend(by_bucket.keys());
        }
        Ok(by_bucket.into_keys().collect())
    }

    /// Every entry of a bucket, duplicates (same log offset) dropped; a torn
    /// tail entry is ignored.
    pub fn load(&self, bucket: i64) -> io::Result<Vec<TimerEntry>> {
        let bytes = match std::fs::read(self.path(bucket)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(bytes.len() / ENTRY);
        for chunk in bytes.chunks_exact(ENTRY) {
            let num = |r: std::ops::Range<usize>| {
                chunk.get(r).map(|b| b.iter().rev().fold(0u64, |a, x| a << 8 | u64::from(*x)))
            };
            let (Some(due), Some(log_offset), Some(size)) = (num(0..8), num(8..16), num(16..20)) else { continue };
            if seen.insert(log_offset) {
                out.push(TimerEntry { due: due as i64, log_offset, size: size as u32 });
            }
        }
        Ok(out)
    }

    /// Buckets on disk, oldest first.
    pub fn list(&self) -> io::Result<Vec<i64>> {
        let mut out: Vec<i64> =
            std::fs::read_dir(&self.dir)?.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Deletes a bucket whose minute has fired.
    pub fn remove(&self, bucket: i64) -> io::Result<()> {
        if let Ok(mut dirty) = self.dirty.lock() {
            dirty.remove(&bucket);
        }
        match std::fs::remove_file(self.path(bucket)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Fsyncs the buckets appended to since the last sync.
    pub fn sync(&self) -> io::Result<()> {
        let dirty: Vec<i64> = self.dirty.lock().map(|mut d| d.drain().collect()).unwrap_or_default();
        if dirty.is_empty() {
            return Ok(());
        }
        // A bucket removed meanwhile is simply not there.
        for bucket in dirty {
            match std::fs::File::open(self.path(bucket)) {
                Ok(f) => f.sync_data()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_land_in_their_minute_and_duplicates_load_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let buckets = Buckets::open(dir.path().join("timer"), 60_000).expect("open");
        let (m5, m6) = (60_000 * 5, 60_000 * 6);
        let a = TimerEntry { due: m5 + 10, log_offset: 100, size: 90 };
        let b = TimerEntry { due: m5 + 59_999, log_offset: 200, size: 91 };
        let c = TimerEntry { due: m6, log_offset: 300, size: 92 };
        assert_eq!(buckets.append(&[a, b, c]).expect("append"), vec![m5, m6]);
        buckets.append(&[b]).expect("append again (a replay after a crash)");
        assert_eq!(buckets.list().expect("list"), vec![m5, m6]);
        assert_eq!(buckets.load(m5).expect("load"), vec![a, b]);
        assert_eq!(buckets.load(m6).expect("load"), vec![c]);
        buckets.sync().expect("sync");
        buckets.remove(m5).expect("remove");
        assert_eq!(buckets.list().expect("list"), vec![m6]);
        assert!(buckets.load(m5).expect("load missing").is_empty());
        // Another width still lists the old buckets by their start.
        let wider = Buckets::open(dir.path().join("timer"), 3_600_000).expect("reopen");
        assert_eq!(wider.list().expect("list"), vec![m6]);
        assert_eq!(wider.start_of(m6 + 5), 0);
    }
}
