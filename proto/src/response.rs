//! What a broker answers ([`Response`]) and what the answers carry. Like
//! requests, **a response's wire code is its variant index**: append only.

use crate::consumer::{GroupInfo, QueueOffset, QueueRef};
use crate::message::{MessageRef, StoredMessage};
use crate::msg_id::MessageId;
use crate::producer::ProducerSeq;
use crate::txn::TxnReport;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Everything a broker can answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Accepts a hello.
    Hello {
        /// The broker's protocol version.
        version: u16,
        /// The broker's address as message ids name it.
        broker: String,
    },
    /// A topic as it now is.
    Topic(TopicInfo),
    /// Every topic.
    Topics(Vec<TopicInfo>),
    /// Where each sent message was stored, in order.
    Sent(Vec<StoredAck>),
    /// What a pull found.
    Pulled(PullResult),
    /// A request without a payload succeeded.
    Done,
    /// Answer to `Ping`.
    Pong,
    /// A member's queues after a heartbeat.
    Assignment {
        /// Bumps whenever the group's assignment changes.
        generation: u64,
        /// The queues this member consumes now.
        queues: Vec<QueueRef>,
    },
    /// An offset.
    Offset(u64),
    /// A lock was taken or renewed; it lasts this long unless renewed.
    Locked {
        /// Lock lifetime.
        ttl_ms: u64,
    },
    /// Every group.
    Groups(Vec<String>),
    /// One group.
    Group(GroupInfo),
    /// Transactions.
    Transactions(TxnReport),
    /// One message.
    Message(Box<StoredMessage>),
    /// Messages.
    Messages(Vec<StoredMessage>),
    /// An offset per queue.
    QueueOffsets(Vec<QueueOffset>),
    /// A new idempotent producer's id and epoch.
    Producer {
        /// The id, unique on this broker for as long as its data dir lives.
        producer_id: u64,
        /// The epoch its sequences start in.
        epoch: u32,
    },
    /// The broker's state.
    Status(Box<BrokerStatus>),
    /// Where a topic lives (from a name server).
    Route(crate::route::TopicRoute),
    /// Every broker a name server knows.
    Cluster(Vec<crate::route::ClusterBroker>),
    /// The controller's answer.
    Controller(crate::controller::ControllerResponse),
}

/// A topic and, when described, its queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Number of queues.
    pub queues: u32,
    /// Per-queue offset ranges (filled by describe, empty in lists).
    pub queue_stats: Vec<QueueStats>,
}

/// Offset range of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Queue id.
    pub queue: u32,
    /// Smallest offset still stored.
    pub min_offset: u64,
    /// One past the largest stored offset (the next offset to be assigned).
    pub max_offset: u64,
}

/// The fields of a [`Request::Send`] decoded in place from its frame (see
/// [`crate::codec::BrokerCodec`]): the broker's send path reads these.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SendRef<'a> {
    /// Target topic.
    #[serde(borrow)]
    pub topic: &'a str,
    /// Target queue.
    pub queue: u32,
    /// The messages.
    #[serde(borrow)]
    pub messages: Vec<MessageRef<'a>>,
    /// An idempotent producer's sequence, if any.
    pub producer: Option<ProducerSeq>,
}

/// A broker's state as `BrokerStatus` answers it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerStatus {
    /// The broker's version.
    pub version: String,
    /// The address its message ids name.
    pub addr: String,
    /// Whether it takes writes now.
    pub writable: bool,
    /// Since when (ms since the epoch) the disk has been full and writes
    /// refused, if it is.
    pub disk_full_since_ms: Option<i64>,
    /// Why every write is refused until a restart, if a write or fdatasync
    /// failed.
    pub poisoned: Option<String>,
    /// Bytes free on the file system holding the data dir.
    pub disk_free_bytes: u64,
    /// Share of that file system in use (as `df` counts it).
    pub disk_used_ratio: f64,
    /// The oldest log offset retained and one past the newest written.
    pub log_range: (u64, u64),
    /// Topics.
    pub topics: u32,
    /// Milliseconds since the broker started.
    pub uptime_ms: u64,
    /// Its cluster.
    pub cluster: String,
    /// Its replica set.
    pub broker_name: String,
    /// Its id in the replica set (0: master).
    pub broker_id: u64,
    /// Messages stored per second, lately.
    pub msgs_in_per_s: f64,
    /// Messages delivered per second, lately.
    pub msgs_out_per_s: f64,
    /// Its replication.
    pub replica: crate::route::ReplicaStatus,
}

/// Where one sent message was stored, as a send's answer carries it. Its id
/// is not on the wire: an id is the storing broker's address (which the
/// connection's `Hello` named) and the record's log offset, so the client
/// puts it together ([`SendAck::new`]) instead of every answer carrying 33
/// bytes of text per message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAck {
    /// The log offset the message's id names.
    pub log_offset: u64,
    /// Queue it went to.
    pub queue: u32,
    /// Its offset in that queue (for a delayed message: in the broker's
    /// delay queue, until it is delivered).
    pub queue_offset: u64,
    /// For a delayed message, when it will be delivered (ms since the epoch).
    pub deliver_at: Option<i64>,
}

/// The broker's acknowledgement of one stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendAck {
    /// Message id (broker address + commit-log offset); its text is
    /// `msg_id.to_string()`.
    pub msg_id: MessageId,
    /// Queue it went to.
    pub queue: u32,
    /// Its offset in that queue (for a delayed message: in the broker's
    /// delay queue, until it is delivered).
    pub queue_offset: u64,
    /// For a delayed message, when it will be delivered (ms since the epoch).
    pub deliver_at: Option<i64>,
}

impl SendAck {
    /// The acknowledgement `broker` (as its `Hello` named itself) gave as `stored`.
    pub fn new(broker: SocketAddr, stored: StoredAck) -> SendAck {
        SendAck {
            msg_id: MessageId { broker, log_offset: stored.log_offset },
            queue: stored.queue,
            queue_offset: stored.queue_offset,
            deliver_at: stored.deliver_at,
        }
    }
}

/// The result of a pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PullResult {
    /// Messages found, in offset order (filtered ones left out).
    pub messages: Vec<StoredMessage>,
    /// Where the next pull should start (past filtered messages too).
    pub next_offset: u64,
    /// The queue's smallest offset still stored.
    pub min_offset: u64,
    /// One past the queue's largest offset.
    pub max_offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire code of every response; append only, as for requests.
    fn pinned(response: &Response) -> u32 {
        match response {
            Response::Hello { .. } => 0,
            Response::Topic(_) => 1,
            Response::Topics(_) => 2,
            Response::Sent(_) => 3,
            Response::Pulled(_) => 4,
            Response::Done => 5,
            Response::Pong => 6,
            Response::Assignment { .. } => 7,
            Response::Offset(_) => 8,
            Response::Locked { .. } => 9,
            Response::Groups(_) => 10,
            Response::Group(_) => 11,
            Response::Transactions(_) => 12,
            Response::Message(_) => 13,
            Response::Messages(_) => 14,
            Response::QueueOffsets(_) => 15,
            Response::Producer { .. } => 16,
            Response::Status(_) => 17,
            Response::Route(_) => 18,
            Response::Cluster(_) => 19,
            Response::Controller(_) => 20,
        }
    }

    #[test]
    fn every_response_is_encoded_with_its_pinned_code() {
        let topic = TopicInfo { name: String::new(), queues: 1, queue_stats: vec![] };
        let responses = vec![
            Response::Hello { version: 3, broker: String::new() },
            Response::Topic(topic.clone()),
            Response::Topics(vec![topic]),
            Response::Sent(vec![]),
            Response::Pulled(PullResult::default()),
            Response::Done,
            Response::Pong,
            Response::Assignment { generation: 1, queues: vec![] },
            Response::Offset(1),
            Response::Locked { ttl_ms: 1 },
            Response::Groups(vec![]),
            Response::Group(GroupInfo::default()),
            Response::Transactions(TxnReport::default()),
            Response::Message(Box::default()),
            Response::Messages(vec![]),
            Response::QueueOffsets(vec![]),
            Response::Producer { producer_id: 1, epoch: 0 },
            Response::Status(Box::default()),
            Response::Route(crate::route::TopicRoute::default()),
            Response::Cluster(vec![]),
            Response::Controller(crate::controller::ControllerResponse::Set(Default::default())),
        ];
        crate::pinned::assert_codes(&responses, pinned);
    }
}
