//! The error a broker answers with: a stable numeric code the client can act
//! on, plus a human message. Codes are part of the protocol: never renumber.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Stable error codes. New codes are appended; existing ones never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// A code this side does not know (sent by a newer peer).
    Unknown = 0,
    /// The hello carried a protocol version the broker does not speak.
    UnsupportedVersion = 1,
    /// The first frame on a connection was not a hello.
    HelloRequired = 2,
    /// A frame could not be decoded.
    MalformedFrame = 3,
    /// A frame's length prefix exceeds the maximum frame size.
    FrameTooLarge = 4,
    /// A name (topic, group) breaks the naming rules.
    InvalidName = 5,
    /// A value (count, size, limit) is out of range.
    InvalidArgument = 6,
    /// The topic does not exist.
    TopicNotFound = 7,
    /// The topic already exists with a different definition.
    TopicExists = 8,
    /// The queue id is not below the topic's queue count.
    QueueOutOfRange = 9,
    /// A message body is larger than the broker accepts.
    MessageTooLarge = 10,
    /// The requested offset was deleted by retention.
    OffsetBelowRetained = 11,
    /// The requested offset is past the end of the queue.
    OffsetBeyondEnd = 12,
    /// The caller is not the queue's current owner (orderly consumption).
    NotQueueOwner = 13,
    /// The broker is overloaded or shutting down; retry later.
    BrokerBusy = 14,
    /// Storage failed (I/O error, poisoned log); the broker refuses writes.
    StorageFailure = 15,
    /// The consumer group does not exist.
    GroupNotFound = 16,
    /// The message id does not decode or points at nothing.
    MessageNotFound = 17,
    /// The broker is shutting down.
    ShuttingDown = 18,
    /// A broker-side invariant broke; the message says which.
    Internal = 19,
    /// A request needs a capability the broker has switched off.
    NotSupported = 20,
    /// An idempotent send's sequence is past the next one the broker
    /// expects for its producer and queue (an earlier send is missing);
    /// nothing was stored. `detail` is the sequence expected.
    OutOfOrderSequence = 21,
    /// An idempotent send carries an epoch older than its producer's latest
    /// on that queue: a stale retry; nothing was stored.
    ProducerFenced = 22,
    /// An idempotent send repeats a sequence stored so long ago that its
    /// original answer is no longer kept: it was stored once, not again.
    DuplicateSequence = 23,
    /// The broker keeps sequence state for its maximum number of producers
    /// (`max_producers`); a new producer's send is refused.
    TooManyProducers = 24,
    /// The broker's disk is full: it refuses writes (nothing of the send was
    /// stored) until space is freed, and takes them again by itself.
    /// `detail` is when it began (ms since the epoch). Retriable.
    DiskFull = 25,
    /// Under `sync` replication the send was stored on the master but not
    /// every in-sync replica confirmed it within `replication_timeout_ms`:
    /// it is not acknowledged (and not delivered until it is replicated or
    /// the lagging replica leaves the in-sync set).
    ReplicationTimeout = 26,
    /// Under `sync` replication the in-sync set is smaller than
    /// `min_insync_replicas`: nothing of the send was stored. Retriable.
    NotEnoughReplicas = 27,
    /// The broker is a slave: it serves reads, and writes go to its master.
    NotMaster = 28,
    /// The controller has no leader (no quorum of its voters), or none
    /// runs where the request was sent. Retriable.
    ControllerUnavailable = 29,
    /// A controller request from a stale master or epoch: refused.
    Fenced = 30,
}

impl ErrorCode {
    /// Maps a number from the wire back to a code; unknown numbers map to
    /// [`ErrorCode::Unknown`] so an old client survives a newer broker.
    pub fn from_u32(code: u32) -> Self {
        use ErrorCode::*;
        const ALL: [ErrorCode; 31] = [
            Unknown,
            UnsupportedVersion,
            HelloRequired,
            MalformedFrame,
            FrameTooLarge,
            InvalidName,
            InvalidArgument,
            TopicNotFound,
            TopicExists,
            QueueOutOfRange,
            MessageTooLarge,
            OffsetBelowRetained,
            OffsetBeyondEnd,
            NotQueueOwner,
            BrokerBusy,
            StorageFailure,
            GroupNotFound,
            MessageNotFound,
            ShuttingDown,
            Internal,
            NotSupported,
            OutOfOrderSequence,
            ProducerFenced,
            DuplicateSequence,
            TooManyProducers,
            DiskFull,
            ReplicationTimeout,
            NotEnoughReplicas,
            NotMaster,
            ControllerUnavailable,
            Fenced,
        ];
        ALL.iter().copied().find(|c| *c as u32 == code).unwrap_or(Unknown)
    }

    /// Whether a client may retry the same request later and expect success.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::BrokerBusy
                | ErrorCode::ShuttingDown
                | ErrorCode::DiskFull
                | ErrorCode::NotEnoughReplicas
                | ErrorCode::ControllerUnavailable
        )
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(*self as u32)
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        u32::deserialize(deserializer).map(ErrorCode::from_u32)
    }
}

/// An error as it travels on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// What went wrong, as a stable code.
    pub code: ErrorCode,
    /// A human-readable explanation with the offending value where useful.
    pub message: String,
    /// Extra number for codes that carry one (for `OffsetBelowRetained`: the
    /// queue's current minimum offset).
    pub detail: Option<u64>,
}

impl WireError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), detail: None }
    }

    /// Attaches the code-specific number.
    #[must_use]
    pub fn with_detail(mut self, detail: u64) -> Self {
        self.detail = Some(detail);
        self
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({}): {}", self.code, self.code as u32, self.message)
    }
}

impl std::error::Error for WireError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_maps_to_unknown() {
        for n in 0..=28 {
            assert_eq!(ErrorCode::from_u32(n) as u32, n);
        }
        assert_eq!(ErrorCode::from_u32(9999), ErrorCode::Unknown);
    }
}
