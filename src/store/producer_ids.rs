//! Hands out idempotent producers' ids, never the same twice in a replica
//! set: ids are reserved in blocks, the end of the reserved block written
//! (and synced) before any id of it is given out; and each master epoch
//! has ids of its own (the epoch in the high 32 bits), so a slave promoted
//! to master never hands out an id its old master gave a producer whose
//! sequences are in the replicated producer table — which would make the
//! new producer's first sends look like duplicates, acknowledged and
//! dropped.

use crate::error::{Error, Result};
use std::path::PathBuf;

/// The id allocator.
#[derive(Debug)]
pub struct ProducerIds {
    path: PathBuf,
    next: u64,
    reserved: u64,
}

/// Ids reserved per write of the id file.
const ID_BLOCK: u64 = 1024;

impl ProducerIds {
    /// Resumes after every id a previous run may have handed out, within
    /// the ids of master epoch `epoch`.
    pub fn open(path: PathBuf, epoch: u32) -> Result<Self> {
        let stored = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| Error::Corrupt {
                offset: 0,
                reason: format!("{} does not hold a number", path.display()),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let next = stored.max(u64::from(epoch) << 32).max(1);
        Ok(Self { path, next, reserved: next })
    }

    /// A new id.
    pub fn allocate(&mut self) -> Result<u64> {
        if self.next >= self.reserved {
            let reserved = self.next + ID_BLOCK;
            super::write_atomically(&self.path, reserved.to_string().as_bytes())
                .map_err(|e| Error::io(format!("write {}", self.path.display()), e))?;
            self.reserved = reserved;
        }
        let id = self.next;
        self.next += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_across_restarts_or_masters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("producer-ids");
        let mut ids = ProducerIds::open(path.clone(), 0).expect("open");
        assert_eq!((ids.allocate().expect("id"), ids.allocate().expect("id")), (1, 2));
        let mut again = ProducerIds::open(path.clone(), 0).expect("open");
        assert!(again.allocate().expect("id") > 2, "past the reserved block");
        // A promoted slave's file (its own, never used) and a later epoch.
        let other = dir.path().join("slave-ids");
        let mut promoted = ProducerIds::open(other, 3).expect("open");
        assert_eq!(promoted.allocate().expect("id"), 3 << 32);
        let mut later = ProducerIds::open(path, 4).expect("open");
        assert_eq!(later.allocate().expect("id"), 4 << 32);
    }
}
