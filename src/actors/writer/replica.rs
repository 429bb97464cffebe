//! The writer's part in replication. On a master under `sync` replication
//! a written group is answered — its entries made readable, its sends
//! acknowledged — only once every in-sync slave holds it ([`ReplicaGate`]):
//! consumers, schedulers and the key index never see what a failover
//! could lose. On a slave the writer takes its master's bytes
//! ([`Replicate`]) at their offsets, the one writer of the log there too.

use super::syncer::{self, Unsynced, Waiter};
use super::WriterActor;
use crate::error::{Error, Result};
use crate::store::commitlog::GroupError;
use actix::prelude::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One past the last byte every in-sync slave holds (`u64::MAX`: no slave
/// is in the set, nothing to wait for). Kept by replication, read here.
pub type ReplicatedTo = Arc<AtomicU64>;

/// Holds written groups until their slaves have them (sent once, at
/// start, by a master under `sync` replication).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct ReplicaGateConfig {
    /// What the slaves hold.
    pub replicated_to: ReplicatedTo,
}

/// `ReplicatedTo` moved: groups it now covers are answered.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReplicasAdvanced;

/// A slave's write: its master's log bytes from `offset` (this log's end).
/// `done` runs on the writer's thread with the log's new end once they are
/// written (the queues' states live there: the slave makes the records
/// readable right in it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Replicate {
    /// Log offset of the first byte.
    pub offset: u64,
    /// The bytes (shared: the slave's applier scans them too).
    pub bytes: bytes::Bytes,
    /// Called with the log's end after the write (or why not).
    pub done: Box<dyn FnOnce(Result<u64>) + Send>,
}

/// Written groups waiting for their replicas, in log order.
#[derive(Default)]
pub(super) struct ReplicaGate {
    replicated_to: Option<ReplicatedTo>,
    held: VecDeque<(u64, Unsynced)>,
}

impl ReplicaGate {
    fn covers(&self, end: u64) -> bool {
        self.replicated_to.as_ref().is_none_or(|to| to.load(Ordering::Acquire) >= end)
    }

    /// `at` with what is visible capped at the first held group: its
    /// records (and everything after) are not in their queues yet.
    pub(super) fn visible(&self, at: super::SyncedAt) -> super::SyncedAt {
        let held_from = self.held.front().map_or(u64::MAX, |(_, group)| group.start());
        super::SyncedAt { visible_to: at.visible_to.min(held_from), ..at }
    }

    /// Fails every held group (the writer is poisoned).
    pub(super) fn fail_all(&mut self, msg: &str) {
        for (_, group) in self.held.drain(..) {
            syncer::fail(Waiter::Group(group), msg);
        }
    }
}

impl WriterActor {
    /// A group written (and synced, under sync flush) is answered, unless
    /// it must wait for its replicas; it never passes one held before it.
    pub(super) fn release(&mut self, group: Unsynced) {
        let end = group.end();
        if self.gate.held.is_empty() && self.gate.covers(end) {
            group.answer();
        } else {
            self.gate.held.push_back((end, group));
        }
    }

    fn release_held(&mut self) {
        while self.gate.held.front().is_some_and(|(end, _)| self.gate.covers(*end)) {
            if let Some((_, group)) = self.gate.held.pop_front() {
                group.answer();
            }
        }
    }

    /// Writes a slave's replicated bytes (the log is at rest).
    pub(super) fn write_replicated(&mut self, replicated: Replicate, ctx: &mut Context<Self>) {
        let Some(mut log) = self.log.take() else {
            self.replicas.push_front(replicated);
            return;
        };
        let Replicate { offset, bytes, done } = replicated;
        let work = async move {
            let result = log.write_replicated(offset, bytes).await;
            (log, result)
        };
        ctx.spawn(work.into_actor(self).map(move |(mut log, result), act, ctx| {
            act.position = log.write_pos();
            act.stats.write_pos.store(act.position, Ordering::Relaxed);
            act.report_prepare_failure(&mut log);
            act.log = Some(log);
            match result {
                Ok(()) => {
                    if act.config.flush == crate::config::FlushMode::Sync {
                        act.detach_sync(Vec::new());
                    }
                    done(Ok(act.position));
                }
                Err(GroupError::OutOfSpace(e)) => {
                    let full = act.enter_full(&e);
                    done(Err(full.error()));
                }
                Err(GroupError::Failed(e)) => {
                    let msg = act.poison("replicated write failed", &e);
                    done(Err(Error::Poisoned(msg)));
                }
            }
            act.stats.moved();
            act.dispatch(ctx);
        }));
    }
}

impl Handler<ReplicaGateConfig> for WriterActor {
    type Result = ();

    fn handle(&mut self, config: ReplicaGateConfig, _: &mut Context<Self>) {
        self.gate.replicated_to = Some(config.replicated_to);
    }
}

impl Handler<ReplicasAdvanced> for WriterActor {
    type Result = ();

    fn handle(&mut self, _: ReplicasAdvanced, _: &mut Context<Self>) {
        self.release_held();
    }
}

impl Handler<Replicate> for WriterActor {
    type Result = ();

    fn handle(&mut self, replicated: Replicate, ctx: &mut Context<Self>) {
        if let Some(err) = self.poisoned_error() {
            (replicated.done)(Err(err));
            return;
        }
        if let Some(full) = self.full {
            (replicated.done)(Err(full.error()));
            return;
        }
        self.replicas.push_back(replicated);
        self.dispatch(ctx);
    }
}
