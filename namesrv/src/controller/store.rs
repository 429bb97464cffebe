//! The controller's Raft storage on disk, for openraft: the log with the
//! vote and the committed id (one file, `raft-log`, replaced atomically and
//! fsynced at every change: the controller's log is short — a few commands
//! per failover — and snapshots keep it so), and the state machine with
//! its snapshot (`raft-snapshot`). Both encoded with bincode.
// openraft's storage traits return its `StorageError`, large as it is.
#![allow(clippy::result_large_err)]

use super::state::{ControllerState, Outcome};
use super::TypeConfig;
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, LogState, RaftLogReader, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use parking_lot::{Mutex, RwLock};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

type NodeId = u64;
type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map(|(v, _)| v)
}

/// Reads `path` as `T`; none if it does not exist.
fn load<T: DeserializeOwned>(path: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => decode(&bytes).map(Some).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `value` to `path` durably (temporary file, fsync, rename).
fn save<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let bytes = encode(value).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    // A few KiB at most; the runtime's other tasks wait an fsync.
    tokio::task::block_in_place(|| brook::store::write_atomically(path, &bytes))
}

/// Everything of the log on disk.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LogData {
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
}

/// The Raft log (and vote).
#[derive(Clone)]
pub struct LogStore {
    path: PathBuf,
    data: Arc<Mutex<LogData>>,
}

impl LogStore {
    /// Opens the log in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join("raft-log");
        let data = load(&path)?.unwrap_or_default();
        Ok(Self { path, data: Arc::new(Mutex::new(data)) })
    }

    fn persist(&self, data: &LogData) -> StorageResult<()> {
        save(&self.path, data).map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        Ok(self.data.lock().entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let data = self.data.lock();
        let last = data.entries.values().next_back().map(|e| e.log_id).or(data.last_purged);
        Ok(LogState { last_purged_log_id: data.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let mut data = self.data.lock();
        data.vote = Some(*vote);
        save(&self.path, &*data).map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.data.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        let mut data = self.data.lock();
        data.committed = committed;
        self.persist(&data)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.data.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut data = self.data.lock();
        for entry in entries {
            data.entries.insert(entry.log_id.index, entry);
        }
        let saved = save(&self.path, &*data);
        let failed = saved.as_ref().err().map(|e| std::io::Error::new(e.kind(), e.to_string()));
        callback.log_io_completed(saved);
        match failed {
            Some(e) => Err(StorageIOError::write_logs(&e).into()),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut data = self.data.lock();
        data.entries.split_off(&log_id.index);
        self.persist(&data)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut data = self.data.lock();
        data.entries = data.entries.split_off(&(log_id.index + 1));
        data.last_purged = Some(log_id);
        self.persist(&data)
    }
}

/// The applied state and what produced it.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Applied {
    /// The last entry applied.
    pub last_applied: Option<LogId<NodeId>>,
    /// The membership in force.
    pub membership: StoredMembership<NodeId, BasicNode>,
    /// The replica sets.
    pub state: ControllerState,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// The state machine: what the controller decides from.
#[derive(Clone)]
pub struct StateMachine {
    path: PathBuf,
    /// Read by the controller's request handlers.
    pub applied: Arc<RwLock<Applied>>,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
}

impl StateMachine {
    /// The state machine as of the snapshot in `dir` (the log replays the
    /// rest).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let path = dir.join("raft-snapshot");
        let snapshot: Option<StoredSnapshot> = load(&path)?;
        let applied = match &snapshot {
            Some(s) => decode(&s.data).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            None => Applied::default(),
        };
        Ok(Self { path, applied: Arc::new(RwLock::new(applied)), snapshot: Arc::new(Mutex::new(snapshot)) })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let applied = self.applied.read().clone();
        let data = encode(&applied).map_err(|e| StorageIOError::read_state_machine(&e))?;
        let last = applied.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: applied.membership.clone(),
            snapshot_id: last.map_or_else(|| "0".into(), |l| format!("{}-{}", l.leader_id, l.index)),
        };
        let stored = StoredSnapshot { meta: meta.clone(), data: data.clone() };
        save(&self.path, &stored).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        *self.snapshot.lock() = Some(stored);
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        let applied = self.applied.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut applied = self.applied.write();
        let mut outcomes = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let outcome = match &entry.payload {
                EntryPayload::Blank => Outcome::default(),
                EntryPayload::Normal(command) => applied.state.apply(command),
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    Outcome::default()
                }
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let applied: Applied = decode(&data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let stored = StoredSnapshot { meta: meta.clone(), data };
        save(&self.path, &stored).map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        *self.applied.write() = applied;
        *self.snapshot.lock() = Some(stored);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self
            .snapshot
            .lock()
            .as_ref()
            .map(|s| Snapshot { meta: s.meta.clone(), snapshot: Box::new(Cursor::new(s.data.clone())) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::state::Command;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64, addr: &str) -> Entry<TypeConfig> {
        let add = Command::AddBroker { cluster: "c".into(), broker_name: "b".into(), addr: addr.into(), wanted: None };
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(add) }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_the_vote_and_the_snapshot_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogStore::open(dir.path()).expect("open");
        log.save_vote(&Vote::new(3, 2)).await.expect("vote");
        for i in 1..=5 {
            log.data.lock().entries.insert(i, entry(i, &format!("127.0.0.1:{i}")));
        }
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 5)).await.expect("truncate");
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 2)).await.expect("purge");
        let mut reopened = LogStore::open(dir.path()).expect("reopen");
        assert_eq!(reopened.read_vote().await.expect("vote"), Some(Vote::new(3, 2)));
        let kept: Vec<u64> =
            reopened.try_get_log_entries(0..).await.expect("read").iter().map(|e| e.log_id.index).collect();
        assert_eq!(kept, [3, 4], "above the purge, below the cut");
        let state = reopened.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(2));

        let mut machine = StateMachine::open(dir.path()).expect("machine");
        let outcomes = machine.apply((1..=3).map(|i| entry(i, &format!("127.0.0.1:{i}")))).await.expect("apply");
        assert_eq!(outcomes.iter().map(|o| o.broker_id).collect::<Vec<_>>(), [Some(1), Some(2), Some(3)]);
        let snapshot = machine.build_snapshot().await.expect("snapshot");
        let restarted = StateMachine::open(dir.path()).expect("restart");
        assert_eq!(restarted.applied.read().state, machine.applied.read().state, "from the snapshot file");
        let other = tempfile::tempdir().expect("tempdir");
        let mut follower = StateMachine::open(other.path()).expect("follower");
        follower.install_snapshot(&snapshot.meta, snapshot.snapshot).await.expect("install");
        assert_eq!(follower.applied.read().state.sets["b"].members.len(), 3, "a follower installs it");
        assert_eq!(follower.applied_state().await.expect("applied").0.map(|l| l.index), Some(3));
        // A damaged file is an error, not an empty state.
        std::fs::write(dir.path().join("raft-snapshot"), b"garbage").expect("write");
        assert!(StateMachine::open(dir.path()).is_err());
    }
}
