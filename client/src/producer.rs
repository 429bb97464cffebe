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

use crate::dispatcher::{init_producer, Dispatcher};
use crate::error::ClientError;
use crate::lane::{Outcome, Refused};
use crate::router::{Endpoint, Router, DIRECT};
use crate::session::Backoff;
use brook_proto::request::SendAck;
use brook_proto::{ErrorCode, Message};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How a producer behaves.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Extra attempts after a retriable failure. Default: 3.
    pub retries: u32,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// How long a topic's route (its queues, on which brokers) is used
    /// before it is asked again; a routing error asks at once. Default:
    /// 30 s.
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
    /// Name servers to route through instead of the endpoint the producer
    /// is connected with. Default: none.
    pub namesrv: Option<Vec<String>>,
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
            namesrv: None,
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

    /// Routes through these name servers (whatever endpoint the producer
    /// is then connected with).
    #[must_use]
    pub fn namesrv<I, S>(mut self, addrs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.namesrv = Some(addrs.into_iter().map(Into::into).collect());
        self
    }
}

/// Where a send goes.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// The next queue round-robin.
    Next,
    /// The queue a sharding key hashes to.
    Key(String),
    /// This queue.
    Queue(u32),
}

/// A send in the dispatcher's queue.
pub(crate) struct Job {
    pub(crate) topic: String,
    pub(crate) target: Target,
    pub(crate) messages: Vec<Message>,
    /// `None`: one-way.
    pub(crate) reply: Option<oneshot::Sender<Outcome>>,
    /// A replica set this send just failed on: round-robin skips it.
    pub(crate) avoid: Option<String>,
}

/// What the producer's handles share.
struct Inner {
    router: Arc<Router>,
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
    /// Connects with default settings, to a broker (`"127.0.0.1:10911"`)
    /// or through name servers (`Endpoint::namesrv(["127.0.0.1:9876"])`).
    pub async fn connect(endpoint: impl Into<Endpoint>) -> Result<Producer, ClientError> {
        Self::with_config(endpoint, ProducerConfig::default()).await
    }

    /// Connects with `config` (whose `namesrv`, if set, wins over
    /// `endpoint`). An idempotent producer gets its id from each broker
    /// when it first sends there.
    pub async fn with_config(endpoint: impl Into<Endpoint>, config: ProducerConfig) -> Result<Producer, ClientError> {
        let endpoint = config.namesrv.clone().map_or_else(|| endpoint.into(), Endpoint::NameServers);
        let router = Router::connect_with_ttl(endpoint, &config.client_id, config.route_ttl).await?;
        let (jobs, rx) = mpsc::unbounded_channel();
        let mut producer_ids = HashMap::new();
        if let (true, Some(addr)) = (config.idempotent, router.direct_addr()) {
            // A broker named directly is asked at once: a producer that
            // cannot get an id fails here, not at its first send.
            producer_ids.insert(DIRECT.to_string(), init_producer(&router.session(addr)).await?);
        }
        let dispatcher = Dispatcher::new(router.clone(), config.clone(), producer_ids);
        tokio::spawn(dispatcher.run(rx));
        Ok(Producer { inner: Arc::new(Inner { router, config, jobs }) })
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
        // A round-robin send the cluster's other brokers could take goes to
        // one of them when its broker fails (its lane hands the messages
        // back for that).
        let again = (matches!(target, Target::Next) && self.inner.router.is_cluster())
            .then(|| (topic.clone(), self.inner.jobs.clone()));
        let routed = topic.clone();
        let first = self.submit(Job { topic, target, messages, reply: None, avoid: None });
        let (retries, router) = (self.inner.config.retries, self.inner.router.clone());
        async move {
            let mut outcome = answer_of(first?).await;
            let mut attempts = 0;
            loop {
                let refused = match outcome {
                    Ok(acks) => return Ok(acks),
                    Err(refused) => refused,
                };
                if matches!(refused.error.code(), Some(ErrorCode::NotMaster | ErrorCode::ReplicationTimeout))
                    || matches!(refused.error, ClientError::Unavailable { .. })
                {
                    // The route may name a deposed, cut-off or dead master
                    // (a failover): the next send asks the name servers
                    // again instead of waiting for the route's refresh.
                    router.invalidate(&routed);
                }
                let (ClientError::Unavailable { broker, .. }, Some(messages), Some((topic, jobs))) =
                    (&refused.error, refused.unsent, &again)
                else {
                    return Err(refused.error);
                };
                router.invalidate(topic);
                if attempts >= retries {
                    return Err(refused.error);
                }
                attempts += 1;
                let job = Job {
                    topic: topic.clone(),
                    target: Target::Next,
                    messages,
                    reply: None,
                    avoid: Some(broker.clone()),
                };
                outcome = answer_of(submit(jobs, job)?).await;
            }
        }
    }

    /// Queues `job` now; the wait for its answer.
    fn submit(&self, job: Job) -> Result<Answer, ClientError> {
        submit(&self.inner.jobs, job)
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

    /// The topic's queue count (over every broker, through name servers).
    pub async fn queues(&self, topic: &str) -> Result<u32, ClientError> {
        Ok(u32::try_from(self.inner.router.topic(topic).await?.queues.len()).unwrap_or(u32::MAX))
    }

    /// The router this producer sends through.
    pub fn router(&self) -> &Arc<Router> {
        &self.inner.router
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
        let queued = self.inner.jobs.send(Job { topic, target: Target::Next, messages, reply: None, avoid: None });
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

/// A queued send's answer.
type Answer = oneshot::Receiver<Outcome>;

/// Queues `job` with a reply channel; the receiving end.
fn submit(jobs: &mpsc::UnboundedSender<Job>, mut job: Job) -> Result<Answer, ClientError> {
    let (reply, answer) = oneshot::channel();
    job.reply = Some(reply);
    jobs.send(job).map_err(|_| ClientError::Connection("the producer is closed".into()))?;
    Ok(answer)
}

/// The answer of a queued send.
async fn answer_of(answer: Answer) -> Outcome {
    answer.await.map_err(|_| Refused::from(ClientError::Connection("the producer stopped before answering".into())))?
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
