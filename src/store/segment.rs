//! Commit-log segment files: fixed size, named by their 20-digit start offset,
//! shared between the one writer and many readers through [`SegmentSet`], and
//! prepared ahead of the writer by the [`Preallocator`].
//!
//! The preallocator fills the next segment with real zeros and syncs it before
//! the writer needs it: an fdatasync over already-allocated, already-written
//! blocks has no file metadata to carry and runs about twice as fast as one
//! over a growing or merely fallocated file.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

/// File name of the segment starting at `base`.
pub fn segment_name(base: u64) -> String {
    format!("{base:020}")
}

/// Start offsets of the segment files in `dir`, ascending. Leftover `.tmp`
/// files from an interrupted preallocation are removed.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".tmp") {
            fs::remove_file(entry.path())?;
            continue;
        }
        if name.len() == 20 {
            if let Ok(base) = name.parse::<u64>() {
                bases.push(base);
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Opens a segment for reading and writing.
pub fn open_segment(dir: &Path, base: u64) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(segment_name(base)))
}

/// Creates a segment at full size without writing it (sparse). Used only when
/// no preallocated file is ready, such as the very first segment.
pub fn create_sparse(dir: &Path, base: u64, size: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(segment_name(base)))?;
    file.set_len(size)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(file)
}

/// fsyncs a directory so a created, renamed or removed entry is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates a segment filled with real zeros: written as `.tmp`, synced, then
/// renamed into place, so a crash never leaves a half-filled segment under a
/// real name.
pub fn create_zeroed(dir: &Path, base: u64, size: u64) -> io::Result<()> {
    let final_path = dir.join(segment_name(base));
    if final_path.exists() {
        return Ok(());
    }
    let tmp = dir.join(format!("{}.tmp", segment_name(base)));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    let chunk = vec![0u8; (1 << 20).min(size as usize)];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(chunk.get(..n).unwrap_or(&chunk))?;
        left -= n as u64;
    }
    file.sync_all()?;
    fs::rename(&tmp, &final_path)?;
    sync_dir(dir)
}

/// Metadata of one segment kept in memory.
#[derive(Debug, Clone)]
pub struct SegmentEntry {
    /// The open file (readers pread it, the writer writes it).
    pub file: Arc<File>,
    /// Store time of the newest record, once known exactly (set when the
    /// writer seals the segment, or read by recovery). Retention falls back
    /// to the next segment's first record, an upper bound.
    pub last_store_ts: Option<i64>,
}

/// The segments currently on disk, shared by the writer (which adds) and
/// retention (which removes) with readers (which look up).
#[derive(Debug)]
pub struct SegmentSet {
    dir: PathBuf,
    segment_bytes: u64,
    segments: RwLock<BTreeMap<u64, SegmentEntry>>,
}

impl SegmentSet {
    /// An empty set for segments of `segment_bytes` in `dir`.
    pub fn new(dir: PathBuf, segment_bytes: u64) -> Self {
        Self {
            dir,
            segment_bytes,
            segments: RwLock::new(BTreeMap::new()),
        }
    }

    /// The commit-log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Size of every segment.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// Base offset of the segment holding `offset`.
    pub fn base_of(&self, offset: u64) -> u64 {
        offset - offset % self.segment_bytes
    }

    /// Adds (or replaces) a segment.
    pub fn insert(&self, base: u64, file: Arc<File>) {
        self.segments.write().insert(
            base,
            SegmentEntry {
                file,
                last_store_ts: None,
            },
        );
    }

    /// Records the newest store time of a sealed segment.
    pub fn set_last_store_ts(&self, base: u64, ts: i64) {
        if let Some(entry) = self.segments.write().get_mut(&base) {
            entry.last_store_ts = Some(ts);
        }
    }

    /// The file of the segment starting at `base`.
    pub fn file(&self, base: u64) -> Option<Arc<File>> {
        self.segments.read().get(&base).map(|e| e.file.clone())
    }

    /// Removes a segment from the set (the caller deletes the file).
    pub fn remove(&self, base: u64) -> Option<SegmentEntry> {
        self.segments.write().remove(&base)
    }

    /// Bases, ascending.
    pub fn bases(&self) -> Vec<u64> {
        self.segments.read().keys().copied().collect()
    }

    /// A snapshot of every segment.
    pub fn snapshot(&self) -> Vec<(u64, SegmentEntry)> {
        self.segments
            .read()
            .iter()
            .map(|(b, e)| (*b, e.clone()))
            .collect()
    }

    /// Smallest offset still stored (the first segment's base).
    pub fn min_offset(&self) -> u64 {
        self.segments.read().keys().next().copied().unwrap_or(0)
    }

    /// Bytes of all segment files.
    pub fn total_bytes(&self) -> u64 {
        self.segments.read().len() as u64 * self.segment_bytes
    }
}

type Request = (u64, oneshot::Sender<io::Result<()>>);

/// Prepares zero-filled segments on its own thread, ahead of the writer.
#[derive(Debug)]
pub struct Preallocator {
    tx: mpsc::Sender<Request>,
}

impl Preallocator {
    /// Starts the preallocation thread for segments of `size` in `dir`.
    pub fn start(dir: PathBuf, size: u64) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("brook-prealloc".into())
            .spawn(move || {
                for (base, reply) in rx {
                    let _ = reply.send(create_zeroed(&dir, base, size));
                }
            })?;
        Ok(Self { tx })
    }

    /// Asks for the segment at `base`; the receiver resolves when it exists.
    pub fn prepare(&self, base: u64) -> oneshot::Receiver<io::Result<()>> {
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::SendError((_, reply))) = self.tx.send((base, reply)) {
            let _ = reply.send(Err(io::Error::other("preallocator stopped")));
        }
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_segments_are_full_size_and_listed_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        create_zeroed(dir.path(), 8192, 8192).expect("create");
        create_sparse(dir.path(), 0, 8192).expect("create");
        fs::write(dir.path().join("00000000000000016384.tmp"), b"x").expect("tmp");
        assert_eq!(list_segments(dir.path()).expect("list"), vec![0, 8192]);
        let meta = fs::metadata(dir.path().join(segment_name(8192))).expect("meta");
        assert_eq!(meta.len(), 8192);
        assert!(!dir.path().join("00000000000000016384.tmp").exists());
    }
}
