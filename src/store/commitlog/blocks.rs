//! Writes carried on with zeros to the end of their last file-system block,
//! where segments are filled with zeros ahead of the writer (sync flush).
//!
//! Those zeros go through O_DIRECT and leave nothing in the page cache, so
//! a write that covers part of a block the kernel does not hold makes it
//! read the block from disk first — synchronously, on the writer's thread,
//! once per 4 KiB of log (every ~20 small records), beside the fdatasyncs
//! on the same disk. Carrying the write on to the block's end with the
//! zeros already on disk leaves the block whole in the cache, so the writes
//! after it, which start inside it, read nothing. The log's position is
//! unchanged: the zeros lie past it, where zeros already are.
//!
//! Fallocated and sparse segments need none of this: the kernel knows their
//! unwritten blocks hold zeros and reads nothing.

use crate::io::{Buf, WriteJob};
use std::fs::File;
use std::os::unix::fs::MetadataExt;

/// The largest block carried on to: zeros enough for any of them.
const MAX_BLOCK: u64 = 64 * 1024;

/// Allocated, not a `static` array: that would sit in the executable's
/// read-only data, and its first use could read a page of the executable
/// from disk on the writer's thread (seen as a 4 KiB read in the test
/// below).
static ZEROS: std::sync::LazyLock<bytes::Bytes> =
    std::sync::LazyLock::new(|| bytes::Bytes::from(vec![0u8; MAX_BLOCK as usize]));

/// The file system's block size for `file` when it is one zeros can be
/// carried on to (a power of two up to 64 KiB), else none.
pub(super) fn block_of(file: &File) -> Option<u64> {
    let block = file.metadata().ok()?.blksize();
    (block.is_power_of_two() && (512..=MAX_BLOCK).contains(&block)).then_some(block)
}

/// Carries the job's last write on to the end of the block it ends in, no
/// further than `file_end` (the segment's size). A write that starts inside
/// the block it ends in needs nothing: an earlier write left that block
/// whole in the cache.
pub(super) fn carry_to_block_end(job: &mut WriteJob, block: u64, file_end: u64) {
    let Some(write) = job.writes.last_mut() else { return };
    let start = write.offset;
    let end = start + write.len();
    let carried = pad_len(start, end, block, file_end);
    if carried == 0 {
        return;
    }
    job.bufs.push(Buf::Shared(ZEROS.slice(..carried)));
    write.slices.push(crate::io::Slice { buf: job.bufs.len() - 1, start: 0, end: carried });
}

/// Zeros to add after a write of `start..end` in a file of `file_end` bytes.
fn pad_len(start: u64, end: u64, block: u64, file_end: u64) -> usize {
    let within = end % block;
    if end <= start || within == 0 || (start / block == end / block && start % block != 0) {
        return 0;
    }
    (block - within).min(file_end.saturating_sub(end)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::io::{IoBackend, IoStats};
    use crate::store::commitlog::tests::record_of;
    use crate::store::commitlog::{CommitLog, LogReader};
    use crate::store::segment::{self, Prealloc, SegmentSet};
    use std::sync::Arc;

    /// Bytes this thread has had read from storage.
    fn read_here() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").unwrap_or_default();
        io.lines().find_map(|l| l.strip_prefix("read_bytes: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }

    /// Small records written inline over a segment zero-filled through
    /// O_DIRECT (nothing of it cached) read nothing from disk, and read
    /// back whole with zeros past the log's end. The same writes without
    /// carrying on read a block at every block they start (checked first:
    /// where the file system shows no such reads, there is nothing to pin).
    #[tokio::test(flavor = "current_thread")]
    async fn writes_over_zero_filled_segments_read_nothing_from_disk() {
        let seg: u64 = 1 << 20;
        let open = |carry: bool| {
            let dir = tempfile::tempdir().expect("tempdir");
            segment::create_zeroed(dir.path(), 0, seg).expect("zeroed segment");
            let set = Arc::new(SegmentSet::new(dir.path().to_path_buf(), seg));
            let file = segment::open_segment(dir.path(), 0).expect("open segment");
            set.insert(0, Arc::new(file));
            let backend = IoBackend::Std(crate::io::std_io::StdIo::new(Arc::new(IoStats::default())));
            let mut log = CommitLog::open(set.clone(), 0, 0, backend, Some(Prealloc::Zeroed), Arc::new(SystemClock))
                .expect("open")
                .with_inline_writes(seg);
            if !carry {
                log.carry_block = None;
            }
            (dir, set, log)
        };
        let record = |i: u32| record_of(vec![(i % 251) as u8 + 1; 300 + (i as usize * 53) % 700]);
        let (_dir, _set, mut plain) = open(false);
        let before = read_here();
        for i in 0..60 {
            plain.write_group(vec![record(i)], false).await.expect("write");
        }
        if read_here() == before {
            eprintln!("this file system reads nothing for partial writes over uncached zeros: nothing to pin");
            return;
        }
        let (dir, set, mut log) = open(true);
        assert!(log.carry_block.is_some(), "zero-filled segments carry writes on");
        let before = read_here();
        let mut written = Vec::new();
        for i in 0..60 {
            written.push(log.write_group(vec![record(i)], false).await.expect("write")[0][0]);
        }
        assert_eq!(read_here() - before, 0, "a write read a block from disk");
        assert!(log.write_pos() > 8 * 4096, "the writes crossed blocks");
        let reader = LogReader::new(set);
        for (i, pos) in written.iter().enumerate() {
            let rec = reader.read(pos.log_offset, pos.size).expect("read back");
            assert!(rec.message.body.iter().all(|&b| b == (i % 251) as u8 + 1), "record {i}");
        }
        let bytes = std::fs::read(dir.path().join(segment::segment_name(0))).expect("segment");
        let end = log.write_pos() as usize;
        assert!(bytes.get(end..).unwrap_or(&[]).iter().all(|&b| b == 0), "zeros past the log's end");
    }

    #[test]
    fn a_write_is_carried_on_only_to_the_end_of_a_block_it_begins() {
        let b = 4096;
        // Starts a block (or crosses into one): carried to its end.
        assert_eq!(pad_len(0, 100, b, 1 << 20), 3996);
        assert_eq!(pad_len(4000, 4200, b, 1 << 20), 4096 - 104);
        assert_eq!(pad_len(8192, 8193, b, 1 << 20), 4095);
        // Inside a block an earlier write left whole: nothing.
        assert_eq!(pad_len(100, 300, b, 1 << 20), 0);
        // Ends on a boundary: nothing.
        assert_eq!(pad_len(100, 4096, b, 1 << 20), 0);
        // Never past the file's end.
        assert_eq!(pad_len(8000, 8200, b, 8250), 50);
        assert_eq!(pad_len(8000, 8250, b, 8250), 0);
        assert_eq!(pad_len(5, 5, b, 1 << 20), 0);
    }
}
