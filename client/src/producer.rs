//! The producer: picks a queue, sends, and retries what is safe to retry.
//!
//! - `send` goes to the next queue round-robin and returns the broker's ack
//!   (message id, queue, offset). On a lost connection or a busy or stopping
//!   broker it reconnects and retries with backoff, on the next queue.
//! - `send_ordered` hashes a sharding key to one queue, so every message with
//!   that key lands there in send order. It never retries elsewhere: if that
//!   queue cannot take the message the send fails (strict order over
//!   availability).
//! - `send_async` returns at once with a handle; many sends are in flight on
//!   the one connection. `send_oneway` expects no answer. `send_batch` stores
//!   many messages of one topic with one request.

use crate::connection::Connection;
use crate::error::ClientError;
use crate::session::{Backoff, Session};
use brook_proto::request::SendAck;
use brook_proto::{ErrorCode, Message, Request};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a producer behaves.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Extra attempts after a retriable failure (non-ordered sends only).
    /// Default: 3.
    pub retries: u32,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// How long a topic's queue count is cached. Default: 30 s.
    pub route_ttl: Duration,
    /// Client id sent in the hello.
    pub client_id: String,
    /// Trace every message sent: the broker records its timeline (sent,
    /// stored, delivered, consumed) in `RMQ_SYS_TRACE_TOPIC`. Default: false.
    pub trace: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            retries: 3,
            backoff: Backoff::default(),
            route_ttl: Duration::from_secs(30),
            client_id: format!("producer-{}", std::process::id()),
            trace: false,
        }
    }
}

struct Inner {
    session: Session,
    config: ProducerConfig,
    routes: Mutex<HashMap<String, (u32, Instant)>>,
    next: AtomicUsize,
}

/// A producer, cheap to clone and share between tasks.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

/// The queue a sharding key maps to: FNV-1a of the key modulo the queue
/// count, the same in every client.
pub fn queue_for_key(key: &str, queues: u32) -> u32 {
    (brook_proto::hash::fnv1a64(key) % u64::from(queues.max(1))) as u32
}

/// Now, ms since the epoch (born times, trace times).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Producer {
    /// Connects with default settings.
    pub async fn connect(addr: &str) -> Result<Producer, ClientError> {
        Self::with_config(addr, ProducerConfig::default()).await
    }

    /// Connects with `config`.
    pub async fn with_config(addr: &str, config: ProducerConfig) -> Result<Producer, ClientError> {
        let session = Session::connect(addr, &config.client_id).await?;
        Ok(Producer {
            inner: Arc::new(Inner { session, config, routes: Mutex::new(HashMap::new()), next: AtomicUsize::new(0) }),
        })
    }

    async fn conn(&self) -> Result<Connection, ClientError> {
        self.inner.session.get().await
    }

    /// The topic's queue count (cached).
    pub async fn queues(&self, topic: &str) -> Result<u32, ClientError> {
        let cached = self.inner.routes.lock().ok().and_then(|r| r.get(topic).copied());
        if let Some((queues, at)) = cached {
            if at.elapsed() < self.inner.config.route_ttl {
                return Ok(queues);
            }
        }
        let info = self.conn().await?.describe_topic(topic).await?;
        if let Ok(mut routes) = self.inner.routes.lock() {
            routes.insert(topic.to_string(), (info.queues, Instant::now()));
        }
        Ok(info.queues)
    }

    fn forget_route(&self, topic: &str) {
        if let Ok(mut routes) = self.inner.routes.lock() {
            routes.remove(topic);
        }
    }

    async fn send_once(
        &self,
        topic: &str,
        queue: u32,
        mut messages: Vec<Message>,
    ) -> Result<Vec<SendAck>, ClientError> {
        let now = now_ms();
        for msg in messages.iter_mut() {
            if msg.born_ts == 0 {
                msg.born_ts = now;
            }
            if self.inner.config.trace {
                msg.properties.insert(brook_proto::system::PROP_TRACE.into(), "true".into());
            }
        }
        let result = async { self.conn().await?.send(topic, queue, messages).await }.await;
        if let Err(e) = &result {
            if matches!(e.code(), Some(ErrorCode::QueueOutOfRange | ErrorCode::TopicNotFound)) {
                self.forget_route(topic);
            }
        }
        result
    }

    /// Sends to the next queue round-robin, retrying retriable failures on
    /// the following queues.
    pub async fn send(&self, msg: Message) -> Result<SendAck, ClientError> {
        let mut acks = self.send_batch(vec![msg]).await?;
        acks.pop().ok_or_else(|| ClientError::Protocol("no ack".into()))
    }

    /// Sends many messages of one topic in one request (one queue, in order).
    pub async fn send_batch(&self, messages: Vec<Message>) -> Result<Vec<SendAck>, ClientError> {
        let topic = messages
            .first()
            .map(|m| m.topic.clone())
            .ok_or_else(|| ClientError::InvalidArgument("empty batch".into()))?;
        if messages.iter().any(|m| m.topic != topic) {
            return Err(ClientError::InvalidArgument("a batch goes to one topic".into()));
        }
        let mut attempt = 0;
        loop {
            let result = async {
                let queue = match self.queues(&topic).await {
                    Ok(queues) => (self.inner.next.fetch_add(1, Ordering::Relaxed) % queues.max(1) as usize) as u32,
                    // Unknown topic: queue 0 exists on a broker that creates
                    // topics on first send; elsewhere the send fails clearly.
                    Err(e) if e.code() == Some(ErrorCode::TopicNotFound) => 0,
                    Err(e) => return Err(e),
                };
                self.send_once(&topic, queue, messages.clone()).await
            }
            .await;
            match result {
                Err(e) if e.is_retriable() && attempt < self.inner.config.retries => {
                    tokio::time::sleep(self.inner.config.backoff.delay(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Sends in the background; the handle resolves to the ack.
    pub fn send_async(&self, msg: Message) -> tokio::task::JoinHandle<Result<SendAck, ClientError>> {
        let me = self.clone();
        tokio::spawn(async move { me.send(msg).await })
    }

    /// Sends without waiting for (or getting) an answer.
    pub async fn send_oneway(&self, msg: Message) -> Result<(), ClientError> {
        let queue = match self.queues(&msg.topic).await {
            Ok(queues) => (self.inner.next.fetch_add(1, Ordering::Relaxed) % queues.max(1) as usize) as u32,
            Err(e) if e.code() == Some(ErrorCode::TopicNotFound) => 0,
            Err(e) => return Err(e),
        };
        let topic = msg.topic.clone();
        let mut msg = msg;
        if msg.born_ts == 0 {
            msg.born_ts = now_ms();
        }
        self.conn().await?.oneway(Request::Send { topic, queue, messages: vec![msg], producer: None }).await
    }

    /// Sends to the queue `sharding_key` hashes to; never to another queue.
    pub async fn send_ordered(&self, msg: Message, sharding_key: &str) -> Result<SendAck, ClientError> {
        let queues = self.queues(&msg.topic).await?;
        let queue = queue_for_key(sharding_key, queues);
        let topic = msg.topic.clone();
        let mut acks = self.send_once(&topic, queue, vec![msg]).await?;
        acks.pop().ok_or_else(|| ClientError::Protocol("no ack".into()))
    }

    /// Sends to an explicit queue (no retry elsewhere).
    pub async fn send_to(&self, msg: Message, queue: u32) -> Result<SendAck, ClientError> {
        let topic = msg.topic.clone();
        let mut acks = self.send_once(&topic, queue, vec![msg]).await?;
        acks.pop().ok_or_else(|| ClientError::Protocol("no ack".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::queue_for_key;

    #[test]
    fn keys_map_stably_and_spread() {
        assert_eq!(queue_for_key("order-1", 8), queue_for_key("order-1", 8));
        let used: std::collections::HashSet<u32> = (0..200).map(|i| queue_for_key(&format!("k{i}"), 8)).collect();
        assert_eq!(used.len(), 8);
    }
}
