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
}
