//! The broker's actors and the registry that finds them.
//!
//! - [`writer`]: the WriterActor, sole owner of the commit log (group commit).
//! - [`queue`]: one QueueActor per topic-queue (offsets, consume queue, pulls).
//! - [`consumer_group`]: one ConsumerGroupActor per group (members,
//!   assignment, locks, committed offsets).
//! - [`groups`]: the registry of consumer-group actors.
//! - [`housekeeper`]: periodic checkpoints and retention.
//! - [`indexer`]: the IndexActor, owner of the key index.
//! - [`scheduler`]: one SchedulerActor per delay level.
//! - [`timer_wheel`]: the TimerWheelActor, exact-time delivery.
//! - [`txn_checker`]: the TxnCheckerActor, transactional half messages.
//! - [`fanout`]: carries many queues' appends to the queue actors' thread.
//! - [`reput`]: writes the broker makes itself (deliveries, retries, dead
//!   letters).
//!
//! Actor addresses live in a `DashMap` read by every connection; queue actors
//! start on first use, on the arbiters the broker gives the registry (the
//! writer's own, so appends never cross threads between queue and writer).

pub mod consumer_group;
pub mod fanout;
pub mod groups;
pub mod housekeeper;
pub mod indexer;
pub mod queue;
pub mod reput;
pub mod scheduler;
pub mod timer_wheel;
pub mod txn_checker;
pub mod writer;

use crate::store::StorePaths;
use actix::{Actor, Addr, ArbiterHandle};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use queue::QueueActor;
use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use writer::WriterActor;

/// The running actor under `key`, or a new one from `start` if there is
/// none or it has stopped.
pub(crate) fn live_or_start<K, Q, A>(map: &DashMap<K, Addr<A>>, key: &Q, start: impl FnOnce() -> Addr<A>) -> Addr<A>
where
    K: Borrow<Q> + Eq + Hash,
    Q: ToOwned<Owned = K> + Eq + Hash + ?Sized,
    A: Actor,
{
    if let Some(addr) = map.get(key).map(|a| a.clone()).filter(Addr::connected) {
        return addr;
    }
    match map.entry(key.to_owned()) {
        Entry::Occupied(mut slot) => {
            if !slot.get().connected() {
                slot.insert(start());
            }
            slot.get().clone()
        }
        Entry::Vacant(slot) => slot.insert(start()).clone(),
    }
}

/// Finds (and lazily starts) the actor owning each queue.
pub struct Registry {
    writer: Addr<WriterActor>,
    queues: DashMap<String, DashMap<u32, Addr<QueueActor>>>,
    arbiters: Vec<ArbiterHandle>,
    /// On the one queue arbiter; `None` when queue actors are spread over
    /// several (or started in place).
    fanout: Option<Addr<fanout::Fanout>>,
    next_arbiter: AtomicUsize,
    paths: StorePaths,
    cq_per_file: u64,
    segments: Arc<crate::store::segment::SegmentSet>,
    indexer: std::sync::OnceLock<(Addr<indexer::IndexActor>, Arc<indexer::KeyBuffer>)>,
    active: Arc<queue::ActiveQueues>,
    logger: slog::Logger,
}

impl Registry {
    /// A registry starting queue actors on `arbiters` (round robin).
    pub fn new(
        writer: Addr<WriterActor>,
        arbiters: Vec<ArbiterHandle>,
        paths: StorePaths,
        cq_per_file: u64,
        segments: Arc<crate::store::segment::SegmentSet>,
        logger: slog::Logger,
    ) -> Self {
        let fanout = match arbiters.as_slice() {
            [one] => Some(fanout::Fanout::start_in_arbiter(one, |_| fanout::Fanout)),
            _ => None,
        };
        Self {
            writer,
            queues: DashMap::new(),
            arbiters,
            fanout,
            next_arbiter: AtomicUsize::new(0),
            paths,
            cq_per_file,
            segments,
            indexer: std::sync::OnceLock::new(),
            active: Arc::default(),
            logger,
        }
    }

    /// Connects queue actors started from now on to the key index.
    pub fn set_indexer(&self, indexer: Addr<indexer::IndexActor>, keys: Arc<indexer::KeyBuffer>) {
        let _ = self.indexer.set((indexer, keys));
    }

    /// The key index's actor.
    pub fn indexer(&self) -> Option<&Addr<indexer::IndexActor>> {
        self.indexer.get().map(|(addr, _)| addr)
    }

    /// The writer.
    pub fn writer(&self) -> &Addr<WriterActor> {
        &self.writer
    }

    /// Hands each append to its queue actor, in list order. Every store goes
    /// through here, so one caller's appends to a queue keep their order.
    pub fn produce_all(&self, appends: Vec<(Addr<QueueActor>, queue::Produce)>) {
        match &self.fanout {
            Some(fanout) => fanout.do_send(fanout::ProduceAll(appends)),
            None => appends.into_iter().for_each(|(queue, produce)| queue.do_send(produce)),
        }
    }

    /// The actor of `topic`/`queue`, started if needed. The caller has
    /// checked that the queue exists.
    pub fn queue(&self, topic: &str, queue: u32) -> Addr<QueueActor> {
        if let Some(queues) = self.queues.get(topic) {
            return live_or_start(&queues, &queue, || self.start_queue(topic, queue));
        }
        let queues = self.queues.entry(topic.to_string()).or_default();
        live_or_start(&queues, &queue, || self.start_queue(topic, queue))
    }

    fn start_queue(&self, topic: &str, queue: u32) -> Addr<QueueActor> {
        let actor = QueueActor::new(
            format!("{topic}/{queue}"),
            self.paths.queue_dir(topic, queue),
            self.cq_per_file,
            self.segments.min_offset(),
            queue::QueueLinks {
                writer: self.writer.clone(),
                reader: crate::store::commitlog::LogReader::new(self.segments.clone()),
                keys: self.indexer.get().map(|(_, keys)| keys.clone()),
                active: self.active.clone(),
            },
            self.logger.clone(),
        );
        let index = self.next_arbiter.fetch_add(1, Ordering::Relaxed) % self.arbiters.len().max(1);
        match self.arbiters.get(index) {
            Some(arbiter) => QueueActor::start_in_arbiter(arbiter, move |_| actor),
            None => actor.start(),
        }
    }

    /// Queue actors that took appends (or still hold unwritten entries)
    /// since their last barrier; the list is emptied.
    pub fn take_active_queues(&self) -> Vec<Addr<QueueActor>> {
        self.active.take()
    }

    /// Every queue actor currently running.
    pub fn live_queues(&self) -> Vec<Addr<QueueActor>> {
        self.queues.iter().flat_map(|t| t.value().iter().map(|q| q.value().clone()).collect::<Vec<_>>()).collect()
    }

    /// Forgets a topic's actors (after they were told to destroy
    /// themselves).
    pub fn remove_topic(&self, topic: &str) -> Vec<Addr<QueueActor>> {
        self.queues.remove(topic).map(|(_, q)| q.into_iter().map(|(_, a)| a).collect()).unwrap_or_default()
    }
}
