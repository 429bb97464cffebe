//! Typed requests on a [`Connection`] beyond sending and pulling: topics,
//! finding messages, groups and their offsets, dead letters, transactions.
//! Each sends one request and unpacks its answer.

use crate::connection::{unexpected, Connection};
use crate::error::ClientError;
use brook_proto::request::{GroupInfo, QueueOffset, ResetTo, SendAck, TopicInfo};
use brook_proto::response::BrokerStatus;
use brook_proto::{ErrorCode, Request, Response, StoredMessage};

impl Connection {
    /// The broker's state: whether it takes writes (or why not), its disk
    /// and its log.
    pub async fn broker_status(&self) -> Result<BrokerStatus, ClientError> {
        match self.request(Request::BrokerStatus).await? {
            Response::Status(status) => Ok(*status),
            other => Err(unexpected(other)),
        }
    }

    /// Creates a topic (or grows its queue count).
    pub async fn create_topic(&self, name: &str, queues: u32) -> Result<TopicInfo, ClientError> {
        match self.request(Request::CreateTopic { name: name.into(), queues }).await? {
            Response::Topic(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        match self.request(Request::DeleteTopic { name: name.into() }).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Lists topics.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>, ClientError> {
        match self.request(Request::ListTopics).await? {
            Response::Topics(list) => Ok(list),
            other => Err(unexpected(other)),
        }
    }

    /// Describes a topic with per-queue offset ranges.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo, ClientError> {
        match self.request(Request::DescribeTopic { name: name.into() }).await? {
            Response::Topic(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// A message by id.
    pub async fn get_message(&self, msg_id: &str) -> Result<StoredMessage, ClientError> {
        match self.request(Request::GetMessage { msg_id: msg_id.into() }).await? {
            Response::Message(m) => Ok(*m),
            other => Err(unexpected(other)),
        }
    }

    /// Messages of `topic` with `key` stored in `[begin_ms, end_ms]`, newest
    /// first, at most `max`.
    pub async fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        begin_ms: i64,
        end_ms: i64,
        max: u32,
    ) -> Result<Vec<StoredMessage>, ClientError> {
        let body = Request::QueryByKey { topic: topic.into(), key: key.into(), begin_ms, end_ms, max };
        match self.request(body).await? {
            Response::Messages(m) => Ok(m),
            other => Err(unexpected(other)),
        }
    }

    /// Per queue of `topic`, the first offset stored at or after `time_ms`.
    pub async fn offsets_at_time(&self, topic: &str, time_ms: i64) -> Result<Vec<QueueOffset>, ClientError> {
        match self.request(Request::OffsetsAtTime { topic: topic.into(), time_ms }).await? {
            Response::QueueOffsets(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    /// Moves `group`'s committed offsets on `topic`; returns the new ones.
    pub async fn reset_offsets(&self, group: &str, topic: &str, to: ResetTo) -> Result<Vec<QueueOffset>, ClientError> {
        match self.request(Request::ResetOffsets { group: group.into(), topic: topic.into(), to }).await? {
            Response::QueueOffsets(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }

    /// Every consumer group the broker knows.
    pub async fn list_groups(&self) -> Result<Vec<String>, ClientError> {
        match self.request(Request::ListGroups).await? {
            Response::Groups(groups) => Ok(groups),
            other => Err(unexpected(other)),
        }
    }

    /// A group's members, assignment, committed offsets and lag.
    pub async fn describe_group(&self, group: &str) -> Result<GroupInfo, ClientError> {
        match self.request(Request::DescribeGroup { group: group.into() }).await? {
            Response::Group(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }

    /// Every message in `group`'s dead-letter topic, oldest first.
    pub async fn dlq_list(&self, group: &str) -> Result<Vec<StoredMessage>, ClientError> {
        let topic = brook_proto::system::dlq_topic(group);
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let page = match self.pull(&topic, 0, offset, 256, 0, None, 0).await {
                Ok(page) => page,
                Err(e) if e.code() == Some(ErrorCode::TopicNotFound) => return Ok(out),
                Err(e) if e.code() == Some(ErrorCode::OffsetBelowRetained) => {
                    offset = e.detail().unwrap_or(offset + 1);
                    continue;
                }
                Err(e) => return Err(e),
            };
            out.extend(page.messages);
            if page.next_offset >= page.max_offset || page.next_offset == offset {
                return Ok(out);
            }
            offset = page.next_offset;
        }
    }

    /// Sends the dead letter `msg_id` of `group` back to its original topic.
    pub async fn dlq_resend(&self, group: &str, msg_id: &str) -> Result<SendAck, ClientError> {
        match self.request(Request::ResendDlq { group: group.into(), msg_id: msg_id.into() }).await? {
            Response::Sent(acks) if acks.len() == 1 => Ok(SendAck::new(self.broker_addr, acks[0])),
            other => Err(unexpected(other)),
        }
    }

    /// Pending transactional half messages and transaction counts.
    pub async fn list_transactions(&self) -> Result<brook_proto::request::TxnReport, ClientError> {
        match self.request(Request::ListTransactions).await? {
            Response::Transactions(report) => Ok(report),
            other => Err(unexpected(other)),
        }
    }

    /// Round trip.
    pub async fn ping(&self) -> Result<(), ClientError> {
        match self.request(Request::Ping).await? {
            Response::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}
