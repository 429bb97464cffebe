//! Requests and their responses. One variant per operation; the broker's
//! `server::dispatch` routes each to the actor that owns it.

use crate::message::{Message, MessageRef, StoredMessage};
use crate::msg_id::MessageId;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Everything a peer can ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Opens a connection; must be the first frame.
    Hello {
        /// The protocol version the client speaks.
        version: u16,
        /// A name for logs and group membership.
        client_id: String,
    },
    /// Creates a topic, or grows its queue count.
    CreateTopic {
        /// Topic name, `[A-Za-z0-9_%-]{1,127}`.
        name: String,
        /// Number of queues (at least 1; may grow, never shrink).
        queues: u32,
    },
    /// Deletes a topic and its consume queues.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// Lists every topic.
    ListTopics,
    /// Describes one topic: its queues and their offset ranges.
    DescribeTopic {
        /// Topic name.
        name: String,
    },
    /// Stores messages of one topic into one queue, in order.
    Send {
        /// Target topic; every message must name it.
        topic: String,
        /// Target queue.
        queue: u32,
        /// The messages (one for a plain send, many for a batch).
        messages: Vec<Message>,
    },
    /// Reads messages from a queue starting at an offset.
    Pull {
        /// Topic name.
        topic: String,
        /// Queue id.
        queue: u32,
        /// First queue offset wanted.
        offset: u64,
        /// Most messages to return.
        max_messages: u32,
        /// Most body bytes to return (at least one message is returned).
        max_bytes: u32,
        /// Tag expression (`*`, `TagA`, `TagA || TagB`); `None` means all.
        tags: Option<String>,
        /// When nothing is there, how long the broker may park the request
        /// waiting for a message (0 answers at once).
        long_poll_ms: u64,
        /// Property filter (RocketMQ's SQL92 subset), evaluated on the
        /// broker; `None` means all.
        sql: Option<String>,
    },
    /// Liveness check.
    Ping,
    /// A consumer joins or stays in a group; answered with its queues.
    Heartbeat(Heartbeat),
    /// A consumer leaves its group (its queues are reassigned at once).
    LeaveGroup {
        /// Group name.
        group: String,
        /// The member leaving.
        member: String,
    },
    /// Records how far a member has consumed.
    CommitOffsets {
        /// Group name.
        group: String,
        /// The committing member (offsets are per member in broadcasting).
        member: String,
        /// New committed offsets: the next offset to consume per queue.
        offsets: Vec<QueueOffset>,
        /// The assignment generation the member consumed under; commits
        /// from before the group's last offset reset are ignored. 0: not
        /// tracked (always applied).
        generation: u64,
    },
    /// Moves a group's committed offsets on a topic (backtrack or skip);
    /// live members are told and resume from the new offsets.
    ResetOffsets {
        /// Group name.
        group: String,
        /// Topic (a retry topic too).
        topic: String,
        /// Where to.
        to: ResetTo,
    },
    /// A message by id.
    GetMessage {
        /// Message id.
        msg_id: String,
    },
    /// Messages of a topic with a key, newest first.
    QueryByKey {
        /// Topic.
        topic: String,
        /// Key.
        key: String,
        /// Stored at or after this time (ms since the epoch).
        begin_ms: i64,
        /// Stored at or before this time.
        end_ms: i64,
        /// Most messages returned.
        max: u32,
    },
    /// Per queue, the first offset stored at or after a time.
    OffsetsAtTime {
        /// Topic.
        topic: String,
        /// Time, ms since the epoch.
        time_ms: i64,
    },
    /// Where a member should start consuming a queue: the committed offset,
    /// or the group's start policy when nothing was committed yet.
    FetchOffset {
        /// Group name.
        group: String,
        /// The asking member.
        member: String,
        /// Topic.
        topic: String,
        /// Queue.
        queue: u32,
    },
    /// Takes or renews the orderly-consumption lock on a queue.
    LockQueue {
        /// Group name.
        group: String,
        /// The member asking.
        member: String,
        /// Topic.
        topic: String,
        /// Queue.
        queue: u32,
    },
    /// Releases an orderly-consumption lock.
    UnlockQueue {
        /// Group name.
        group: String,
        /// The member releasing.
        member: String,
        /// Topic.
        topic: String,
        /// Queue.
        queue: u32,
    },
    /// Lists every consumer group.
    ListGroups,
    /// Describes a group: members, assignment, offsets and lag.
    DescribeGroup {
        /// Group name.
        group: String,
    },
    /// A consumer hands a message back: it failed (or timed out) and should
    /// be retried later through the group's retry topic, or — past the
    /// group's `max_reconsume_times`, or when `to_dlq` — be parked in the
    /// group's dead-letter topic.
    SendBack {
        /// Group name.
        group: String,
        /// Where the copy being consumed lives in the log
        /// ([`StoredMessage::log_offset`]).
        log_offset: u64,
        /// Skip further retries: straight to the dead-letter topic (orderly
        /// consumers, which retry in place, use this once they give up).
        to_dlq: bool,
    },
    /// Sends a dead-lettered message back to the topic it was first sent to,
    /// with a fresh retry count.
    ResendDlq {
        /// Group name.
        group: String,
        /// The message id as the dead-letter topic lists it.
        msg_id: String,
    },
    /// A connection declares itself a member of a producer group, so the
    /// broker can ask it about the group's transactions.
    RegisterProducer {
        /// Producer group.
        group: String,
    },
    /// The outcome of a transactional half message.
    EndTransaction {
        /// Producer group.
        group: String,
        /// The half message's id (from its send acknowledgement).
        msg_id: String,
        /// Commit, roll back, or still unknown.
        outcome: TxnOutcome,
        /// Sent in answer to a [`Request::CheckTransaction`].
        from_check: bool,
    },
    /// Pending half messages and transaction counts.
    ListTransactions,
    /// A consumer reports what became of traced messages it received.
    ReportTrace {
        /// Consumer group.
        group: String,
        /// One entry per consumed message.
        traces: Vec<ConsumeTrace>,
    },
    /// Broker to client: the outcome of this half message is overdue; answer
    /// with `EndTransaction { from_check: true }`. Sent one-way on a
    /// connection registered for the producer group.
    CheckTransaction {
        /// Producer group.
        group: String,
        /// The half message's id.
        msg_id: String,
        /// The message as the producer sent it.
        message: Box<StoredMessage>,
    },
    /// Broker to client: the group's committed offsets on `topic` were
    /// reset; restart its queues from the new offsets. Sent one-way.
    OffsetsReset {
        /// Group name.
        group: String,
        /// Topic.
        topic: String,
    },
    /// Broker to client: the group's assignment changed; heartbeat now to
    /// learn the new one. Sent one-way.
    AssignmentChanged {
        /// Group name.
        group: String,
    },
}

/// What a consumer did with a traced message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumeTrace {
    /// Message id.
    pub msg_id: String,
    /// The topic it was consumed from (the original one for a retry).
    pub topic: String,
    /// When the consumer received it, ms since the epoch.
    pub delivered_at: i64,
    /// `success` or `later`.
    pub result: String,
    /// How long the listener took, ms.
    pub cost_ms: u64,
    /// Its retry count.
    pub reconsume_times: u32,
}

/// A transaction's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnOutcome {
    /// Deliver the message.
    Commit,
    /// Never deliver it.
    Rollback,
    /// Not known yet; the broker will ask again.
    Unknown,
}

/// A half message waiting for its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTxn {
    /// The half message's id.
    pub msg_id: String,
    /// Where it goes on commit.
    pub topic: String,
    /// Its producer group.
    pub producer_group: String,
    /// Time since it was stored, ms.
    pub age_ms: u64,
    /// Checks asked so far.
    pub checks: u32,
}

/// Transactions as `ListTransactions` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnReport {
    /// Half messages waiting for an outcome, oldest first.
    pub pending: Vec<PendingTxn>,
    /// Committed (delivered) so far.
    pub committed: u64,
    /// Rolled back so far.
    pub rolled_back: u64,
    /// Checks asked so far.
    pub checked: u64,
    /// Given up after `transaction_check_max` checks.
    pub expired: u64,
}

/// How a group shares messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum ConsumeMode {
    /// Each message goes to one member; queues are divided among members.
    #[default]
    Clustering,
    /// Every member gets every message; offsets are kept per member.
    Broadcasting,
}

/// Where a group with no committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum StartFrom {
    /// From the end: only messages stored from now on.
    #[default]
    Latest,
    /// From the oldest retained message.
    Earliest,
    /// From the first message stored at or after this time (ms since epoch).
    Timestamp(i64),
}

/// A topic a member consumes, with its filters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Topic name.
    pub topic: String,
    /// Tag expression (`*`, `TagA || TagB`); `None` means all.
    pub tags: Option<String>,
    /// Property filter (SQL92 subset); `None` means all.
    pub sql: Option<String>,
}

/// Where `ResetOffsets` moves a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResetTo {
    /// The oldest retained message of each queue.
    Earliest,
    /// The end of each queue (skip everything stored).
    Latest,
    /// The first message stored at or after this time (ms since the epoch).
    Time(i64),
    /// Explicit `(queue, offset)` pairs.
    Offsets(Vec<(u32, u64)>),
}

/// A member's periodic hello to its group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Group name.
    pub group: String,
    /// Member id, unique in the group (stable across restarts for
    /// broadcasting, whose offsets are kept per member).
    pub member: String,
    /// Topics consumed.
    pub subscriptions: Vec<Subscription>,
    /// Clustering or broadcasting.
    pub mode: ConsumeMode,
    /// Start policy for queues without a committed offset.
    pub start: StartFrom,
    /// Orderly consumption (queues are locked while consumed).
    pub orderly: bool,
    /// How long the broker keeps the member without a heartbeat (0: the
    /// broker's default).
    pub session_timeout_ms: u64,
    /// How the group retries failed messages (the latest heartbeat's
    /// policy is the group's).
    pub retry: RetryPolicy,
}

/// A group's retry policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries before a message goes to the dead-letter topic; `None`: the
    /// broker's `max_reconsume_times` (16).
    pub max_reconsume_times: Option<u32>,
    /// Delay before retry n (0-based), in ms; the last repeats. Empty: the
    /// broker's delay levels, retry n at level 3 + n (as RocketMQ).
    pub backoff_ms: Vec<u64>,
}

/// A queue of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueueRef {
    /// Topic name.
    pub topic: String,
    /// Queue id.
    pub queue: u32,
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueOffset {
    /// Topic name.
    pub topic: String,
    /// Queue id.
    pub queue: u32,
    /// Next offset to consume.
    pub offset: u64,
}

/// A member as `DescribeGroup` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Member id.
    pub member: String,
    /// The client id of its connection.
    pub client: String,
    /// Milliseconds since its last heartbeat.
    pub idle_ms: u64,
    /// Queues assigned to it.
    pub queues: Vec<QueueRef>,
}

/// One queue's consumption state in a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueLag {
    /// Topic name.
    pub topic: String,
    /// Queue id.
    pub queue: u32,
    /// The member whose offset this is (broadcasting) or `None`.
    pub member: Option<String>,
    /// Committed offset (next to consume).
    pub committed: u64,
    /// One past the queue's last offset.
    pub max_offset: u64,
    /// `max_offset - committed`.
    pub lag: u64,
}

/// A consumer group as `DescribeGroup` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// Group name.
    pub group: String,
    /// Clustering or broadcasting.
    pub mode: ConsumeMode,
    /// Assignment generation (bumps on every rebalance).
    pub generation: u64,
    /// Live members.
    pub members: Vec<MemberInfo>,
    /// Offsets and lag per queue (and per member in broadcasting).
    pub offsets: Vec<QueueLag>,
    /// Messages stored in the group's dead-letter topic.
    pub dlq_messages: u64,
}

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
