//! The broker's actors and the registries that find them.
//!
//! The append pipeline, in order: a connection's sends (or the broker's own
//! writes, through the [`appender`]) reach the queues' thread through the
//! fanout ([`queue::fanout`]); each [`queue`] assigns offsets; the
//! [`writer`] writes the group and answers on that same thread, where the
//! queues append their consume-queue entries and wake parked pulls.
//!
//! - [`appender`]: every write into queues (encoding, the fanout hand-off,
//!   waiting for placements); deliveries, retries and dead letters use it.
//! - [`queue`]: one QueueActor per topic-queue (offsets, consume queue, pulls).
//! - [`writer`]: the WriterActor, sole owner of the commit log (group commit).
//! - [`queue_registry`]: finds and starts queue actors.
//! - [`consumer_group`]: one ConsumerGroupActor per group (members,
//!   assignment, locks, committed offsets).
//! - [`group_registry`]: finds and starts consumer-group actors.
//! - [`producer_registry`]: the connections of each producer group.
//! - [`housekeeper`]: periodic checkpoints and retention.
//! - [`indexer`]: the IndexActor, owner of the key index.
//! - [`scheduler`]: one SchedulerActor per delay level.
//! - [`timer_wheel`]: the TimerWheelActor, exact-time delivery.
//! - [`txn_checker`]: the TxnCheckerActor, transactional half messages.
//!
//! Actor addresses live in a `DashMap` read by every connection; queue actors
//! start on first use, on the writer's thread, where their state lives: the
//! fanout applies appends to it and the writer answers into it directly.

pub mod appender;
pub mod consumer_group;
pub mod group_registry;
pub mod housekeeper;
pub mod indexer;
pub mod producer_registry;
pub mod queue;
pub mod queue_registry;
pub mod scheduler;
pub mod timer_wheel;
pub mod txn_checker;
pub mod writer;

use actix::{Actor, Addr};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

/// Something the registries hand out that can tell whether its actor still
/// runs.
pub(crate) trait Live: Clone {
    /// Whether the actor is running.
    fn live(&self) -> bool;
}

impl<A: Actor> Live for Addr<A> {
    fn live(&self) -> bool {
        self.connected()
    }
}

/// The running actor under `key`, or a new one from `start` if there is
/// none or it has stopped.
pub(crate) fn live_or_start<K, Q, L, S>(map: &DashMap<K, L, S>, key: &Q, start: impl FnOnce() -> L) -> L
where
    K: Borrow<Q> + Eq + Hash,
    Q: ToOwned<Owned = K> + Eq + Hash + ?Sized,
    L: Live,
    S: BuildHasher + Clone,
{
    if let Some(found) = map.get(key).map(|a| a.clone()).filter(Live::live) {
        return found;
    }
    match map.entry(key.to_owned()) {
        Entry::Occupied(mut slot) => {
            if !slot.get().live() {
                slot.insert(start());
            }
            slot.get().clone()
        }
        Entry::Vacant(slot) => slot.insert(start()).clone(),
    }
}

/// The hasher of maps on the send path.
pub(crate) type FastHash = foldhash::fast::RandomState;
