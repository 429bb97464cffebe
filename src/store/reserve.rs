//! The space reserve: a file of `store.disk_reserve_bytes` real blocks the
//! broker keeps for itself. A broker that starts on a full disk must still
//! write its checkpoint and the consume-queue entries recovery rebuilds,
//! and one stopping on a full disk its final checkpoint; for both it lets
//! the reserve go first. It is laid down (at first, and again after it was
//! let go) by a retention pass that finds room for it and the resume margin
//! besides.

use crate::store::retention::free_bytes;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The reserve file of a data dir.
#[derive(Debug, Clone)]
pub struct Reserve {
    path: PathBuf,
    bytes: u64,
}

impl Reserve {
    /// The reserve of `bytes` at `path` (0: none is kept).
    pub fn new(path: PathBuf, bytes: u64) -> Self {
        Self { path, bytes }
    }

    /// Whether the reserve is laid down in full.
    pub fn is_held(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.len() >= self.bytes)
    }

    /// Lets the reserve go; the bytes freed (0 if there was none).
    pub fn release(&self) -> io::Result<u64> {
        let len = match std::fs::metadata(&self.path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        std::fs::remove_file(&self.path)?;
        Ok(len)
    }

    /// Lets the reserve go if the disk has less than the reserve free: a
    /// start on a full disk needs the room. The bytes freed.
    pub fn release_if_full(&self, dir: &Path) -> io::Result<u64> {
        if self.bytes == 0 || free_bytes(dir)? >= self.bytes {
            return Ok(0);
        }
        self.release()
    }

    /// Lays the reserve down if it is missing and the disk has room for it
    /// with `margin` to spare; true if it was laid down now.
    pub fn restore(&self, dir: &Path, margin: u64) -> io::Result<bool> {
        if self.bytes == 0 || self.is_held() || free_bytes(dir)? < self.bytes.saturating_add(margin) {
            return Ok(false);
        }
        let tmp = self.path.with_extension("tmp");
        let made = std::fs::File::create(&tmp).and_then(|file| {
            // SAFETY: fallocate on a descriptor we own.
            if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, self.bytes as libc::off_t) } != 0 {
                return Err(io::Error::last_os_error());
            }
            file.sync_all()
        });
        if let Err(e) = made.and_then(|()| std::fs::rename(&tmp, &self.path)) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_laid_down_with_room_and_released_when_the_disk_is_short() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reserve = Reserve::new(dir.path().join("reserve"), 1 << 20);
        assert!(reserve.restore(dir.path(), 0).expect("restore"));
        assert!(reserve.is_held());
        let blocks = std::fs::metadata(dir.path().join("reserve")).map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.blocks() * 512
        });
        assert!(blocks.expect("meta") >= 1 << 20, "real blocks, not a hole");
        assert!(!reserve.restore(dir.path(), 0).expect("again"), "held already");
        assert_eq!(reserve.release_if_full(dir.path()).expect("release"), 0, "the disk has room");
        assert!(!reserve.restore(dir.path(), u64::MAX / 2).expect("no room"), "kept only with the margin to spare");
        assert_eq!(reserve.release().expect("release"), 1 << 20);
        assert!(!reserve.is_held());
        assert!(!Reserve::new(dir.path().join("none"), 0).restore(dir.path(), 0).expect("off"));
    }
}
