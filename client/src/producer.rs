//! The producer: picks a queue, sends, and retries what is safe to retry.
//!
//! **Call order is wire order.** Every send method takes its place when it
//! is called — not at a later `.await` — in one queue of the producer's
//! (the dispatcher's). The dispatcher picks each send's queue in that order
//! and hands it to that queue's lane, which writes its sends to the
//! connection in the same order. So sends of one producer to one queue are
//! stored in call order however many are in flight, and `send_ordered`
//! calls with one sharding key are stored in call order.
//!
//! **Idempotent by default** (as Kafka's `enable.idempotence`): the producer
//! gets an id from the broker, and every send carries that id, the lane's
//! epoch and the sequence number of its first message on its queue. A lane
//! that loses its connection, or meets a busy or stopping broker, sends
//! everything not yet answered again, in order, with the same sequence
//! numbers: what the broker had stored is answered with its original acks
//! and not stored again, and the broker refuses a later send while an
//! earlier one is missing, so a retry never stores message n+1 before
//! message n. When a lane gives up on a send (retries spent, or an error
//! that retrying cannot cure), that send fails, every later send in flight
//! on the lane fails with [`ClientError::Aborted`] naming it, and the lane
//! starts a new epoch. Sends never move to another queue.
//!
//! With `ProducerConfig::idempotent(false)` sends carry no sequence: calls
//! still reach the wire in call order, a failed non-ordered send is sent
//! again (and may then be stored twice, as with RocketMQ's producer), and a
//! failed ordered send is not retried; nothing then stops a later send of
//! the same queue from being stored after a failed one.
//!
//! - `send` goes to the next queue round-robin; `send_ordered` to the queue
//!   its sharding key hashes to; `send_to` to a given queue; `send_batch`
//!   stores many messages of one topic with one request; `send_async` returns
//!   a handle; `send_oneway` expects no answer (and carries no sequence).

use crate::error::ClientError;
use crate::lane::{Lane, LaneConfig, LaneJob};
use crate::session::{Backoff, Session};
use brook_proto::request::SendAck;
use brook_proto::{ErrorCode, Message, Request, Response};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How a producer behaves.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Extra attempts after a retriable failure. Default: 3.
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
    /// Send with an idempotent producer id and sequence numbers, so a retry
    /// is stored once. Default: true.
    pub idempotent: bool,
    /// Most sends in flight on one queue; later ones wait their turn (in
    /// order). Default: 256.
    pub max_in_flight_per_queue: usize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            retries: 3,
            backoff: Backoff::default(),
            route_ttl: Duration::from_secs(30),
            client_id: format!("producer-{}", std::process::id()),
            trace: false,
            idempotent: true,
            max_in_flight_per_queue: 256,
        }
    }
}

impl ProducerConfig {
    /// Turns idempotent sends on (the default) or off.
    #[must_use]
    pub fn idempotent(mut self, on: bool) -> Self {
        self.idempotent = on;
        self
    }

    /// Extra attempts after a retriable failure.
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }
}

/// Where a send goes.
#[derive(Debug, Clone)]
enum Target {
    /// The next queue round-robin.
    Next,
    /// The queue a sharding key hashes to.
    Key(String),
    /// This queue.
    Queue(u32),
}

/// A send in the dispatcher's queue.
struct Job {
    topic: String,
    target: Target,
    messages: Vec<Message>,
    /// `None`: one-way.
    reply: Option<oneshot::Sender<Result<Vec<SendAck>, ClientError>>>,
}

/// What the producer's handles share.
struct Inner {
    session: Arc<Session>,
    config: ProducerConfig,
    /// The dispatcher: sends in call order.
    jobs: mpsc::UnboundedSender<Job>,
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
    brook_proto::time::now_ms()
}

impl Producer {
    /// Connects with default settings.
    pub async fn connect(addr: &str) -> Result<Producer, ClientError> {
        Self::with_config(addr, ProducerConfig::default()).await
    }

    /// Connects with `config`; an idempotent producer gets its id now.
    pub async fn with_config(addr: &str, config: ProducerConfig) -> Result<Producer, ClientError> {
        let session = Arc::new(Session::connect(addr, &config.client_id).await?);
        let producer_id = if config.idempotent {
            match session.get().await?.request(Request::InitProducer).await? {
                Response::Producer { producer_id, .. } => producer_id,
                other => return Err(ClientError::Protocol(format!("unexpected answer to InitProducer: {other:?}"))),
            }
        } else {
            0
        };
        let (jobs, rx) = mpsc::unbounded_channel();
        let dispatcher = Dispatcher {
            session: session.clone(),
            config: config.clone(),
            producer_id,
            routes: HashMap::new(),
            next: 0,
            lanes: HashMap::new(),
        };
        tokio::spawn(dispatcher.run(rx));
        Ok(Producer { inner: Arc::new(Inner { session, config, jobs }) })
    }

    /// Takes the send's place in the producer's order now and returns the
    /// wait for its acks.
    fn enqueue(
        &self,
        topic: String,
        target: Target,
        mut messages: Vec<Message>,
    ) -> impl Future<Output = Result<Vec<SendAck>, ClientError>> + Send + 'static {
        self.stamp(&mut messages);
        let (reply, answer) = oneshot::channel();
        let queued = self.inner.jobs.send(Job { topic, target, messages, reply: Some(reply) });
        async move {
            queued.map_err(|_| ClientError::Connection("the producer is closed".into()))?;
            answer.await.map_err(|_| ClientError::Connection("the producer stopped before answering".into()))?
        }
    }

    fn stamp(&self, messages: &mut [Message]) {
        let now = now_ms();
        for msg in messages {
            if msg.born_ts == 0 {
                msg.born_ts = now;
            }
            if self.inner.config.trace {
                msg.properties.insert(brook_proto::system::PROP_TRACE.into(), "true".into());
            }
        }
    }

    /// The topic's queue count, asked of the broker.
    pub async fn queues(&self, topic: &str) -> Result<u32, ClientError> {
        Ok(self.inner.session.get().await?.describe_topic(topic).await?.queues)
    }

    /// Sends to the next queue round-robin, retrying retriable failures.
    /// Ordered among this producer's sends when called.
    pub fn send(&self, msg: Message) -> impl Future<Output = Result<SendAck, ClientError>> + Send + 'static {
        let acks = self.enqueue(msg.topic.clone(), Target::Next, vec![msg]);
        async move { acks.await?.pop().ok_or_else(|| ClientError::Protocol("no ack".into())) }
    }

    /// Sends many messages of one topic in one request (one queue, in
    /// order). Ordered among this producer's sends when called.
    pub fn send_batch(
        &self,
        messages: Vec<Message>,
    ) -> impl Future<Output = Result<Vec<SendAck>, ClientError>> + Send + 'static {
        let topic = messages.first().map(|m| m.topic.clone());
        let refused = match &topic {
            None => Some(ClientError::InvalidArgument("empty batch".into())),
            Some(t) if messages.iter().any(|m| m.topic != *t) => {
                Some(ClientError::InvalidArgument("a batch goes to one topic".into()))
            }
            Some(_) => None,
        };
        let acks = match (refused, topic) {
            (None, Some(topic)) => Ok(self.enqueue(topic, Target::Next, messages)),
            (refused, _) => Err(refused.unwrap_or_else(|| ClientError::InvalidArgument("empty batch".into()))),
        };
        async move { acks?.await }
    }

    /// Sends in the background; the handle resolves to the ack. Ordered
    /// among this producer's sends when this returns.
    pub fn send_async(&self, msg: Message) -> tokio::task::JoinHandle<Result<SendAck, ClientError>> {
        tokio::spawn(self.send(msg))
    }

    /// Sends without waiting for (or getting) an answer; carries no
    /// sequence, so it is not retried. Ordered among this producer's sends
    /// when called.
    pub fn send_oneway(&self, msg: Message) -> impl Future<Output = Result<(), ClientError>> + Send + 'static {
        let mut messages = vec![msg];
        self.stamp(&mut messages);
        let topic = messages[0].topic.clone();
        let queued = self.inner.jobs.send(Job { topic, target: Target::Next, messages, reply: None });
        async move { queued.map_err(|_| ClientError::Connection("the producer is closed".into())) }
    }

    /// Sends to the queue `sharding_key` hashes to; never to another queue.
    /// Ordered among this producer's sends when called: calls with one key
    /// are stored in call order.
    pub fn send_ordered(
        &self,
        msg: Message,
        sharding_key: &str,
    ) -> impl Future<Output = Result<SendAck, ClientError>> + Send + 'static {
        let acks = self.enqueue(msg.topic.clone(), Target::Key(sharding_key.to_string()), vec![msg]);
        async move { acks.await?.pop().ok_or_else(|| ClientError::Protocol("no ack".into())) }
    }

    /// Sends to an explicit queue (never to another). Ordered among this
    /// producer's sends when called.
    pub fn send_to(
        &self,
        msg: Message,
        queue: u32,
    ) -> impl Future<Output = Result<SendAck, ClientError>> + Send + 'static {
        let acks = self.enqueue(msg.topic.clone(), Target::Queue(queue), vec![msg]);
        async move { acks.await?.pop().ok_or_else(|| ClientError::Protocol("no ack".into())) }
    }
}

/// The one task that takes sends in call order, picks their queues and
/// hands each to its queue's lane.
struct Dispatcher {
    session: Arc<Session>,
    config: ProducerConfig,
    producer_id: u64,
    /// Queue count per topic, and when it was asked.
    routes: HashMap<String, (u32, Instant)>,
    next: usize,
    lanes: HashMap<(String, u32), mpsc::UnboundedSender<LaneJob>>,
}

impl Dispatcher {
    async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = jobs.recv().await {
            let Job { topic, target, messages, reply } = job;
            let queue = match self.queue_of(&topic, &target).await {
                Ok(queue) => queue,
                Err(e) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(e));
                    }
                    continue;
                }
            };
            let lane = self.lane(&topic, queue);
            let ordered = !matches!(target, Target::Next);
            let _ = lane.send(LaneJob { messages, reply, ordered });
        }
    }

    /// The queue a send goes to; asks the broker for the topic's queue
    /// count when it is not known or too old (sends behind wait: they keep
    /// their order).
    async fn queue_of(&mut self, topic: &str, target: &Target) -> Result<u32, ClientError> {
        if let Target::Queue(queue) = target {
            return Ok(*queue);
        }
        let queues = match self.routes.get(topic) {
            Some((queues, at)) if at.elapsed() < self.config.route_ttl => *queues,
            _ => match self.ask_queues(topic).await {
                Ok(queues) => {
                    self.routes.insert(topic.to_string(), (queues, Instant::now()));
                    queues
                }
                // Unknown topic: queue 0 exists on a broker that creates
                // topics on first send; elsewhere the send fails clearly.
                Err(e) if e.code() == Some(ErrorCode::TopicNotFound) && matches!(target, Target::Next) => 1,
                Err(e) => return Err(e),
            },
        };
        Ok(match target {
            Target::Key(key) => queue_for_key(key, queues),
            _ => {
                self.next = self.next.wrapping_add(1);
                (self.next % queues.max(1) as usize) as u32
            }
        })
    }

    async fn ask_queues(&self, topic: &str) -> Result<u32, ClientError> {
        let mut attempt = 0;
        loop {
            let asked = async { self.session.get().await?.describe_topic(topic).await }.await;
            match asked {
                Err(e) if e.is_retriable() && attempt < self.config.retries => {
                    tokio::time::sleep(self.config.backoff.delay(attempt)).await;
                    attempt += 1;
                }
                other => return other.map(|info| info.queues),
            }
        }
    }

    /// The lane of `topic`/`queue`, started on first use.
    fn lane(&mut self, topic: &str, queue: u32) -> &mpsc::UnboundedSender<LaneJob> {
        let key = (topic.to_string(), queue);
        self.lanes.entry(key).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let config = LaneConfig {
                retries: self.config.retries,
                backoff: self.config.backoff,
                max_in_flight: self.config.max_in_flight_per_queue,
            };
            let lane = Lane::new(self.session.clone(), config, self.producer_id, (topic.to_string(), queue));
            tokio::spawn(lane.run(rx));
            tx
        })
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
