//! Broker errors, one `thiserror` enum per layer boundary, and their mapping
//! to the stable wire codes at the edge (`From<Error> for WireError`).

use brook_proto::{ErrorCode, WireError};
use std::io;

/// Result alias for the broker library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong inside the broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed; `context` names which.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A write or fsync failed earlier; the log refuses all writes until a
    /// restart recovers it (an fsync is never retried: its failure may have
    /// dropped dirty pages the kernel will not report again).
    #[error("storage is poisoned after an earlier failure: {0}")]
    Poisoned(String),
    /// A stored record failed its checks.
    #[error("corrupt record at log offset {offset}: {reason}")]
    Corrupt {
        /// Commit-log offset of the record.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A read asked for data retention already deleted.
    #[error("offset {requested} is below the retained range (minimum is {min})")]
    BelowRetained {
        /// Offset asked for.
        requested: u64,
        /// Smallest offset still stored.
        min: u64,
    },
    /// A read asked past the end.
    #[error("offset {requested} is beyond the end ({max})")]
    BeyondEnd {
        /// Offset asked for.
        requested: u64,
        /// One past the largest stored offset.
        max: u64,
    },
    /// The configuration is impossible.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A request named something invalid.
    #[error("{0}")]
    InvalidName(String),
    /// A request carried an out-of-range value.
    #[error("{0}")]
    InvalidArgument(String),
    /// The topic is unknown.
    #[error("topic {0:?} not found")]
    TopicNotFound(String),
    /// The queue id is out of range.
    #[error("queue {queue} out of range: topic {topic:?} has {queues} queues")]
    QueueOutOfRange {
        /// Topic name.
        topic: String,
        /// Queue asked for.
        queue: u32,
        /// Queue count.
        queues: u32,
    },
    /// A message exceeds the size limit.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Another member owns or holds the queue (orderly consumption).
    #[error("not the queue's owner: {0}")]
    NotOwner(String),
    /// No such message (id, offset) or group.
    #[error("not found: {0}")]
    MessageNotFound(String),
    /// The broker is stopping.
    #[error("broker is shutting down")]
    ShuttingDown,
    /// An actor mailbox was closed or full.
    #[error("broker busy: {0}")]
    Busy(String),
    /// An idempotent send skipped a sequence number; nothing was stored.
    #[error("sequence {got} is out of order: the next one expected is {expected}")]
    OutOfOrderSequence {
        /// The send's first sequence number.
        got: u32,
        /// The one expected.
        expected: u32,
    },
    /// An idempotent send under an epoch older than the producer's latest.
    #[error("producer epoch {epoch} is fenced: epoch {latest} has started")]
    ProducerFenced {
        /// The send's epoch.
        epoch: u32,
        /// The latest seen.
        latest: u32,
    },
    /// A repeated sequence whose original answer is no longer kept.
    #[error("sequence {sequence} was stored before; its answer is no longer kept")]
    DuplicateSequence {
        /// The repeated sequence.
        sequence: u32,
    },
    /// The producer table is full.
    #[error("the broker keeps state for at most {0} idempotent producers (max_producers)")]
    TooManyProducers(usize),
    /// The disk is full: writes are refused until space is freed; nothing
    /// of the refused send was stored.
    #[error("disk full since {since_ms} (ms since the epoch): writes are refused until space is freed")]
    DiskFull {
        /// When writes began to be refused.
        since_ms: i64,
    },
    /// Sync replication: the in-sync replicas did not all confirm the
    /// write in time; it is stored on the master but not acknowledged.
    #[error("not every in-sync replica confirmed the write within {timeout_ms} ms (log end {end})")]
    ReplicationTimeout {
        /// `replication_timeout_ms`.
        timeout_ms: u64,
        /// One past the write's last byte.
        end: u64,
    },
    /// Sync replication: too few in-sync replicas; nothing was stored.
    #[error("{in_sync} in-sync replicas, min_insync_replicas = {min}: writes refused")]
    NotEnoughReplicas {
        /// In the set now, the master included.
        in_sync: u32,
        /// The minimum.
        min: u32,
    },
    /// This broker is a slave.
    #[error("broker {0} is a slave: send writes to its master")]
    NotMaster(String),
}

impl Error {
    /// Wraps an `io::Error` with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// Whether this failed only for want of space: a write refused with
    /// ENOSPC or EDQUOT, never a failed fdatasync (see `io::is_out_of_space`).
    pub fn is_out_of_space(&self) -> bool {
        match self {
            Error::Io { source, .. } => crate::io::is_out_of_space(source),
            Error::DiskFull { .. } => true,
            _ => false,
        }
    }
}

/// Adds context to `io::Result`s.
pub trait IoContext<T> {
    /// Maps the error into [`Error::Io`] with a lazily built context.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::io(context(), source))
    }
}

/// An actor that cannot take a message (stopped, or its mailbox full) makes
/// the request fail as busy: the one mapping of actix's mailbox errors.
impl From<actix::MailboxError> for Error {
    fn from(err: actix::MailboxError) -> Self {
        Error::Busy(format!("actor unavailable: {err}"))
    }
}

impl From<Error> for WireError {
    fn from(err: Error) -> Self {
        let code = match &err {
            Error::Io { .. } | Error::Poisoned(_) | Error::Corrupt { .. } => ErrorCode::StorageFailure,
            Error::BelowRetained { .. } => ErrorCode::OffsetBelowRetained,
            Error::BeyondEnd { .. } => ErrorCode::OffsetBeyondEnd,
            Error::Config(_) => ErrorCode::Internal,
            Error::InvalidName(_) => ErrorCode::InvalidName,
            Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
            Error::TopicNotFound(_) => ErrorCode::TopicNotFound,
            Error::QueueOutOfRange { .. } => ErrorCode::QueueOutOfRange,
            Error::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            Error::NotOwner(_) => ErrorCode::NotQueueOwner,
            Error::MessageNotFound(_) => ErrorCode::MessageNotFound,
            Error::ShuttingDown => ErrorCode::ShuttingDown,
            Error::Busy(_) => ErrorCode::BrokerBusy,
            Error::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
            Error::ProducerFenced { .. } => ErrorCode::ProducerFenced,
            Error::DuplicateSequence { .. } => ErrorCode::DuplicateSequence,
            Error::TooManyProducers(_) => ErrorCode::TooManyProducers,
            Error::DiskFull { .. } => ErrorCode::DiskFull,
            Error::ReplicationTimeout { .. } => ErrorCode::ReplicationTimeout,
            Error::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
            Error::NotMaster(_) => ErrorCode::NotMaster,
        };
        let wire = WireError::new(code, err.to_string());
        match err {
            Error::BelowRetained { min, .. } => wire.with_detail(min),
            Error::BeyondEnd { max, .. } => wire.with_detail(max),
            Error::OutOfOrderSequence { expected, .. } => wire.with_detail(u64::from(expected)),
            Error::ProducerFenced { latest, .. } => wire.with_detail(u64::from(latest)),
            Error::DiskFull { since_ms } => wire.with_detail(since_ms.max(0) as u64),
            _ => wire,
        }
    }
}
