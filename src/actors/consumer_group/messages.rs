//! What a consumer group's mailbox takes.

use crate::actors::consumer_group::ClientHandle;
use crate::error::Result;
use actix::prelude::*;
use brook_proto::request::{GroupInfo, Heartbeat, QueueOffset, QueueRef, RetryPolicy};

/// A member's heartbeat, with the connection it came on.
#[derive(Message)]
#[rtype(result = "Result<(u64, Vec<QueueRef>)>")]
pub struct Beat {
    /// The heartbeat.
    pub heartbeat: Heartbeat,
    /// Its connection.
    pub client: ClientHandle,
}

/// A member leaves.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// Member id.
    pub member: String,
}

/// A connection closed: its members are gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectionClosed {
    /// The connection.
    pub conn_id: u64,
}

/// Commit offsets. Answers the offsets it moved, where they now are.
#[derive(Message)]
#[rtype(result = "Result<Vec<QueueOffset>>")]
pub struct Commit {
    /// Committing member.
    pub member: String,
    /// The offsets.
    pub offsets: Vec<QueueOffset>,
    /// The generation the member consumed under (0: not tracked).
    pub generation: u64,
}

/// Where a member should start on a queue.
#[derive(Message)]
#[rtype(result = "Result<u64>")]
pub struct Fetch {
    /// Asking member.
    pub member: String,
    /// The queue.
    pub queue: QueueRef,
}

/// Take or renew an orderly lock.
#[derive(Message)]
#[rtype(result = "Result<u64>")]
pub struct Lock {
    /// Asking member.
    pub member: String,
    /// The queue.
    pub queue: QueueRef,
}

/// Release an orderly lock.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unlock {
    /// Releasing member.
    pub member: String,
    /// The queue.
    pub queue: QueueRef,
}

/// Describe the group.
#[derive(Message)]
#[rtype(result = "Result<GroupInfo>")]
pub struct Describe;

/// Sets committed offsets regardless of where they are (backtrack or skip),
/// and tells every member to restart those queues.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reset {
    /// Topic.
    pub topic: String,
    /// New offsets.
    pub offsets: Vec<QueueOffset>,
}

/// The group's retry policy (from its latest heartbeat).
#[derive(Message)]
#[rtype(result = "RetryPolicy")]
pub struct GetRetryPolicy;

/// Write committed offsets now (shutdown).
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct FlushOffsets;

/// Retention deleted log segments: each queue's first offset now (only the
/// queues it moved). The group counts, logs and keeps what it had not
/// consumed; answers the messages it lost in this pass.
#[derive(Message)]
#[rtype(result = "u64")]
pub struct RetentionDeleted {
    /// (topic, queue) → first offset left.
    pub mins: std::sync::Arc<std::collections::HashMap<(String, u32), u64>>,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

/// The committed offsets of a group with live members: what retention
/// keeps when `store.retention_protect_unconsumed` is set. Empty for a
/// group without members.
#[derive(Message)]
#[rtype(result = "Vec<(String, u32, u64)>")]
pub struct NeededOffsets;

/// The cluster-wide queue lists changed (a broker joined or left a
/// topic's route): allocate again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoutesChanged;
