//! The queue registry: finds (and lazily starts) the actor owning each
//! topic-queue, on the queue actors' thread (the writer's), and carries
//! appends, checkpoint barriers and tail-write outcomes to that thread
//! through the fanout.

use crate::actors::indexer;
use crate::actors::queue::{self, QueueActor};
use crate::actors::writer::{WriterActor, WriterStats};
use crate::actors::{live_or_start, FastHash, Live};
use crate::store::StorePaths;
use actix::{Actor, Addr, ArbiterHandle};
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A queue's actor and what it is made from (appends use both).
#[derive(Clone)]
pub struct QueueHandle {
    /// The actor.
    pub addr: Addr<QueueActor>,
    /// Its spec.
    pub spec: Arc<queue::QueueSpec>,
}

impl Live for QueueHandle {
    fn live(&self) -> bool {
        self.addr.connected()
    }
}

/// Finds (and lazily starts) the actor owning each queue.
pub struct QueueRegistry {
    writer: Addr<WriterActor>,
    /// Looked up for every send: a fast hash instead of SipHash (names are
    /// validated and their tables hold what admins created).
    queues: DashMap<String, DashMap<u32, QueueHandle, FastHash>, FastHash>,
    /// Where queue actors run: the writer's thread (`None`: the caller's,
    /// which must then be the writer's too). Appends reach a queue's state
    /// directly there, and the writer answers them there.
    arbiter: Option<ArbiterHandle>,
    /// On the queue actors' thread.
    fanout: Addr<queue::fanout::Fanout>,
    /// The writer's counters (produces on their way to it).
    writer_stats: Arc<WriterStats>,
    next_id: AtomicU64,
    paths: StorePaths,
    cq_per_file: u64,
    segments: Arc<crate::store::segment::SegmentSet>,
    indexer: std::sync::OnceLock<(Addr<indexer::IndexActor>, Arc<indexer::KeyBuffer>)>,
    active: Arc<queue::ActiveQueues>,
    /// Set on a slave (its name): every write is refused.
    read_only: std::sync::OnceLock<String>,
    logger: slog::Logger,
}

impl QueueRegistry {
    /// A registry starting queue actors on `arbiter`, the writer's (or on
    /// the caller's thread, which then runs the writer).
    pub fn new(
        (writer, writer_stats): (Addr<WriterActor>, Arc<WriterStats>),
        arbiter: Option<ArbiterHandle>,
        paths: StorePaths,
        cq_per_file: u64,
        segments: Arc<crate::store::segment::SegmentSet>,
        logger: slog::Logger,
    ) -> Self {
        let active: Arc<queue::ActiveQueues> = Arc::default();
        let fanout = {
            let fanout = queue::fanout::Fanout { active: active.clone(), writer_stats: writer_stats.clone() };
            match &arbiter {
                Some(arbiter) => queue::fanout::Fanout::start_in_arbiter(arbiter, |_| fanout),
                None => fanout.start(),
            }
        };
        Self {
            writer,
            writer_stats,
            queues: DashMap::with_hasher(FastHash::default()),
            arbiter,
            fanout,
            next_id: AtomicU64::new(0),
            paths,
            cq_per_file,
            segments,
            indexer: std::sync::OnceLock::new(),
            active,
            read_only: std::sync::OnceLock::new(),
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

    /// Where stored messages' keys wait for the indexer.
    pub fn key_buffer(&self) -> Option<&Arc<indexer::KeyBuffer>> {
        self.indexer.get().map(|(_, keys)| keys)
    }

    /// Refuses every write from now on: this broker (`name`) is a slave,
    /// its log its master's, written only by replication.
    pub fn refuse_writes(&self, name: String) {
        let _ = self.read_only.set(name);
    }

    /// The writer.
    pub fn writer(&self) -> &Addr<WriterActor> {
        &self.writer
    }

    /// Hands each part to its queue, in part order, in one message to the
    /// queues' thread. Every store from a connection goes through here, so
    /// its appends to a queue keep their order.
    pub fn produce_all(&self, produce: queue::fanout::Produce) {
        if let Some(name) = self.read_only.get() {
            let parts = produce.parts.len();
            let outcomes = (0..parts).map(|_| Err(crate::error::Error::NotMaster(name.clone()))).collect();
            produce.reply.send(queue::fanout::Placements { stored: Vec::new(), outcomes });
            return;
        }
        // Counted off by the writer's thread when it takes the produce in.
        self.writer_stats.arriving.fetch_add(1, Ordering::Relaxed);
        self.fanout.do_send(produce);
    }

    /// The actor of `topic`/`queue`, started if needed. The caller has
    /// checked that the queue exists.
    pub fn queue(&self, topic: &str, queue: u32) -> Addr<QueueActor> {
        self.queue_handle(topic, queue).addr
    }

    /// The spec of `topic`/`queue`'s live actor (started if needed), for
    /// appends: they need no address, so none is cloned per append.
    pub fn queue_spec(&self, topic: &str, queue: u32) -> Arc<queue::QueueSpec> {
        if let Some(spec) =
            self.queues.get(topic).and_then(|queues| queues.get(&queue).filter(|h| h.live()).map(|h| h.spec.clone()))
        {
            return spec;
        }
        self.queue_handle(topic, queue).spec
    }

    /// [`QueueRegistry::queue`] with the queue's spec.
    pub fn queue_handle(&self, topic: &str, queue: u32) -> QueueHandle {
        if let Some(queues) = self.queues.get(topic) {
            return live_or_start(&queues, &queue, || self.start_queue(topic, queue));
        }
        let queues = self.queues.entry(topic.to_string()).or_default();
        live_or_start(&queues, &queue, || self.start_queue(topic, queue))
    }

    fn start_queue(&self, topic: &str, queue: u32) -> QueueHandle {
        let spec = Arc::new(queue::QueueSpec::new(
            self.next_id.fetch_add(1, Ordering::Relaxed),
            (topic, queue),
            self.paths.queue_dir(topic, queue),
            (self.cq_per_file, self.segments.min_offset()),
            queue::QueueLinks {
                writer: self.writer.clone(),
                reader: crate::store::commitlog::LogReader::new(self.segments.clone()),
                keys: self.indexer.get().map(|(_, keys)| keys.clone()),
                active: self.active.clone(),
            },
            self.logger.clone(),
        ));
        let built = spec.clone();
        let addr = match &self.arbiter {
            Some(arbiter) => QueueActor::start_in_arbiter(arbiter, move |_| QueueActor::new(built)),
            None => QueueActor::new(built).start(),
        };
        QueueHandle { addr, spec }
    }

    /// Visits queues with a checkpoint's `barrier`: every queue (`all`) or
    /// those that took appends (or still hold unwritten entries) since their
    /// last visit. The answers go into the barrier's round.
    pub fn barrier_queues(&self, barrier: queue::Barrier, all: bool) {
        self.fanout.do_send(queue::fanout::BarrierQueues { barrier, all });
    }

    /// Tells the queues how a checkpoint's tail writes ended, and which
    /// change of the producer table its snapshot holds.
    pub fn tails_written(
        &self,
        tails: Vec<(u64, crate::store::consume_queue::TailWrite)>,
        producers: Option<u64>,
        ok: bool,
    ) {
        if !tails.is_empty() || producers.is_some() {
            self.fanout.do_send(queue::fanout::TailsWritten { tails, producers, ok });
        }
    }

    /// Hands the queues the producer table recovery built; before any send.
    pub fn install_producers(&self, table: crate::store::producers::ProducerTable) {
        self.fanout.do_send(queue::fanout::InstallProducers(table));
    }

    /// Forgets a topic's actors (after they were told to destroy
    /// themselves).
    pub fn remove_topic(&self, topic: &str) -> Vec<Addr<QueueActor>> {
        self.queues.remove(topic).map(|(_, q)| q.into_iter().map(|(_, h)| h.addr).collect()).unwrap_or_default()
    }
}
