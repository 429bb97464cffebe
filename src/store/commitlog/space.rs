//! A group the disk had no room for. Two failures look alike and must not be
//! treated alike: a write refused for space (ENOSPC, a spent quota, a write
//! that stopped short, a segment that could not be made) can be undone — the
//! bytes that did land are cut back and synced, the log is as it was before
//! the group, and writing may go on once space is back — while a failed
//! fdatasync may have dropped pages the kernel will never report again, so
//! the log can no longer be trusted ("fsyncgate") and the writer poisons.

use crate::io::{is_out_of_space, is_sync_failure};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Why a group was not written.
#[derive(Debug)]
pub enum GroupError {
    /// No room: nothing of the group is left in the log (what reached a
    /// file was cut back and synced), and the log stands where it did
    /// before the group.
    OutOfSpace(io::Error),
    /// A write or an fdatasync failed otherwise: the log cannot be trusted.
    Failed(io::Error),
}

impl GroupError {
    /// The underlying error.
    pub fn io(&self) -> &io::Error {
        match self {
            GroupError::OutOfSpace(e) | GroupError::Failed(e) => e,
        }
    }
}

impl std::fmt::Display for GroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupError::OutOfSpace(e) => write!(f, "no space for the group: {e}"),
            GroupError::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// Whether a job's error means the disk is full (not an fdatasync's
/// failure, nor any other write error).
pub(super) fn refused_for_space(e: &io::Error) -> bool {
    !is_sync_failure(e) && (is_out_of_space(e) || e.kind() == io::ErrorKind::WriteZero)
}

/// Cuts back a failed group's bytes: every range it wrote reads as zeros
/// again (a hole punched, or zeros written where holes are not supported),
/// synced, so a crash after the failure was answered cannot bring them back.
pub(super) fn cut_back(ranges: &[(Arc<File>, u64, u64)]) -> io::Result<()> {
    for (file, offset, len) in ranges {
        if *len == 0 {
            continue;
        }
        let (off, n) = (libc::off_t::try_from(*offset), libc::off_t::try_from(*len));
        let (Ok(off), Ok(n)) = (off, n) else {
            return Err(io::Error::other("range overflows off_t"));
        };
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: fallocate on a descriptor the log holds open.
        if unsafe { libc::fallocate(file.as_raw_fd(), mode, off, n) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(err);
            }
            write_zeros(file, *offset, *len)?;
        }
        file.sync_data()?;
    }
    Ok(())
}

fn write_zeros(file: &File, mut offset: u64, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; len.min(1 << 20) as usize];
    let end = offset + len;
    while offset < end {
        let n = (end - offset).min(zeros.len() as u64) as usize;
        file.write_all_at(zeros.get(..n).unwrap_or(&[]), offset)?;
        offset += n as u64;
    }
    Ok(())
}
