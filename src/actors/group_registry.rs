//! The group registry: finds (and lazily starts) each consumer group's
//! actor, and fans connection-closed notices and the shutdown flush out to
//! every running group.

use crate::actors::consumer_group::{
    ConnectionClosed, ConsumerGroupActor, FlushOffsets, RetentionDeleted, RoutesChanged,
};
use crate::actors::live_or_start;
use crate::actors::queue_registry::QueueRegistry;
use crate::cluster::view::ClusterView;
use crate::config::GroupsConfig;
use crate::error::{Error, Result};
use crate::store::group_state;
use crate::store::topics::TopicTable;
use actix::prelude::*;
use brook_proto::names::validate_name;
use dashmap::DashMap;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// Finds (and lazily starts) each group's actor.
pub struct GroupRegistry {
    actors: DashMap<String, Addr<ConsumerGroupActor>>,
    registry: Arc<QueueRegistry>,
    topics: Arc<TopicTable>,
    dir: PathBuf,
    config: GroupsConfig,
    arbiter: Option<ArbiterHandle>,
    view: Arc<ClusterView>,
    logger: slog::Logger,
}

impl GroupRegistry {
    /// Groups stored under `dir`, actors started on `arbiter`, allocating
    /// over `view`'s cluster-wide queue lists. Must run inside a runtime:
    /// a change of those lists wakes every running group to rebalance.
    pub fn new(
        registry: Arc<QueueRegistry>,
        topics: Arc<TopicTable>,
        dir: PathBuf,
        config: GroupsConfig,
        (arbiter, view): (Option<ArbiterHandle>, Arc<ClusterView>),
        logger: slog::Logger,
    ) -> Arc<Self> {
        let groups = Arc::new(Self { actors: DashMap::new(), registry, topics, dir, config, arbiter, view, logger });
        let mut changes = groups.view.changes();
        let weak = Arc::downgrade(&groups);
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Some(groups) = weak.upgrade() else { return };
                for (_, addr) in groups.live() {
                    addr.do_send(RoutesChanged);
                }
            }
        });
        groups
    }

    /// The actor of `group`, started if needed.
    pub fn get(&self, group: &str) -> Result<Addr<ConsumerGroupActor>> {
        validate_name("group", group).map_err(Error::InvalidName)?;
        Ok(live_or_start(&self.actors, group, || self.start(group)))
    }

    fn start(&self, group: &str) -> Addr<ConsumerGroupActor> {
        let actor = ConsumerGroupActor::new(
            group.to_string(),
            self.dir.clone(),
            self.config.clone(),
            (self.registry.clone(), self.view.clone()),
            self.topics.clone(),
            self.logger.clone(),
        );
        match &self.arbiter {
            Some(arbiter) => ConsumerGroupActor::start_in_arbiter(arbiter, move |_| actor),
            None => actor.start(),
        }
    }

    /// Groups with a running actor.
    pub fn live(&self) -> Vec<(String, Addr<ConsumerGroupActor>)> {
        self.actors.iter().map(|e| (e.key().clone(), e.value().clone())).collect()
    }

    /// Every group known: running or stored.
    pub fn known(&self) -> Vec<String> {
        let mut all: BTreeSet<String> = group_state::list(&self.dir).unwrap_or_default().into_iter().collect();
        all.extend(self.actors.iter().map(|e| e.key().clone()));
        all.into_iter().collect()
    }

    /// Tells every running group that a connection closed.
    pub fn connection_closed(&self, conn_id: u64) {
        for entry in self.actors.iter() {
            entry.value().do_send(ConnectionClosed { conn_id });
        }
    }

    /// Tells every known group which queues' first offsets retention moved
    /// (starting the actors of stored groups: an idle group loses messages
    /// too); answers the messages they lost in all.
    pub async fn retention_deleted(&self, mins: Arc<HashMap<(String, u32), u64>>, at_ms: i64) -> u64 {
        if mins.is_empty() {
            return 0;
        }
        let mut lost = 0;
        for group in self.known() {
            let Ok(addr) = self.get(&group) else { continue };
            lost += addr.send(RetentionDeleted { mins: mins.clone(), at_ms }).await.unwrap_or(0);
        }
        lost
    }

    /// Writes every running group's offsets (shutdown).
    pub async fn flush_all(&self) -> Result<()> {
        for (_, addr) in self.live() {
            addr.send(FlushOffsets).await??;
        }
        Ok(())
    }
}
