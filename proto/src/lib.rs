//! brook's wire protocol: the types a broker and its clients exchange and the
//! frame codec that carries them, written once and shared by both sides.
//!
//! # Layout
//! - [`frame`]: the envelope (`Frame`) — requests and responses with ids,
//!   flowing in both directions on one connection.
//! - [`request`]: what can be asked (`Request`); the variant index is the
//!   wire code.
//! - [`response`]: what is answered (`Response`) and what answers carry.
//! - [`consumer`]: heartbeats, subscriptions, offsets, group descriptions.
//! - [`txn`]: transaction outcomes and reports.
//! - [`route`]: clusters and routes as name servers keep them.
//! - [`ha`]: replication between a master and its slaves.
//! - [`message`]: a message as produced (`Message`) and as stored
//!   (`StoredMessage`).
//! - [`error`]: the wire error (`WireError`) with stable numeric codes.
//! - [`codec`]: length-prefixed bincode frames, size-checked before allocation.
//! - [`msg_id`]: message ids that decode to a broker address and a commit-log
//!   offset.
//! - [`names`]: validation rules for topic and group names.
//! - [`producer`]: the idempotent producer's id, epoch and sequence.
//! - [`hash`]: the string hash (tag hashes, sharding keys).
//! - [`system`]: reserved topics and properties (delays, retries, dead
//!   letters).
//! - [`time`]: durations as config and command lines write them; wall-clock
//!   milliseconds.

pub mod codec;
pub mod consumer;
pub mod controller;
pub mod error;
pub mod frame;
pub mod ha;
pub mod hash;
pub mod message;
pub mod msg_id;
pub mod names;
pub mod producer;
pub mod request;
pub mod response;
pub mod route;
pub mod system;
pub mod time;
pub mod txn;

pub use codec::{BrokerCodec, CodecError, FrameCodec, Incoming, Outbound, PulledFrame};
pub use error::{ErrorCode, WireError};
pub use frame::Frame;
pub use message::{Message, MessageOut, MessageRef, PropertiesRef, StoredMessage, StoredMessageOut};
pub use msg_id::MessageId;
pub use producer::ProducerSeq;
pub use request::{Request, Response, SendAck, SendRef, StoredAck};

/// The protocol version a hello carries. A broker refuses versions it does not
/// know with [`ErrorCode::UnsupportedVersion`]. 5: statuses and registrations
/// carry replication (`ReplicaStatus`). 4: sends carry an idempotent
/// producer's sequence, and `InitProducer` gives producers their ids. 3:
/// send answers carry log offsets, not message id strings.
pub const PROTOCOL_VERSION: u16 = 6;

/// Most messages one send may carry.
pub const MAX_SEND_MESSAGES: usize = 65_536;

/// Default largest frame (length prefix excluded) either side accepts.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;

/// Hard ceiling for a configured maximum frame size; the bincode decode limit
/// is derived from it so that no claimed length can force a larger allocation.
pub const MAX_FRAME_BYTES_CEILING: usize = 64 << 20;

/// What the wire-code tests of [`request`] and [`response`] share.
#[cfg(test)]
pub(crate) mod pinned {
    use serde::de::DeserializeOwned;
    use serde::Serialize;
    use std::fmt::Debug;

    /// Checks that `values` hold one variant of each kind in code order,
    /// that each encodes with its pinned code (its variant index) first,
    /// and that each decodes back to itself.
    pub(crate) fn assert_codes<T: Serialize + DeserializeOwned + PartialEq + Debug>(values: &[T], code: fn(&T) -> u32) {
        let codes: Vec<u32> = values.iter().map(code).collect();
        assert_eq!(codes, (0..values.len() as u32).collect::<Vec<_>>(), "one of each kind, in code order");
        let config = bincode::config::standard();
        for value in values {
            let bytes = bincode::serde::encode_to_vec(value, config).expect("encode");
            let (index, _): (u32, usize) = bincode::decode_from_slice(&bytes, config).expect("variant index");
            assert_eq!(index, code(value), "{value:?}");
            let (back, _): (T, usize) = bincode::serde::decode_from_slice(&bytes, config).expect("decode");
            assert_eq!(&back, value);
        }
    }
}
