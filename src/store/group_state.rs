//! A consumer group's durable state: its mode, start policy and committed
//! offsets, one JSON file per group under `config/groups/`, replaced
//! atomically. Written by the group's actor at most every
//! `offset_flush_interval_ms` and at shutdown.

use brook_proto::request::{ConsumeMode, StartFrom};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// Key of a committed offset: member (broadcasting only), topic, queue.
pub type OffsetKey = (Option<String>, String, u32);

/// What survives a restart for one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupState {
    /// Clustering or broadcasting.
    pub mode: ConsumeMode,
    /// Where queues without an offset start.
    pub start: StartFrom,
    /// Committed offsets.
    pub offsets: BTreeMap<OffsetKey, u64>,
}

#[derive(Serialize, Deserialize)]
struct OffsetRow {
    member: Option<String>,
    topic: String,
    queue: u32,
    offset: u64,
}

#[derive(Serialize, Deserialize)]
struct GroupFile {
    mode: ConsumeMode,
    start: StartFrom,
    offsets: Vec<OffsetRow>,
}

/// The file holding `group`'s state.
pub fn path(dir: &Path, group: &str) -> PathBuf {
    dir.join(format!("{group}.json"))
}

/// Every group with a state file in `dir`.
pub fn list(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    match fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let name = entry?.file_name();
                if let Some(group) = name.to_str().and_then(|n| n.strip_suffix(".json")) {
                    out.push(group.to_string());
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    out.sort();
    Ok(out)
}

impl GroupState {
    /// Loads a group's state; a missing file is a new group.
    pub fn load(path: &Path) -> io::Result<Option<GroupState>> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let file: GroupFile = serde_json::from_slice(&bytes)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
        Ok(Some(GroupState {
            mode: file.mode,
            start: file.start,
            offsets: file.offsets.into_iter().map(|r| ((r.member, r.topic, r.queue), r.offset)).collect(),
        }))
    }

    /// Atomically replaces the state file.
    pub fn store(&self, path: &Path) -> io::Result<()> {
        let file = GroupFile {
            mode: self.mode,
            start: self.start,
            offsets: self
                .offsets
                .iter()
                .map(|((member, topic, queue), offset)| OffsetRow {
                    member: member.clone(),
                    topic: topic.clone(),
                    queue: *queue,
                    offset: *offset,
                })
                .collect(),
        };
        super::write_atomically(path, &serde_json::to_vec_pretty(&file).map_err(io::Error::other)?)
    }
}

/// A group's state file, written one version at a time.
///
/// The periodic flush writes from the blocking pool while the group's actor
/// goes on, and the shutdown's flush from the actor's thread. Unordered,
/// the two shared the file's temporary, so one could rename it away under
/// the other (failing the shutdown) or truncate it under the other's
/// rename, and an older state could land last. Here writes take turns, and
/// a version older than the one on disk is not written over it.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    on_disk: Arc<Mutex<u64>>,
}

impl StateFile {
    /// The state file at `path`; versions written through it start at 1.
    pub fn new(path: PathBuf) -> Self {
        Self { path, on_disk: Arc::default() }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `state` as `version`, unless a later version is on disk
    /// already (then it has nothing to add).
    pub fn store(&self, state: &GroupState, version: u64) -> io::Result<()> {
        let mut on_disk = self.on_disk.lock().unwrap_or_else(PoisonError::into_inner);
        if version <= *on_disk {
            return Ok(());
        }
        state.store(&self.path)?;
        *on_disk = version;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state =
            GroupState { mode: ConsumeMode::Broadcasting, start: StartFrom::Timestamp(7), ..Default::default() };
        state.offsets.insert((Some("m1".into()), "t".into(), 3), 42);
        state.offsets.insert((None, "t".into(), 0), 9);
        let file = path(dir.path(), "g");
        state.store(&file).expect("store");
        assert_eq!(GroupState::load(&file).expect("load"), Some(state));
        assert_eq!(list(dir.path()).expect("list"), vec!["g".to_string()]);
        assert_eq!(GroupState::load(&path(dir.path(), "none")).expect("load"), None);
    }

    fn at_offset(offset: u64) -> GroupState {
        let mut state = GroupState::default();
        state.offsets.insert((None, "t".into(), 0), offset);
        state
    }

    #[test]
    fn an_older_version_is_not_written_over_a_newer_one() {
        // A periodic flush that took its copy before a later commit must
        // not land after the shutdown's flush of that commit.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StateFile::new(path(dir.path(), "g"));
        file.store(&at_offset(20), 2).expect("newer");
        file.store(&at_offset(10), 1).expect("older");
        assert_eq!(GroupState::load(file.path()).expect("load"), Some(at_offset(20)));
        file.store(&at_offset(30), 3).expect("newest");
        assert_eq!(GroupState::load(file.path()).expect("load"), Some(at_offset(30)));
    }

    #[test]
    fn writers_at_once_take_turns() {
        // Unordered, writers at once shared the temporary file: one renamed
        // it away under another, whose rename then failed (`NotFound`).
        let dir = tempfile::tempdir().expect("tempdir");
        let file = StateFile::new(path(dir.path(), "g"));
        let next = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (file, next) = (file.clone(), next.clone());
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        let version = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        file.store(&at_offset(version), version).expect("every write succeeds");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("writer");
        }
        // Each version was taken before its write began, so the newest (100)
        // is the one left, whichever thread wrote it.
        assert_eq!(GroupState::load(file.path()).expect("load"), Some(at_offset(100)));
    }
}
