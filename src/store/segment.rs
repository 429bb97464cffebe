//! Commit-log segment files: fixed size, named by their 20-digit start offset,
//! shared between the one writer and many readers through [`SegmentSet`], and
//! prepared ahead of the writer by the [`Preallocator`].
//!
//! The preallocator prepares the next segment before the writer needs it,
//! asked once the active segment is half written.
//! With sync flush it fills it with real zeros: an fdatasync over
//! already-allocated, already-written blocks has no file metadata to carry and
//! runs about twice as fast as one over a growing or merely fallocated file.
//! With async flush, where fdatasyncs are rare, writing every segment twice
//! would halve the write bandwidth instead, so it only fallocates.

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    OpenOptions::new().read(true).write(true).open(dir.join(segment_name(base)))
}

/// Creates a segment at full size without writing it (sparse). Used only when
/// no preallocated file is ready, such as the very first segment.
pub fn create_sparse(dir: &Path, base: u64, size: u64) -> io::Result<File> {
    let file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.join(segment_name(base)))?;
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
/// real name. The zeros go through O_DIRECT where the filesystem allows it:
/// no page-cache copy (this thread would otherwise burn as much CPU as the
/// writer) and no cache pollution.
pub fn create_zeroed(dir: &Path, base: u64, size: u64) -> io::Result<()> {
    let final_path = dir.join(segment_name(base));
    if final_path.exists() {
        return Ok(());
    }
    let tmp = dir.join(format!("{}.tmp", segment_name(base)));
    let direct = size % 4096 == 0;
    let opened = if direct {
        OpenOptions::new().write(true).create(true).truncate(true).custom_flags(libc::O_DIRECT).open(&tmp).ok()
    } else {
        None
    };
    let file = match opened {
        Some(file) => file,
        None => OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?,
    };
    // A failure (a full disk, say) leaves no half-made file taking space.
    fill_zeros(file, &tmp, size).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    fs::rename(&tmp, &final_path)?;
    sync_dir(dir)
}

/// Writes `size` zeros into `file` (opened on `tmp`) and syncs it.
fn fill_zeros(mut file: File, tmp: &Path, size: u64) -> io::Result<()> {
    let zeros = AlignedZeros::new(ZERO_CHUNK);
    let mut left = size;
    while left > 0 {
        let n = left.min(ZERO_CHUNK as u64) as usize;
        match file.write_all(zeros.slice(n)) {
            Ok(()) => left -= n as u64,
            // O_DIRECT refused mid-way (alignment rules differ by
            // filesystem): finish through the page cache.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let done = size - left;
                file = OpenOptions::new().write(true).open(tmp)?;
                std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(done))?;
                let chunk = vec![0u8; ZERO_CHUNK];
                while left > 0 {
                    let n = left.min(ZERO_CHUNK as u64) as usize;
                    file.write_all(chunk.get(..n).unwrap_or(&chunk))?;
                    left -= n as u64;
                }
            }
            Err(e) => return Err(e),
        }
    }
    file.sync_all()
}

/// Creates a segment with its blocks allocated but not written
/// (`fallocate`): no disk bandwidth spent, but the first write to each block
/// turns an unwritten extent into a written one, metadata an fdatasync must
/// then carry. Right for async flush, where fdatasyncs are rare.
pub fn create_fallocated(dir: &Path, base: u64, size: u64) -> io::Result<()> {
    let final_path = dir.join(segment_name(base));
    if final_path.exists() {
        return Ok(());
    }
    let tmp = dir.join(format!("{}.tmp", segment_name(base)));
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
    let allocated = allocate(&file, size).and_then(|()| file.sync_all());
    if let Err(e) = allocated {
        // A full disk leaves no half-made file taking space.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &final_path)?;
    sync_dir(dir)
}

/// Reserves `size` bytes of blocks for `file`. Out of space is an error:
/// a segment whose blocks are not there could run out half way. Only a
/// file system without `fallocate` gets a plain full-size file.
fn allocate(file: &File, size: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(size).map_err(|_| io::Error::other("segment size overflows off_t"))?;
    // SAFETY: fallocate on a descriptor we own.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) => file.set_len(size),
        _ => Err(err),
    }
}

const ZERO_CHUNK: usize = 1 << 20;

/// A zeroed buffer aligned for O_DIRECT.
struct AlignedZeros {
    ptr: std::ptr::NonNull<u8>,
    layout: std::alloc::Layout,
}

impl AlignedZeros {
    fn new(len: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap_or_else(|_| std::alloc::Layout::new::<u8>());
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = std::ptr::NonNull::new(raw) else { std::alloc::handle_alloc_error(layout) };
        Self { ptr, layout }
    }

    fn slice(&self, len: usize) -> &[u8] {
        // SAFETY: the allocation is `layout.size()` zeroed bytes, owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), len.min(self.layout.size())) }
    }
}

impl Drop for AlignedZeros {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// The largest page-cache folio Linux makes for a file (a PMD, on x86-64
/// and arm64 with 4 KiB pages).
const MAX_FOLIO_BYTES: u64 = 2 << 20;

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
    /// Where a crash recovery would start re-reading the log (the last
    /// checkpoint's durable point).
    replay_from: AtomicU64,
}

impl SegmentSet {
    /// An empty set for segments of `segment_bytes` in `dir`.
    pub fn new(dir: PathBuf, segment_bytes: u64) -> Self {
        Self { dir, segment_bytes, segments: RwLock::new(BTreeMap::new()), replay_from: AtomicU64::new(0) }
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
        self.segments.write().insert(base, SegmentEntry { file, last_store_ts: None });
    }

    /// Records the newest store time of a sealed segment (it only ever
    /// grows: a slave learns it from the records it applies, and its
    /// writer's roll, which parses none, must not set it back).
    pub fn set_last_store_ts(&self, base: u64, ts: i64) {
        if let Some(entry) = self.segments.write().get_mut(&base) {
            entry.last_store_ts = Some(entry.last_store_ts.map_or(ts, |had| had.max(ts)));
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
        self.segments.read().iter().map(|(b, e)| (*b, e.clone())).collect()
    }

    /// Smallest offset still stored (the first segment's base).
    pub fn min_offset(&self) -> u64 {
        self.segments.read().keys().next().copied().unwrap_or(0)
    }

    /// Notes where a crash recovery would start re-reading the log.
    pub fn set_replay_from(&self, offset: u64) {
        self.replay_from.fetch_max(offset, Ordering::Relaxed);
    }

    /// Where a crash recovery would start re-reading the log: its page
    /// cache is kept from here on, so a restart after a crash of the broker
    /// (not of the machine) rescans from memory.
    pub fn replay_from(&self) -> u64 {
        self.replay_from.load(Ordering::Relaxed)
    }

    /// Drops the page cache of the log's bytes `from..to`. Dirty pages are
    /// not dropped (the kernel writes them back first), so this never loses
    /// data; a later read of the range goes to the disk.
    ///
    /// The kernel caches a file in folios of up to 2 MiB and leaves out any
    /// folio the range only partly covers. The range therefore starts at
    /// the 2 MiB boundary of the segment file below `from`: a folio that the
    /// previous drop's end cut in two lies wholly inside this one
    /// (re-walking pages already dropped costs next to nothing).
    pub fn drop_cached(&self, from: u64, to: u64) -> io::Result<()> {
        let base = self.base_of(from);
        let mut at = base + (from - base) / MAX_FOLIO_BYTES * MAX_FOLIO_BYTES;
        while at < to {
            let base = self.base_of(at);
            let end = to.min(base + self.segment_bytes);
            // A segment already deleted by retention has nothing to drop.
            if let Some(file) = self.file(base) {
                let (offset, len) = ((at - base) as libc::off_t, (end - at) as libc::off_t);
                // SAFETY: an advisory call on an open descriptor.
                let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
                if rc != 0 {
                    return Err(io::Error::from_raw_os_error(rc));
                }
            }
            at = end;
        }
        Ok(())
    }

    /// Bytes of all segment files.
    pub fn total_bytes(&self) -> u64 {
        self.segments.read().len() as u64 * self.segment_bytes
    }
}

type Request = (u64, oneshot::Sender<io::Result<()>>);

/// How the preallocator prepares a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prealloc {
    /// Real zeros: fastest fdatasyncs later (sync flush), at the cost of
    /// writing every segment twice.
    Zeroed,
    /// `fallocate`: no extra writes (async flush).
    Fallocated,
}

/// Prepares segments on its own thread, ahead of the writer.
#[derive(Debug)]
pub struct Preallocator {
    tx: mpsc::Sender<Request>,
}

impl Preallocator {
    /// Starts the preallocation thread for segments of `size` in `dir`.
    pub fn start(dir: PathBuf, size: u64, how: Prealloc) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new().name("brook-prealloc".into()).spawn(move || {
            for (base, reply) in rx {
                let made = match how {
                    Prealloc::Zeroed => create_zeroed(&dir, base, size),
                    Prealloc::Fallocated => create_fallocated(&dir, base, size),
                };
                let _ = reply.send(made);
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

    /// Whether the page at `at` of `file` is in the page cache.
    fn cached(file: &File, at: u64) -> bool {
        let mut byte = [0u8; 1];
        let iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
        // SAFETY: a read into a local buffer on an open descriptor.
        unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, at as libc::off_t, libc::RWF_NOWAIT) == 1 }
    }

    /// Whether a whole-file drop empties the page cache here at all.
    fn evicts_at_all() -> bool {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = File::options().read(true).write(true).create(true).truncate(true).open(dir.path().join("probe"));
        let file = file.expect("probe file");
        file.write_all_at(&[1u8; 4096], 0).expect("write");
        file.sync_data().expect("sync");
        (0..5).any(|_| {
            // SAFETY: an advisory call on an open descriptor.
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            let gone = !cached(&file, 0);
            std::thread::sleep(std::time::Duration::from_millis(20));
            gone
        })
    }

    #[test]
    fn a_drop_that_ends_inside_a_folio_is_finished_by_the_next() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let set = SegmentSet::new(dir.path().to_path_buf(), 65536);
        create_sparse(dir.path(), 0, 65536).expect("create");
        let file = Arc::new(open_segment(dir.path(), 0).expect("open"));
        set.insert(0, file.clone());
        // Writes of 20 KiB make the kernel cache the file in large folios
        // (where the file system supports them).
        for chunk in 0..3u64 {
            file.write_all_at(&[7u8; 20 << 10], chunk * (20 << 10)).expect("write");
        }
        file.sync_data().expect("sync");
        // The writer drops in steps that end wherever the window's edge is.
        // The kernel may skip a page whose writeback is just ending, which
        // is why the writer repeats each step; so does this test.
        if !evicts_at_all() {
            eprintln!("skipped: this file system keeps its pages whatever posix_fadvise says (tmpfs?)");
            return;
        }
        set.drop_cached(0, 5000).expect("drop");
        let mut tries = 0;
        loop {
            set.drop_cached(5000, 60000).expect("drop");
            if !cached(&file, 0) {
                break;
            }
            tries += 1;
            assert!(tries < 5, "the first page's folio, cut by the first step, is still cached");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
