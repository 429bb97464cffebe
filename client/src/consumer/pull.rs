//! The pull consumer: the caller names topic, queue, offset and limits; the
//! broker answers at once or parks the request until a message arrives
//! (long polling). Offsets are the caller's, though a group's committed
//! offsets can be read and written here too.

use crate::connection::Connection;
use crate::error::ClientError;
use crate::session::Session;
use brook_proto::request::{PullResult, QueueOffset};
use brook_proto::{Request, Response};

/// What to pull.
#[derive(Debug, Clone)]
pub struct PullRequest {
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue: u32,
    /// First offset wanted.
    pub offset: u64,
    /// Most messages (default 32).
    pub max_messages: u32,
    /// Most bytes (0: the broker's default).
    pub max_bytes: u32,
    /// Tag expression: `*`, `TagA`, `TagA || TagB`.
    pub tags: Option<String>,
    /// How long the broker may hold the request when nothing is there.
    pub long_poll_ms: u64,
}

impl PullRequest {
    /// Pull from `topic`/`queue` at `offset`, 32 at a time, 15 s long poll.
    pub fn new(topic: &str, queue: u32, offset: u64) -> Self {
        Self {
            topic: topic.to_string(),
            queue,
            offset,
            max_messages: 32,
            max_bytes: 0,
            tags: None,
            long_poll_ms: 15_000,
        }
    }
}

/// A pull consumer over a reconnecting session.
pub struct PullConsumer {
    session: Session,
}

impl PullConsumer {
    /// Connects.
    pub async fn connect(addr: &str) -> Result<PullConsumer, ClientError> {
        Ok(PullConsumer { session: Session::connect(addr, &format!("pull-consumer-{}", std::process::id())).await? })
    }

    async fn conn(&self) -> Result<Connection, ClientError> {
        self.session.get().await
    }

    /// Pulls.
    pub async fn pull(&self, req: &PullRequest) -> Result<PullResult, ClientError> {
        self.conn()
            .await?
            .pull(
                &req.topic,
                req.queue,
                req.offset,
                req.max_messages,
                req.max_bytes,
                req.tags.as_deref(),
                req.long_poll_ms,
            )
            .await
    }

    /// The group's committed offset for a queue (or its start policy's
    /// offset if none).
    pub async fn fetch_offset(&self, group: &str, member: &str, topic: &str, queue: u32) -> Result<u64, ClientError> {
        let req = Request::FetchOffset { group: group.into(), member: member.into(), topic: topic.into(), queue };
        match self.conn().await?.request(req).await? {
            Response::Offset(o) => Ok(o),
            other => Err(ClientError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// Commits offsets for a group.
    pub async fn commit(&self, group: &str, member: &str, offsets: Vec<QueueOffset>) -> Result<(), ClientError> {
        let req = Request::CommitOffsets { group: group.into(), member: member.into(), offsets, generation: 0 };
        match self.conn().await?.request(req).await? {
            Response::Done => Ok(()),
            other => Err(ClientError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }
}
