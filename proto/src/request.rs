//! Requests and their responses. One variant per operation; the broker's
//! `server::dispatch` routes each to the actor that owns it.

use crate::message::{Message, StoredMessage};
use serde::{Deserialize, Serialize};

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
    },
    /// Liveness check.
    Ping,
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
    /// One acknowledgement per sent message, in order.
    Sent(Vec<SendAck>),
    /// What a pull found.
    Pulled(PullResult),
    /// A request without a payload succeeded.
    Done,
    /// Answer to `Ping`.
    Pong,
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

/// The broker's acknowledgement of one stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendAck {
    /// Message id (broker address + commit-log offset).
    pub msg_id: String,
    /// Queue it went to.
    pub queue: u32,
    /// Its offset in that queue.
    pub queue_offset: u64,
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
