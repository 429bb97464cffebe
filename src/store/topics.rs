//! The topic table: every topic and its queue count, persisted as JSON in
//! `config/topics.json` and read by everyone through a `DashMap`.

use crate::error::{Error, IoContext, Result};
use brook_proto::names::validate_name;
use dashmap::DashMap;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

/// Most queues one topic may have (kept with the configuration that also
/// bounds `default_queues` by it).
pub use crate::config::MAX_QUEUES_PER_TOPIC;

/// One topic's definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Number of queues.
    pub queues: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TopicFile {
    topics: BTreeMap<String, TopicConfig>,
}

/// All topics, shared read-mostly.
#[derive(Debug)]
pub struct TopicTable {
    path: PathBuf,
    /// Read for every send: a fast hash instead of SipHash.
    topics: DashMap<String, TopicConfig, foldhash::fast::RandomState>,
    // Serialises writers so the file always reflects one consistent map.
    persist: Mutex<()>,
    /// Bumped on every change: the name-server registrar waits on it.
    changed: tokio::sync::watch::Sender<u64>,
}

/// What a create did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The topic is new.
    Created,
    /// It existed; its queue count grew.
    Grown,
    /// It existed with this queue count already.
    Unchanged,
}

impl TopicTable {
    /// Loads the table from `path` (missing file: no topics).
    pub fn load(path: PathBuf) -> Result<TopicTable> {
        let file: TopicFile = match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => TopicFile::default(),
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let (changed, _) = tokio::sync::watch::channel(0);
        Ok(TopicTable { path, topics: file.topics.into_iter().collect(), persist: Mutex::new(()), changed })
    }

    /// Tells of every change from now on (its value counts them).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn note_change(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// A topic's config.
    pub fn get(&self, name: &str) -> Option<TopicConfig> {
        self.topics.get(name).map(|t| *t)
    }

    /// Every topic, sorted by name.
    pub fn list(&self) -> Vec<(String, TopicConfig)> {
        let mut all: Vec<_> = self.topics.iter().map(|e| (e.key().clone(), *e.value())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Creates a topic or grows its queue count (queues never shrink, since
    /// their offsets are someone's position).
    pub fn create(&self, name: &str, queues: u32) -> Result<CreateOutcome> {
        validate_name("topic", name).map_err(Error::InvalidName)?;
        if queues == 0 || queues > MAX_QUEUES_PER_TOPIC {
            return Err(Error::InvalidArgument(format!(
                "queue count must be 1..={MAX_QUEUES_PER_TOPIC}, got {queues}"
            )));
        }
        let _guard = self.persist.lock();
        let outcome = match self.topics.get(name).map(|t| t.queues) {
            None => CreateOutcome::Created,
            Some(have) if have == queues => return Ok(CreateOutcome::Unchanged),
            Some(have) if have < queues => CreateOutcome::Grown,
            Some(have) => {
                return Err(Error::InvalidArgument(format!(
                    "topic {name:?} has {have} queues; queue counts can grow but not shrink to {queues}"
                )))
            }
        };
        self.topics.insert(name.to_string(), TopicConfig { queues });
        self.save()?;
        self.note_change();
        Ok(outcome)
    }

    /// Removes a topic; false if it did not exist.
    pub fn delete(&self, name: &str) -> Result<bool> {
        let _guard = self.persist.lock();
        let existed = self.topics.remove(name).is_some();
        if existed {
            self.save()?;
            self.note_change();
        }
        Ok(existed)
    }

    fn save(&self) -> Result<()> {
        let file = TopicFile { topics: self.topics.iter().map(|e| (e.key().clone(), *e.value())).collect() };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| Error::Config(e.to_string()))?;
        super::write_atomically(&self.path, &bytes).ctx(|| format!("write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_persist_grow_and_refuse_shrinking_or_bad_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config/topics.json");
        let table = TopicTable::load(path.clone()).expect("load");
        assert_eq!(table.create("orders", 4).expect("create"), CreateOutcome::Created);
        assert_eq!(table.create("orders", 4).expect("same"), CreateOutcome::Unchanged);
        assert_eq!(table.create("orders", 8).expect("grow"), CreateOutcome::Grown);
        assert!(table.create("orders", 2).is_err());
        assert!(matches!(table.create("bad name", 1), Err(Error::InvalidName(_))));
        assert!(matches!(table.create("ok", 0), Err(Error::InvalidArgument(_))));
        let reloaded = TopicTable::load(path).expect("reload");
        assert_eq!(reloaded.get("orders"), Some(TopicConfig { queues: 8 }));
        assert!(reloaded.delete("orders").expect("delete"));
        assert!(!reloaded.delete("orders").expect("delete again"));
    }
}
