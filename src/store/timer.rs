//! The timer wheel's disk level: pending exact-time messages bucketed by the
//! minute they are due, one append-only file per minute
//! (`timer/<minute since the epoch>`, 20-byte entries: due ms, log offset,
//! size). Memory holds only the minutes about to fire; millions of pending
//! timers cost disk, not RAM, and a bucket is deleted once its minute has
//! fired. The buckets are derived from the timer topic's consume queue, so a
//! lost append is re-made from it (duplicates are dropped on load).

use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Mutex;

/// Width of one bucket.
pub const BUCKET_MS: i64 = 60_000;
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

/// The bucket a due time falls in.
pub fn bucket_of(due: i64) -> i64 {
    due.div_euclid(BUCKET_MS)
}

/// The bucket files.
#[derive(Debug)]
pub struct Buckets {
    dir: PathBuf,
    dirty: Mutex<HashSet<i64>>,
}

impl Buckets {
    /// The buckets under `dir` (created if missing).
    pub fn open(dir: PathBuf) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, dirty: Mutex::new(HashSet::new()) })
    }

    fn path(&self, bucket: i64) -> PathBuf {
        self.dir.join(bucket.to_string())
    }

    /// Appends entries to their buckets (page cache; see [`Buckets::sync`]).
    pub fn append(&self, entries: &[TimerEntry]) -> io::Result<()> {
        let mut by_bucket: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
        for e in entries {
            let buf = by_bucket.entry(bucket_of(e.due)).or_default();
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
        Ok(())
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
        let buckets = Buckets::open(dir.path().join("timer")).expect("open");
        let a = TimerEntry { due: 60_000 * 5 + 10, log_offset: 100, size: 90 };
        let b = TimerEntry { due: 60_000 * 5 + 59_999, log_offset: 200, size: 91 };
        let c = TimerEntry { due: 60_000 * 6, log_offset: 300, size: 92 };
        buckets.append(&[a, b, c]).expect("append");
        buckets.append(&[b]).expect("append again (a replay after a crash)");
        assert_eq!(buckets.list().expect("list"), vec![5, 6]);
        assert_eq!(buckets.load(5).expect("load"), vec![a, b]);
        assert_eq!(buckets.load(6).expect("load"), vec![c]);
        buckets.sync().expect("sync");
        buckets.remove(5).expect("remove");
        assert_eq!(buckets.list().expect("list"), vec![6]);
        assert!(buckets.load(5).expect("load missing").is_empty());
    }
}

/// Everything delayed delivery keeps besides the log: the level
/// schedulers' and the wheel's progress files and the wheel's buckets. The
/// checkpoint syncs them after the log, so a synced progress never points
/// past messages a power loss could take back.
#[derive(Debug)]
pub struct DelayFiles {
    /// Progress of each level (index 0 is level 1), then the wheel's.
    pub progress: Vec<std::sync::Arc<crate::store::progress::ProgressFile>>,
    /// The wheel's buckets.
    pub buckets: std::sync::Arc<Buckets>,
}

impl DelayFiles {
    /// Buckets first (the wheel's progress names what they hold), then
    /// every progress file.
    pub fn sync(&self) -> io::Result<()> {
        self.buckets.sync()?;
        self.progress.iter().try_for_each(|p| p.sync())
    }
}
