//! The epoch file: which master epoch wrote the log from which offset on,
//! as (epoch, start offset) pairs, replaced atomically and fsynced at each
//! change. A slave meeting its master compares the two lists to find the
//! last point their logs share ([`consistent_point`]); everything past it
//! on the slave was never the master's and is cut.

use brook_proto::ha::EpochEntry;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::PathBuf;

#[derive(Debug, Default, Serialize, Deserialize)]
struct EpochsJson {
    epochs: Vec<EpochEntry>,
}

/// The epochs of one broker's log, oldest first.
#[derive(Debug)]
pub struct EpochFile {
    path: PathBuf,
    entries: Vec<EpochEntry>,
}

impl EpochFile {
    /// Loads `path` (missing: no epochs yet).
    pub fn load(path: PathBuf) -> io::Result<Self> {
        let entries = match std::fs::read(&path) {
            Ok(bytes) => {
                let json: EpochsJson = serde_json::from_slice(&bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
                json.epochs
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(Self { path, entries })
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest entry.
    pub fn last(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Starts `epoch` at log offset `start` (durably, before anything of it
    /// is written). An epoch older than the newest is refused; the newest
    /// again changes nothing.
    pub fn begin(&mut self, epoch: u32, start: u64) -> io::Result<()> {
        match self.last() {
            Some(last) if last.epoch == epoch => return Ok(()),
            Some(last) if last.epoch > epoch || last.start > start => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("epoch {epoch} at {start} cannot follow epoch {} at {}", last.epoch, last.start),
                ))
            }
            _ => {}
        }
        self.entries.push(EpochEntry { epoch, start });
        self.persist()
    }

    /// Forgets the epochs that start at or past `end` (the log was cut
    /// there).
    pub fn truncate(&mut self, end: u64) -> io::Result<()> {
        let before = self.entries.len();
        // The first epoch keeps its place even at 0: it names who wrote
        // from the beginning.
        self.entries.retain(|e| e.start < end || e.start == 0 && end == 0);
        if self.entries.len() == before {
            return Ok(());
        }
        self.persist()
    }

    fn persist(&self) -> io::Result<()> {
        let bytes = serde_json::to_vec(&EpochsJson { epochs: self.entries.clone() }).map_err(io::Error::other)?;
        super::write_atomically(&self.path, &bytes)
    }
}

/// Where a slave's log (`ours`, ending at `our_end`) and its master's
/// (`theirs`, ending at `their_end`) stop agreeing: the end of the newest
/// epoch both have with the same start, within both logs. `None` when they
/// share no epoch and the slave's log is not empty: its history is not the
/// master's at all.
pub fn consistent_point(ours: &[EpochEntry], our_end: u64, theirs: &[EpochEntry], their_end: u64) -> Option<u64> {
    if our_end == 0 {
        return Some(0);
    }
    let end_of = |list: &[EpochEntry], i: usize, log_end: u64| list.get(i + 1).map_or(log_end, |next| next.start);
    for (i, mine) in ours.iter().enumerate().rev() {
        if let Some(j) = theirs.iter().position(|t| t == mine) {
            return Some(end_of(ours, i, our_end).min(end_of(theirs, j, their_end)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(epoch: u32, start: u64) -> EpochEntry {
        EpochEntry { epoch, start }
    }

    #[test]
    fn the_point_is_the_end_of_the_newest_shared_epoch() {
        // Same history, slave behind: stream from its end.
        assert_eq!(consistent_point(&[e(1, 0)], 500, &[e(1, 0)], 900), Some(500));
        // The slave ran ahead in epoch 1; the master started epoch 2 at
        // 700: cut the slave at 700.
        assert_eq!(consistent_point(&[e(1, 0)], 900, &[e(1, 0), e(2, 700)], 1000), Some(700));
        // The slave wrote an epoch the master never had.
        assert_eq!(consistent_point(&[e(1, 0), e(2, 700)], 900, &[e(1, 0), e(3, 650)], 1000), Some(650));
        // Slave behind within the newest shared epoch.
        assert_eq!(consistent_point(&[e(1, 0), e(2, 700)], 800, &[e(1, 0), e(2, 700), e(3, 950)], 1000), Some(800));
        // Nothing shared, or nothing to share.
        assert_eq!(consistent_point(&[e(5, 0)], 10, &[e(1, 0)], 1000), None);
        assert_eq!(consistent_point(&[], 0, &[e(1, 0)], 1000), Some(0));
    }

    #[test]
    fn epochs_survive_a_reload_and_truncate_from_the_cut() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("epochs");
        let mut file = EpochFile::load(path.clone()).expect("load");
        file.begin(1, 0).expect("1");
        file.begin(2, 100).expect("2");
        file.begin(2, 100).expect("again");
        assert!(file.begin(1, 200).is_err(), "no going back");
        file.begin(4, 300).expect("4");
        let mut again = EpochFile::load(path.clone()).expect("reload");
        assert_eq!(again.entries(), &[e(1, 0), e(2, 100), e(4, 300)]);
        again.truncate(300).expect("cut");
        assert_eq!(EpochFile::load(path).expect("reload").entries(), &[e(1, 0), e(2, 100)]);
    }
}
