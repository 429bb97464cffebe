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
    /// Messages retention deleted before this group consumed them.
    pub skipped: RetentionLoss,
}

/// What retention deleted that a group had not consumed yet: per queue (and
/// member, broadcasting) the count and how far it was counted, so a later
/// pass does not count the same messages again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionLoss {
    /// Per offset key: (messages lost, queue offset counted up to).
    pub queues: BTreeMap<OffsetKey, (u64, u64)>,
    /// When retention first deleted unconsumed messages, ms since the epoch.
    pub since_ms: Option<i64>,
}

impl RetentionLoss {
    /// Counts what a retention pass took: `min` is the queue's first offset
    /// after it, `committed` the group's offset there. Returns the messages
    /// newly lost (those at or past the committed offset and below `min`
    /// not counted before).
    pub fn count(&mut self, key: &OffsetKey, committed: u64, min: u64, at_ms: i64) -> u64 {
        let (lost, upto) = self.queues.get(key).copied().unwrap_or((0, 0));
        let from = committed.max(upto);
        if min <= from {
            return 0;
        }
        self.queues.insert(key.clone(), (lost + (min - from), min));
        self.since_ms.get_or_insert(at_ms);
        min - from
    }

    /// Messages lost on queue `key`.
    pub fn lost(&self, key: &OffsetKey) -> u64 {
        self.queues.get(key).map_or(0, |(lost, _)| *lost)
    }

    /// Messages lost in all.
    pub fn total(&self) -> u64 {
        self.queues.values().map(|(lost, _)| lost).sum()
    }
}

#[derive(Serialize, Deserialize)]
struct OffsetRow {
    member: Option<String>,
    topic: String,
    queue: u32,
    offset: u64,
}

#[derive(Serialize, Deserialize)]
struct SkippedRow {
    member: Option<String>,
    topic: String,
    queue: u32,
    lost: u64,
    counted_to: u64,
}

#[derive(Serialize, Deserialize)]
struct GroupFile {
    mode: ConsumeMode,
    start: StartFrom,
    offsets: Vec<OffsetRow>,
    /// Absent in files written before retention counted losses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    skipped_by_retention: Vec<SkippedRow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    skipped_since_ms: Option<i64>,
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
            skipped: RetentionLoss {
                queues: file
                    .skipped_by_retention
                    .into_iter()
                    .map(|r| ((r.member, r.topic, r.queue), (r.lost, r.counted_to)))
                    .collect(),
                since_ms: file.skipped_since_ms,
            },
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
            skipped_by_retention: self
                .skipped
                .queues
                .iter()
                .map(|((member, topic, queue), (lost, counted_to))| SkippedRow {
                    member: member.clone(),
                    topic: topic.clone(),
                    queue: *queue,
                    lost: *lost,
                    counted_to: *counted_to,
                })
                .collect(),
            skipped_since_ms: self.skipped.since_ms,
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
        state.skipped.count(&(None, "t".into(), 0), 9, 20, 1_000);
        let file = path(dir.path(), "g");
        state.store(&file).expect("store");
        assert_eq!(GroupState::load(&file).expect("load"), Some(state));
        assert_eq!(list(dir.path()).expect("list"), vec!["g".to_string()]);
        assert_eq!(GroupState::load(&path(dir.path(), "none")).expect("load"), None);
    }

    #[test]
    fn retention_losses_are_counted_once_from_the_committed_offset() {
        let mut loss = RetentionLoss::default();
        let key = (None, "t".to_string(), 0);
        assert_eq!(loss.count(&key, 100, 80, 1), 0, "nothing unconsumed was deleted");
        assert_eq!(loss.since_ms, None);
        assert_eq!(loss.count(&key, 100, 150, 2), 50);
        assert_eq!(loss.count(&key, 100, 150, 3), 0, "the same pass seen again counts nothing");
        assert_eq!(loss.count(&key, 100, 170, 4), 20, "only what the next pass added");
        assert_eq!(loss.count(&key, 200, 250, 5), 50, "the group moved past: counted from its offset");
        assert_eq!((loss.lost(&key), loss.total(), loss.since_ms), (120, 120, Some(2)));
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
