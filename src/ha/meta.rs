//! The broker's metadata travels in the log: topic changes, consumer-group
//! offsets (commits and resets) and delay-level progress are written as
//! records of `BROOK_SYS_META` when they happen on the master, so a slave
//! holds them at the same point of the log as the messages they concern —
//! nothing waits for a periodic copy that a failover could outrun. A slave
//! applies each as its record arrives. A record's body is the event as
//! JSON (small, and readable with `brookctl msg`).

use crate::actors::appender::Appender;
use crate::error::{Error, Result};
use crate::store::topics::TopicTable;
use brook_proto::consumer::QueueOffset;
use brook_proto::system::META_TOPIC;
use brook_proto::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One metadata change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaEvent {
    /// Topics created or grown (name, queues) and deleted.
    Topics {
        /// Created or changed.
        set: Vec<(String, u32)>,
        /// Deleted.
        deleted: Vec<String>,
    },
    /// A group's offsets moved (a commit or a reset).
    Offsets {
        /// The group.
        group: String,
        /// Where it now is.
        offsets: Vec<QueueOffset>,
        /// The member whose commit moved them, applied by the commit's
        /// rule (its own offsets in a broadcasting group, never back but
        /// from past a queue's end); none for a reset, which sets them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit_by: Option<String>,
    },
    /// A delay level delivered everything below `offset` of its queue.
    DelayProgress {
        /// The level (1-based).
        level: u32,
        /// Its schedule queue's next offset.
        offset: u64,
    },
}

impl MetaEvent {
    /// The event a meta record's body carries.
    pub fn decode(body: &[u8]) -> Result<Self> {
        serde_json::from_slice(body).map_err(|e| Error::Corrupt { offset: 0, reason: format!("meta record: {e}") })
    }

    fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| Error::InvalidArgument(format!("meta record: {e}")))
    }
}

/// Writes `event` to the log (through the appender, like every write: a
/// slave refuses it, a sync master acknowledges it once replicated).
pub async fn record(appender: &Appender, event: &MetaEvent) -> Result<()> {
    let msg = Message::new(META_TOPIC, event.encode()?);
    appender.append(META_TOPIC, 0, vec![(msg, 0)]).await.map(|_| ())
}

/// A master's watch over its topic table: the whole table at start (a new
/// slave learns every topic), then each change as it happens.
pub async fn watch_topics(topics: Arc<TopicTable>, appender: Appender, logger: slog::Logger) {
    let mut changes = topics.changes();
    let mut known: BTreeMap<String, u32> = BTreeMap::new();
    loop {
        changes.borrow_and_update();
        let now: BTreeMap<String, u32> = topics.list().into_iter().map(|(name, t)| (name, t.queues)).collect();
        let set: Vec<(String, u32)> =
            now.iter().filter(|(name, q)| known.get(*name) != Some(q)).map(|(n, q)| (n.clone(), *q)).collect();
        let deleted: Vec<String> = known.keys().filter(|name| !now.contains_key(*name)).cloned().collect();
        if !set.is_empty() || !deleted.is_empty() {
            match record(&appender, &MetaEvent::Topics { set, deleted }).await {
                Ok(()) => known = now,
                Err(e) => {
                    slog::warn!(logger, "topic change not written to the log; retrying"; "error" => %e);
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// What a slave applies metadata to.
pub struct MetaTargets {
    /// Topics.
    pub topics: Arc<TopicTable>,
    /// Queue actors (a deleted topic's stop).
    pub registry: Arc<crate::actors::queue_registry::QueueRegistry>,
    /// Consumer groups.
    pub groups: Arc<crate::actors::group_registry::GroupRegistry>,
    /// Consume-queue directories.
    pub paths: crate::store::StorePaths,
    /// Delay levels' progress files, level 1 first.
    pub delay_progress: Vec<Arc<crate::store::progress::ProgressFile>>,
}

impl MetaTargets {
    /// Applies one event the master wrote.
    pub async fn apply(&self, event: MetaEvent) -> Result<()> {
        match event {
            MetaEvent::Topics { set, deleted } => {
                for (name, queues) in set {
                    self.topics.create(&name, queues)?;
                }
                for name in deleted {
                    crate::server::handlers::topics::remove(&self.topics, &self.registry, &self.paths, &name).await?;
                }
            }
            MetaEvent::Offsets { group, offsets, commit_by: Some(member) } => {
                let commit = crate::actors::consumer_group::messages::Commit { member, offsets, generation: 0 };
                self.groups.get(&group)?.send(commit).await??;
            }
            MetaEvent::Offsets { group, offsets, commit_by: None } => {
                let mut by_topic: BTreeMap<String, Vec<QueueOffset>> = BTreeMap::new();
                for offset in offsets {
                    by_topic.entry(offset.topic.clone()).or_default().push(offset);
                }
                let actor = self.groups.get(&group)?;
                for (topic, offsets) in by_topic {
                    actor.send(crate::actors::consumer_group::messages::Reset { topic, offsets }).await?;
                }
            }
            MetaEvent::DelayProgress { level, offset } => {
                let file = level.checked_sub(1).and_then(|i| self.delay_progress.get(i as usize));
                if let Some(file) = file {
                    file.store(&[offset]).map_err(|e| Error::io("store delay progress", e))?;
                }
            }
        }
        Ok(())
    }
}
