//! What a queue is made from ([`QueueSpec`]) and what it works with besides
//! its own files ([`QueueLinks`]): shared by its actor, the registry and the
//! appends in flight, and never mutated but for the stop flags.

use crate::actors::indexer::KeyBuffer;
use crate::actors::queue::barrier::ActiveQueues;
use crate::actors::writer::WriterActor;
use crate::store::commitlog::LogReader;
use crate::store::producers::{store_id, topic_hash};
use actix::Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

/// What a queue actor works with besides its own files.
pub struct QueueLinks {
    /// The writer its appends go to.
    pub writer: Addr<WriterActor>,
    /// Log reads.
    pub reader: LogReader,
    /// Where the keys of stored messages go.
    pub keys: Option<Arc<KeyBuffer>>,
    /// Where the queue lists itself when it takes appends.
    pub active: Arc<ActiveQueues>,
}

/// What a queue is made from; shared by its actor, the registry and the
/// appends in flight.
pub struct QueueSpec {
    /// Identifies the queue's state on its thread.
    pub(super) id: u64,
    pub(super) name: String,
    /// Its topic and queue number.
    pub(crate) topic: Box<str>,
    pub(crate) queue: u32,
    /// What the producer table knows it by ([`store_id`]).
    pub(crate) store_id: u64,
    /// Its topic's hash in the producer table's lanes.
    pub(crate) topic_hash: u64,
    pub(super) dir: PathBuf,
    pub(super) per_file: u64,
    /// Smallest stored log offset when the queue was started.
    pub(super) log_min: u64,
    pub(crate) links: QueueLinks,
    /// Set by `Destroy`: appends still on their way are refused.
    pub(super) destroyed: AtomicBool,
    /// Set when the actor stops (destroyed, or shutdown): its state is
    /// gone from the thread and must not be reopened by a late append.
    pub(super) stopped: AtomicBool,
    /// Where its state sits in the table of the thread that opened it.
    pub(super) slot: AtomicUsize,
    pub(super) logger: slog::Logger,
}

impl QueueSpec {
    /// A queue stored in `dir`; `id` must be unique among live queues.
    pub fn new(
        id: u64,
        (topic, queue): (&str, u32),
        dir: PathBuf,
        (per_file, log_min): (u64, u64),
        links: QueueLinks,
        logger: slog::Logger,
    ) -> Self {
        Self {
            id,
            name: format!("{topic}/{queue}"),
            topic: topic.into(),
            queue,
            store_id: store_id(topic, queue),
            topic_hash: topic_hash(topic),
            dir,
            per_file,
            log_min,
            links,
            destroyed: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            slot: AtomicUsize::new(usize::MAX),
            logger,
        }
    }
}
