//! The pull consumer: the caller names topic, queue, offset and limits; the
//! broker answers at once or parks the request until a message arrives
//! (long polling). Offsets are the caller's, though a group's committed
//! offsets can be read and written here too.
//!
//! Through name servers a queue is named by its replica set as well
//! ([`PullRequest::broker`]); [`PullConsumer::queues`] lists them all.

use crate::connection::Connection;
use crate::error::ClientError;
use crate::router::{Endpoint, QueueSlot, Router, DIRECT};
use brook_proto::request::{PullResult, QueueOffset};
use brook_proto::{Request, Response};

/// What to pull.
#[derive(Debug, Clone)]
pub struct PullRequest {
    /// The replica set holding the queue; "" for a broker named directly,
    /// or a topic on a single replica set.
    pub broker: String,
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
            broker: DIRECT.to_string(),
            topic: topic.to_string(),
            queue,
            offset,
            max_messages: 32,
            max_bytes: 0,
            tags: None,
            long_poll_ms: 15_000,
        }
    }

    /// The queue is the one on replica set `broker`.
    #[must_use]
    pub fn on_broker(mut self, broker: &str) -> Self {
        self.broker = broker.to_string();
        self
    }
}

/// A pull consumer over reconnecting sessions.
pub struct PullConsumer {
    router: std::sync::Arc<Router>,
}

impl PullConsumer {
    /// Connects to one broker (`"127.0.0.1:10911"`) or to name servers
    /// (`Endpoint::namesrv(["127.0.0.1:9876"])`).
    pub async fn connect(endpoint: impl Into<Endpoint>) -> Result<PullConsumer, ClientError> {
        let id = format!("pull-consumer-{}", std::process::id());
        Ok(PullConsumer { router: Router::connect(endpoint.into(), &id).await? })
    }

    /// Every queue of `topic`, on every replica set.
    pub async fn queues(&self, topic: &str) -> Result<Vec<QueueSlot>, ClientError> {
        Ok(self.router.topic(topic).await?.queues.clone())
    }

    /// A connection to the master of `broker` for `topic` ("" when there
    /// is only one replica set to choose).
    async fn conn(&self, broker: &str, topic: &str) -> Result<Connection, ClientError> {
        if let Some(addr) = self.router.direct_addr() {
            return self.router.session(addr).get().await;
        }
        let view = self.router.topic(topic).await?;
        let name = match broker {
            DIRECT if view.masters.len() == 1 => view.masters.keys().next().cloned().unwrap_or_default(),
            DIRECT => return Err(ClientError::InvalidArgument(format!("topic {topic} spans replica sets: name one"))),
            name => name.to_string(),
        };
        let Some(addr) = view.master(&name) else {
            self.router.invalidate(topic);
            return Err(ClientError::Unavailable { broker: name, cause: "not in the route".into() });
        };
        let conn = self.router.session(addr).get().await;
        conn.inspect_err(|_| self.router.invalidate(topic))
    }

    /// Pulls.
    pub async fn pull(&self, req: &PullRequest) -> Result<PullResult, ClientError> {
        self.conn(&req.broker, &req.topic)
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
        self.fetch_offset_on(DIRECT, group, member, topic, queue).await
    }

    /// [`PullConsumer::fetch_offset`] for a queue of replica set `broker`.
    pub async fn fetch_offset_on(
        &self,
        broker: &str,
        group: &str,
        member: &str,
        topic: &str,
        queue: u32,
    ) -> Result<u64, ClientError> {
        let req = Request::FetchOffset { group: group.into(), member: member.into(), topic: topic.into(), queue };
        match self.conn(broker, topic).await?.request(req).await? {
            Response::Offset(o) => Ok(o),
            other => Err(ClientError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// Commits offsets for a group.
    pub async fn commit(&self, group: &str, member: &str, offsets: Vec<QueueOffset>) -> Result<(), ClientError> {
        self.commit_on(DIRECT, group, member, offsets).await
    }

    /// Commits offsets of queues of replica set `broker` (where they live).
    pub async fn commit_on(
        &self,
        broker: &str,
        group: &str,
        member: &str,
        offsets: Vec<QueueOffset>,
    ) -> Result<(), ClientError> {
        let Some(topic) = offsets.first().map(|o| o.topic.clone()) else { return Ok(()) };
        let req = Request::CommitOffsets { group: group.into(), member: member.into(), offsets, generation: 0 };
        match self.conn(broker, &topic).await?.request(req).await? {
            Response::Done => Ok(()),
            other => Err(ClientError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }
}
