//! A small durable record of a few numbers (a scheduler's delivered-up-to
//! offset, the timer wheel's watermarks), updated after every batch.
//!
//! Updates are a plain `pwrite` — no fsync — so they cost one syscall and
//! survive a process crash (the page cache does); the housekeeper fsyncs
//! them at each checkpoint, after the log, for power loss. Two slots are
//! written in turn, each with a sequence number and a CRC, so a torn write
//! leaves the previous value readable instead of nothing.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most values one progress file holds.
pub const MAX_VALUES: usize = 6;
const SLOT: usize = 8 + 8 * MAX_VALUES + 4;

/// A progress file.
#[derive(Debug)]
pub struct ProgressFile {
    file: File,
    seq: AtomicU64,
    /// Sequence of the last completed write, and of the last synced one.
    written: AtomicU64,
    synced: AtomicU64,
}

fn encode(seq: u64, values: &[u64]) -> [u8; SLOT] {
    let mut slot = [0u8; SLOT];
    slot[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, v) in values.iter().take(MAX_VALUES).enumerate() {
        slot[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
    }
    let crc = crc32c::crc32c(&slot[..SLOT - 4]);
    slot[SLOT - 4..].copy_from_slice(&crc.to_le_bytes());
    slot
}

fn decode(slot: &[u8]) -> Option<(u64, [u64; MAX_VALUES])> {
    let slot: &[u8; SLOT] = slot.try_into().ok()?;
    let crc = u32::from_le_bytes(slot[SLOT - 4..].try_into().ok()?);
    let seq = u64::from_le_bytes(slot[..8].try_into().ok()?);
    if seq == 0 || crc != crc32c::crc32c(&slot[..SLOT - 4]) {
        return None;
    }
    let mut values = [0u64; MAX_VALUES];
    for (i, v) in values.iter_mut().enumerate() {
        *v = u64::from_le_bytes(slot[8 + 8 * i..16 + 8 * i].try_into().ok()?);
    }
    Some((seq, values))
}

impl ProgressFile {
    /// Opens (or creates) the file and returns it with the last values
    /// written (all zero for a new file).
    pub fn open(path: &Path) -> io::Result<(Self, [u64; MAX_VALUES])> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let mut buf = [0u8; 2 * SLOT];
        let mut read = 0;
        while read < buf.len() {
            match file.read_at(&mut buf[read..], read as u64)? {
                0 => break,
                n => read += n,
            }
        }
        let best = [decode(&buf[..SLOT]), decode(&buf[SLOT..])].into_iter().flatten().max_by_key(|(seq, _)| *seq);
        let (seq, values) = best.unwrap_or((0, [0; MAX_VALUES]));
        Ok((Self { file, seq: AtomicU64::new(seq), written: AtomicU64::new(seq), synced: AtomicU64::new(seq) }, values))
    }

    /// Records `values` (at most [`MAX_VALUES`]); visible to the next
    /// `open` even if the process is killed right after.
    pub fn store(&self, values: &[u64]) -> io::Result<()> {
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        let at = (seq % 2) * SLOT as u64;
        self.file.write_all_at(&encode(seq, values), at)?;
        self.written.fetch_max(seq, Ordering::AcqRel);
        Ok(())
    }

    /// Whether a `store` completed since the last `sync`.
    pub fn unsynced(&self) -> bool {
        self.synced.load(Ordering::Acquire) < self.written.load(Ordering::Acquire)
    }

    /// Makes the last `store` durable (nothing to do if there was none
    /// since the last sync: idle schedulers cost no fdatasync).
    pub fn sync(&self) -> io::Result<()> {
        let seq = self.written.load(Ordering::Acquire);
        if !self.unsynced() {
            return Ok(());
        }
        self.file.sync_data()?;
        self.synced.fetch_max(seq, Ordering::AcqRel);
        Ok(())
    }
}

/// Every progress file of the broker's own readers (delay schedulers, timer
/// wheel, transaction checker) and the timer wheel's buckets. The checkpoint
/// syncs them after the log, so a synced progress never points past writes
/// a power loss could take back.
#[derive(Debug)]
pub struct SystemFiles {
    /// Progress files.
    pub progress: Vec<std::sync::Arc<ProgressFile>>,
    /// The timer wheel's buckets.
    pub buckets: std::sync::Arc<crate::store::timer::Buckets>,
}

impl SystemFiles {
    /// Buckets first (the wheel's progress names what they hold), then
    /// every progress file.
    pub fn sync(&self) -> io::Result<()> {
        self.buckets.sync()?;
        self.progress.iter().try_for_each(|p| p.sync())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_store_wins_and_a_torn_slot_falls_back_to_the_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p");
        let (file, values) = ProgressFile::open(&path).expect("open");
        assert_eq!(values, [0; MAX_VALUES]);
        assert!(!file.unsynced(), "nothing to sync on a fresh file");
        file.store(&[1, 2]).expect("store");
        assert!(file.unsynced());
        file.sync().expect("sync");
        assert!(!file.unsynced(), "a sync covers every completed store");
        file.store(&[3, 4]).expect("store");
        drop(file);
        let (file, values) = ProgressFile::open(&path).expect("reopen");
        assert_eq!(&values[..2], &[3, 4]);
        file.store(&[5, 6]).expect("store");
        drop(file);
        // Tear the newest slot: the previous value comes back.
        let (_, newest) = ProgressFile::open(&path).expect("reopen");
        assert_eq!(&newest[..2], &[5, 6]);
        let f = OpenOptions::new().write(true).open(&path).expect("open raw");
        // seq 3 lives in slot 1.
        f.write_all_at(&[0xff; 4], SLOT as u64 + 10).expect("tear");
        let (_, values) = ProgressFile::open(&path).expect("reopen");
        assert_eq!(&values[..2], &[3, 4]);
    }
}
