//! What can be asked ([`Request`]), of the broker, of a name server, or,
//! for notices and transaction checks, of a client. The types requests and answers carry
//! live beside it: [`crate::consumer`], [`crate::txn`], [`crate::response`];
//! they are re-exported here, where the wire names them.
//!
//! **A request's wire code is its variant index** (bincode writes an enum
//! variant as its index): variants are only ever appended, never reordered
//! or removed. The tests below pin every index; docs/PROTOCOL.md lists them.

pub use crate::consumer::*;
pub use crate::response::*;
pub use crate::txn::*;

use crate::message::{Message, StoredMessage};
use crate::producer::ProducerSeq;
use serde::{Deserialize, Serialize};

/// Everything a peer can ask. Append only: the variant index is the wire
/// code.
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
        /// An idempotent producer's id, epoch and first sequence number;
        /// `None` for a plain send (stored every time it is sent).
        producer: Option<ProducerSeq>,
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
    /// Asks for a new idempotent producer id (answered with
    /// `Response::Producer`).
    InitProducer,
    /// The broker's state: writable or why not, disk, log (answered with
    /// `Response::Status`).
    BrokerStatus,
    /// Broker to name server: here I am, with my topics (answered with
    /// `Response::Done`). Sent again every `register_interval_ms` and when
    /// a topic changes; the name server drops a broker it has not heard
    /// from in `broker_expiry_ms`, or whose connection closed.
    RegisterBroker(Box<crate::route::BrokerRegistration>),
    /// Broker to name server: I am stopping (answered with `Done`).
    UnregisterBroker {
        /// Cluster name.
        cluster: String,
        /// Replica set name.
        broker_name: String,
        /// Broker id.
        broker_id: u64,
    },
    /// Asks a name server where a topic lives (answered with
    /// `Response::Route`, or `TopicNotFound`).
    GetRoute {
        /// Topic name.
        topic: String,
    },
    /// Asks a name server for every broker it knows (answered with
    /// `Response::Cluster`).
    GetClusterInfo,
    /// A request for the controller (answered with `Response::Controller`
    /// by a name server that runs one).
    Controller(crate::controller::ControllerRequest),
}

impl Request {
    /// The wire code of `Send`.
    pub const SEND_CODE: u32 = 5;
    /// The wire code of `Pull`.
    pub const PULL_CODE: u32 = 6;

    /// The request's wire code (its variant index; metrics label requests
    /// by it). A new request gets the next number here, at the end of the
    /// enum; this match fails to compile until it does, and a test checks
    /// it against the encoding.
    pub fn code(&self) -> u32 {
        match self {
            Request::Hello { .. } => 0,
            Request::CreateTopic { .. } => 1,
            Request::DeleteTopic { .. } => 2,
            Request::ListTopics => 3,
            Request::DescribeTopic { .. } => 4,
            Request::Send { .. } => 5,
            Request::Pull { .. } => 6,
            Request::Ping => 7,
            Request::Heartbeat(_) => 8,
            Request::LeaveGroup { .. } => 9,
            Request::CommitOffsets { .. } => 10,
            Request::ResetOffsets { .. } => 11,
            Request::GetMessage { .. } => 12,
            Request::QueryByKey { .. } => 13,
            Request::OffsetsAtTime { .. } => 14,
            Request::FetchOffset { .. } => 15,
            Request::LockQueue { .. } => 16,
            Request::UnlockQueue { .. } => 17,
            Request::ListGroups => 18,
            Request::DescribeGroup { .. } => 19,
            Request::SendBack { .. } => 20,
            Request::ResendDlq { .. } => 21,
            Request::RegisterProducer { .. } => 22,
            Request::EndTransaction { .. } => 23,
            Request::ListTransactions => 24,
            Request::ReportTrace { .. } => 25,
            Request::CheckTransaction { .. } => 26,
            Request::OffsetsReset { .. } => 27,
            Request::AssignmentChanged { .. } => 28,
            Request::InitProducer => 29,
            Request::BrokerStatus => 30,
            Request::RegisterBroker(_) => 31,
            Request::UnregisterBroker { .. } => 32,
            Request::GetRoute { .. } => 33,
            Request::GetClusterInfo => 34,
            Request::Controller(_) => 35,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::txn::TxnOutcome;

    fn pinned(request: &Request) -> u32 {
        request.code()
    }

    /// One request of each kind, in wire-code order.
    fn one_of_each() -> Vec<Request> {
        let s = String::new;
        let (group, member, topic) = (s(), s(), s());
        vec![
            Request::Hello { version: 3, client_id: s() },
            Request::CreateTopic { name: s(), queues: 1 },
            Request::DeleteTopic { name: s() },
            Request::ListTopics,
            Request::DescribeTopic { name: s() },
            Request::Send {
                topic: s(),
                queue: 0,
                messages: vec![Message::default()],
                producer: Some(ProducerSeq { producer_id: 1, epoch: 0, sequence: 0 }),
            },
            Request::Pull {
                topic: s(),
                queue: 0,
                offset: 0,
                max_messages: 1,
                max_bytes: 1,
                tags: None,
                long_poll_ms: 0,
                sql: None,
            },
            Request::Ping,
            Request::Heartbeat(Heartbeat::default()),
            Request::LeaveGroup { group: group.clone(), member: member.clone() },
            Request::CommitOffsets { group: group.clone(), member: member.clone(), offsets: vec![], generation: 0 },
            Request::ResetOffsets { group: group.clone(), topic: topic.clone(), to: ResetTo::Earliest },
            Request::GetMessage { msg_id: s() },
            Request::QueryByKey { topic: topic.clone(), key: s(), begin_ms: 0, end_ms: 0, max: 1 },
            Request::OffsetsAtTime { topic: topic.clone(), time_ms: 0 },
            Request::FetchOffset { group: group.clone(), member: member.clone(), topic: topic.clone(), queue: 0 },
            Request::LockQueue { group: group.clone(), member: member.clone(), topic: topic.clone(), queue: 0 },
            Request::UnlockQueue { group: group.clone(), member, topic: topic.clone(), queue: 0 },
            Request::ListGroups,
            Request::DescribeGroup { group: group.clone() },
            Request::SendBack { group: group.clone(), log_offset: 0, to_dlq: false },
            Request::ResendDlq { group: group.clone(), msg_id: s() },
            Request::RegisterProducer { group: group.clone() },
            Request::EndTransaction {
                group: group.clone(),
                msg_id: s(),
                outcome: TxnOutcome::Commit,
                from_check: false,
            },
            Request::ListTransactions,
            Request::ReportTrace { group: group.clone(), traces: vec![] },
            Request::CheckTransaction { group: group.clone(), msg_id: s(), message: Box::default() },
            Request::OffsetsReset { group: group.clone(), topic },
            Request::AssignmentChanged { group },
            Request::InitProducer,
            Request::BrokerStatus,
            Request::RegisterBroker(Box::new(crate::route::BrokerRegistration {
                cluster: "c".into(),
                broker_name: "b".into(),
                broker_id: 0,
                addr: "a".into(),
                version: "v".into(),
                topics: vec![],
                msgs_in_per_s: 0.0,
                msgs_out_per_s: 0.0,
                replica: crate::route::ReplicaStatus::default(),
            })),
            Request::UnregisterBroker { cluster: "c".into(), broker_name: "b".into(), broker_id: 0 },
            Request::GetRoute { topic: "t".into() },
            Request::GetClusterInfo,
            Request::Controller(crate::controller::ControllerRequest::Info),
        ]
    }

    #[test]
    fn every_request_is_encoded_with_its_pinned_code() {
        let requests = one_of_each();
        assert_eq!(
            requests.iter().find(|r| matches!(r, Request::Send { .. })).map(Request::code),
            Some(Request::SEND_CODE)
        );
        assert_eq!(
            requests.iter().find(|r| matches!(r, Request::Pull { .. })).map(Request::code),
            Some(Request::PULL_CODE)
        );
        crate::pinned::assert_codes(&requests, pinned);
    }
}
