//! What consumers and their groups exchange with the broker: heartbeats,
//! subscriptions, start points, offsets, resets, group descriptions and
//! consume traces.

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
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
    /// Messages retention deleted here before the group consumed them.
    pub skipped_by_retention: u64,
}

/// A consumer group as `DescribeGroup` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
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
    /// Messages retention deleted before the group consumed them, in all.
    pub skipped_by_retention: u64,
    /// When retention first deleted unconsumed messages of the group, ms
    /// since the epoch.
    pub skipped_since_ms: Option<i64>,
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
