//! Retention: the log is unbounded to users, but segments whose newest record
//! is older than `retention_hours` are deleted, oldest first, and when the
//! data dir's filesystem is fuller than `disk_max_used_ratio` the oldest go
//! regardless of age — unless `retention_protect_unconsumed` keeps what an
//! active group has not consumed, until the disk passes
//! `disk_hard_max_used_ratio`. The active (last) segment is never deleted.
//! Consume queues follow by dropping files that only point into deleted
//! segments.

use crate::clock::Clock;
use crate::store::record;
use crate::store::segment::{segment_name, sync_dir, SegmentSet};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// How full a filesystem is (injectable for tests).
pub trait DiskUsage: Send + Sync + std::fmt::Debug {
    /// Used share (0..=1) of the filesystem holding `dir`.
    fn used_ratio(&self, dir: &Path) -> io::Result<f64>;
}

/// Reads usage with `statvfs`, the way `df` reports it.
#[derive(Debug, Default, Clone, Copy)]
pub struct StatvfsUsage;

/// The file system's figures for `dir`, from `statvfs`.
fn statvfs(dir: &Path) -> io::Result<libc::statvfs> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs fills a zeroed struct from a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat)
}

/// Bytes available to the broker on the file system holding `dir` (what
/// `df` shows as Avail).
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let stat = statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

impl DiskUsage for StatvfsUsage {
    fn used_ratio(&self, dir: &Path) -> io::Result<f64> {
        let stat = statvfs(dir)?;
        // As `df` computes Use%: used / (used + available to users). Blocks
        // outside both (reserved for root, or withheld by a thin-provisioned
        // host) do not count as in use.
        let used = stat.f_blocks.saturating_sub(stat.f_bfree) as f64;
        let usable = used + stat.f_bavail as f64;
        if usable <= 0.0 {
            return Ok(0.0);
        }
        Ok(used / usable)
    }
}

/// The rules retention applies.
#[derive(Debug, Clone, Copy)]
pub struct RetentionPolicy {
    /// Segments whose newest record is older than this go.
    pub retention_ms: i64,
    /// Above this used share, the oldest segments go regardless of age.
    pub disk_max_used_ratio: f64,
    /// Above this used share, they go even if an active group still needs
    /// them (with `retention_protect_unconsumed`).
    pub disk_hard_max_used_ratio: f64,
    /// Keep what active groups have not consumed below the hard ratio.
    pub protect_unconsumed: bool,
}

/// Why a segment was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Older than the retention time.
    Expired,
    /// The disk was fuller than allowed.
    DiskFull,
    /// The disk was past the hard ceiling: deleted although an active group
    /// had not consumed it (`retention_protect_unconsumed`).
    HardCeiling,
}

/// What one retention pass deleted.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Deleted {
    /// Segment bases deleted, with why.
    pub segments: Vec<(u64, Reason)>,
    /// The smallest log offset still stored after the pass.
    pub log_min: u64,
    /// Disk usage seen when the pass began.
    pub used_ratio: f64,
    /// The segment the disk's ratio would have deleted but an active group
    /// still needs (kept: `retention_protect_unconsumed`).
    pub held_back: Option<u64>,
    /// Messages consumer groups had not consumed that the pass deleted.
    pub unconsumed: u64,
}

/// Newest store time of segment `base`: exact if the writer or recovery
/// recorded it, else bounded by the first record of the next segment.
fn newest_ts(set: &SegmentSet, base: u64, known: Option<i64>) -> Option<i64> {
    if known.is_some() {
        return known;
    }
    let next = set.file(base + set.segment_bytes())?;
    let mut header = [0u8; record::HEADER_LEN];
    next.read_exact_at(&mut header, 0).ok()?;
    match record::scan(&header, base + set.segment_bytes()) {
        record::Scan::Corrupt(_) | record::Scan::Record(_) => {
            let head = record::head(&header);
            (head.len > 0 && head.log_offset == base + set.segment_bytes()).then_some(head.store_ts)
        }
        _ => None,
    }
}

/// Runs one pass: deletes expired segments, then (while the disk is too
/// full) the oldest ones, never the last. `needed_from` is the lowest log
/// offset an active group has not consumed (when protected): below the
/// hard ceiling, the disk's ratio deletes no segment ending past it.
pub fn run_once(
    set: &SegmentSet,
    policy: RetentionPolicy,
    clock: &dyn Clock,
    disk: &dyn DiskUsage,
    needed_from: Option<u64>,
) -> io::Result<Deleted> {
    let mut deleted = Deleted::default();
    let cutoff = clock.now_ms() - policy.retention_ms;
    let hard = policy.disk_hard_max_used_ratio.max(policy.disk_max_used_ratio);
    deleted.used_ratio = disk.used_ratio(set.dir())?;
    loop {
        let snapshot = set.snapshot();
        if snapshot.len() <= 1 {
            break;
        }
        let Some((base, entry)) = snapshot.into_iter().next() else {
            break;
        };
        let expired = newest_ts(set, base, entry.last_store_ts).is_some_and(|ts| ts < cutoff);
        let needed = needed_from.is_some_and(|from| from < base + set.segment_bytes());
        let reason = if expired {
            Reason::Expired
        } else {
            let ratio = disk.used_ratio(set.dir())?;
            match (ratio > policy.disk_max_used_ratio, needed) {
                (false, _) => break,
                (true, false) => Reason::DiskFull,
                (true, true) if ratio > hard => Reason::HardCeiling,
                (true, true) => {
                    deleted.held_back = Some(base);
                    break;
                }
            }
        };
        set.remove(base);
        std::fs::remove_file(set.dir().join(segment_name(base)))?;
        deleted.segments.push((base, reason));
    }
    if !deleted.segments.is_empty() {
        sync_dir(set.dir())?;
    }
    deleted.log_min = set.min_offset();
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::segment::{create_sparse, open_segment};
    use std::sync::Arc;

    #[derive(Debug)]
    struct Fixed(f64);

    impl DiskUsage for Fixed {
        fn used_ratio(&self, _: &Path) -> io::Result<f64> {
            Ok(self.0)
        }
    }

    /// Three segments of 4 KiB, none expired.
    fn three_segments(dir: &Path) -> SegmentSet {
        let set = SegmentSet::new(dir.to_path_buf(), 4096);
        for base in [0, 4096, 8192] {
            create_sparse(dir, base, 4096).expect("segment");
            set.insert(base, Arc::new(open_segment(dir, base).expect("open")));
            set.set_last_store_ts(base, 1_000);
        }
        set
    }

    fn policy(protect_unconsumed: bool) -> RetentionPolicy {
        RetentionPolicy {
            retention_ms: 3_600_000,
            disk_max_used_ratio: 0.75,
            disk_hard_max_used_ratio: 0.90,
            protect_unconsumed,
        }
    }

    #[test]
    fn protected_segments_stay_below_the_hard_ceiling_and_go_above_it() {
        let clock = ManualClock::new(2_000);
        // A group still needs log offset 5000 (the second segment): the
        // first may go, the second not below the ceiling.
        let dir = tempfile::tempdir().expect("tempdir");
        let set = three_segments(dir.path());
        let deleted = run_once(&set, policy(true), &clock, &Fixed(0.80), Some(5000)).expect("pass");
        assert_eq!(deleted.segments, vec![(0, Reason::DiskFull)]);
        assert_eq!(deleted.held_back, Some(4096));
        assert_eq!(set.bases(), vec![4096, 8192]);
        // Past the ceiling it goes anyway, and says why.
        let deleted = run_once(&set, policy(true), &clock, &Fixed(0.95), Some(5000)).expect("pass");
        assert_eq!(deleted.segments, vec![(4096, Reason::HardCeiling)]);
        assert_eq!((deleted.held_back, set.bases()), (None, vec![8192]), "never the active segment");
        // Nothing needed: plain disk pressure.
        let dir = tempfile::tempdir().expect("tempdir");
        let set = three_segments(dir.path());
        let deleted = run_once(&set, policy(true), &clock, &Fixed(0.80), None).expect("pass");
        assert_eq!(deleted.segments, vec![(0, Reason::DiskFull), (4096, Reason::DiskFull)]);
        // Below the soft ratio nothing goes, needed or not.
        let dir = tempfile::tempdir().expect("tempdir");
        let set = three_segments(dir.path());
        let deleted = run_once(&set, policy(true), &clock, &Fixed(0.50), Some(0)).expect("pass");
        assert!(deleted.segments.is_empty() && deleted.held_back.is_none());
    }

    #[test]
    fn usage_matches_df() {
        let ratio = StatvfsUsage.used_ratio(Path::new("/")).expect("statvfs");
        let out = std::process::Command::new("df").args(["--output=pcent", "/"]).output();
        if let Ok(out) = out {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(pct) = text.lines().nth(1).and_then(|l| l.trim().trim_end_matches('%').parse::<f64>().ok()) {
                // df rounds up to a whole percent.
                assert!((ratio * 100.0 - pct).abs() <= 1.5, "statvfs {ratio} vs df {pct}%");
            }
        }
        assert!((0.0..=1.0).contains(&ratio));
    }
}
