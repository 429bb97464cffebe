//! Retention: the log is unbounded to users, but segments whose newest record
//! is older than `retention_hours` are deleted, oldest first, and when the
//! data dir's filesystem is fuller than `disk_max_used_ratio` the oldest go
//! regardless of age. The active (last) segment is never deleted. Consume
//! queues follow by dropping files that only point into deleted segments.

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

impl DiskUsage for StatvfsUsage {
    fn used_ratio(&self, dir: &Path) -> io::Result<f64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: statvfs fills a zeroed struct from a valid C string.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return Err(io::Error::last_os_error());
        }
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
}

/// Why a segment was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Older than the retention time.
    Expired,
    /// The disk was fuller than allowed.
    DiskFull,
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
/// full) the oldest ones, never the last.
pub fn run_once(
    set: &SegmentSet,
    policy: RetentionPolicy,
    clock: &dyn Clock,
    disk: &dyn DiskUsage,
) -> io::Result<Deleted> {
    let mut deleted = Deleted::default();
    let cutoff = clock.now_ms() - policy.retention_ms;
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
        let reason = if expired {
            Reason::Expired
        } else if disk.used_ratio(set.dir())? > policy.disk_max_used_ratio {
            Reason::DiskFull
        } else {
            break;
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
