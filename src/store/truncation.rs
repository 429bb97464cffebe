//! Cutting the log back to an offset — what a slave does when its log ran
//! past the point it shares with its master — so that a crash at any step
//! leaves a log that is cut correctly at the next start: the target is
//! written to a marker file and fsynced first ([`mark`]); the cut itself
//! ([`finish_pending`]) runs at start, before recovery, and is repeated in
//! full until it completes, then the marker goes. A stale tail can never
//! come back as valid records.

use crate::error::{IoContext, Result};
use crate::store::checkpoint::Checkpoint;
use crate::store::epochs::EpochFile;
use crate::store::segment;
use crate::store::StorePaths;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    /// The log ends here once the cut is done.
    to: u64,
}

/// Records, durably, that the log must be cut at `to`.
pub fn mark(paths: &StorePaths, to: u64) -> Result<()> {
    let bytes = serde_json::to_vec(&Marker { to }).map_err(|e| crate::error::Error::Config(e.to_string()))?;
    super::write_atomically(&paths.truncation(), &bytes).ctx(|| "write the truncation marker".into())
}

/// Where a cut is pending, if one is.
pub fn pending(paths: &StorePaths) -> Result<Option<u64>> {
    match std::fs::read(paths.truncation()) {
        Ok(bytes) => serde_json::from_slice::<Marker>(&bytes)
            .map(|m| Some(m.to))
            .map_err(|e| crate::error::Error::Config(format!("{}: {e}", paths.truncation().display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::error::Error::io("read the truncation marker", e)),
    }
}

/// Carries out a pending cut (before recovery opens the log): the
/// checkpoint is made to rescan from the cut, the log past it is zeroed and
/// its later segments removed, the epochs past it forgotten and the
/// producers' snapshot (which may name cut records) dropped; then the
/// marker goes. Returns where the log was cut, if it was.
pub fn finish_pending(paths: &StorePaths, segment_bytes: u64) -> Result<Option<u64>> {
    let Some(to) = pending(paths)? else { return Ok(None) };
    let mut checkpoint = Checkpoint::load(&paths.checkpoint()).ctx(|| "read checkpoint".into())?.unwrap_or_default();
    checkpoint.clean = false;
    checkpoint.cq_durable_offset = checkpoint.cq_durable_offset.min(to);
    checkpoint.log_end = checkpoint.log_end.min(to);
    checkpoint.store(&paths.checkpoint()).ctx(|| "write checkpoint".into())?;
    let dir = paths.commitlog();
    let base = to - to % segment_bytes;
    for seg in segment::list_segments(&dir).ctx(|| "list segments".into())? {
        if seg > base {
            std::fs::remove_file(dir.join(segment::segment_name(seg))).ctx(|| format!("remove segment {seg}"))?;
        } else if seg == base {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(dir.join(segment::segment_name(seg)))
                .ctx(|| format!("open segment {seg}"))?;
            crate::failpoint::stall_blocking("truncation.cut");
            zero_from(&file, to - base, segment_bytes).ctx(|| format!("zero the log from {to}"))?;
        }
    }
    segment::sync_dir(&dir).ctx(|| "sync commitlog dir".into())?;
    EpochFile::load(paths.epochs()).and_then(|mut epochs| epochs.truncate(to)).ctx(|| "cut the epoch file".into())?;
    match std::fs::remove_file(paths.producers()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(crate::error::Error::io("drop producers", e)),
        _ => {}
    }
    std::fs::remove_file(paths.truncation()).ctx(|| "remove the truncation marker".into())?;
    segment::sync_dir(&paths.root).ctx(|| "sync data dir".into())?;
    Ok(Some(to))
}

/// Zeroes `file` from `at` to `end` — all of it: a cut tail holds valid
/// records, so stopping at the first zero chunk (as recovery's tail
/// clearing does) could leave some behind it.
fn zero_from(file: &std::fs::File, at: u64, end: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK as usize];
    let mut pos = at;
    while pos < end {
        let len = CHUNK.min(end - pos) as usize;
        file.write_all_at(zeros.get(..len).unwrap_or(&[]), pos)?;
        pos += len as u64;
    }
    file.sync_data()
}
