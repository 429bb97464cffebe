//! What a client call can fail with.

use brook_proto::{ErrorCode, WireError};

/// A client-side error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The broker answered with an error.
    #[error("broker error: {0}")]
    Broker(WireError),
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Connection(String),
    /// The broker answered something the request does not expect.
    #[error("protocol: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The caller passed something invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// An earlier send of the same producer to the same queue failed
    /// first, and this one was given up with it so that nothing is stored
    /// after a gap (it may have been stored before the failure showed).
    #[error("an earlier send to the queue failed first{}: {cause}", sequence.map(|s| format!(" (sequence {s})")).unwrap_or_default())]
    Aborted {
        /// The sequence number of the send that failed first (idempotent
        /// producers).
        sequence: Option<u32>,
        /// Why it failed.
        cause: String,
    },
    /// The broker a send had to go to (the one holding its sharding key's
    /// queue, say) is down or out of the route.
    #[error("broker {broker} is unavailable: {cause}")]
    Unavailable {
        /// Its replica set name (or address, for a directly named broker).
        broker: String,
        /// Why.
        cause: String,
    },
}

impl ClientError {
    /// The broker's error code, if the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker(e) => Some(e.code),
            _ => None,
        }
    }

    /// The number the broker attached to its error (the smallest retained
    /// offset for `OffsetBelowRetained`, say).
    pub fn detail(&self) -> Option<u64> {
        match self {
            ClientError::Broker(e) => e.detail,
            _ => None,
        }
    }

    /// Whether retrying the same call may succeed (a lost connection, a busy
    /// or stopping broker).
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Broker(e) => e.code.is_retriable(),
            ClientError::Connection(_) | ClientError::Timeout(_) | ClientError::Unavailable { .. } => true,
            _ => false,
        }
    }
}

impl From<WireError> for ClientError {
    fn from(e: WireError) -> Self {
        ClientError::Broker(e)
    }
}
