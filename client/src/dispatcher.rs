//! The producer's dispatcher: the one task that takes a producer's sends
//! in call order, picks each one's queue (round-robin, by key, or as
//! given) from the topic's route, and hands it to that queue's lane —
//! which follows the replica set's master when a failover moves it.

use crate::error::ClientError;
use crate::faults::Faults;
use crate::lane::{Lane, LaneConfig, LaneJob, Refused};
use crate::producer::{queue_for_key, Job, ProducerConfig, Target};
use crate::router::{QueueSlot, Router, TopicView, DIRECT};
use crate::session::Session;
use brook_proto::{ErrorCode, Request, Response};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The one task that takes sends in call order, picks their queues and
/// hands each to its queue's lane.
pub(crate) struct Dispatcher {
    router: Arc<Router>,
    config: ProducerConfig,
    /// Each replica set's id for this producer (idempotent sends): the
    /// sequence state lives in its master's log, so it follows a failover.
    producer_ids: HashMap<String, u64>,
    next: usize,
    lanes: HashMap<(String, QueueSlot), mpsc::UnboundedSender<LaneJob>>,
    faults: Arc<Faults>,
}

impl Dispatcher {
    /// A dispatcher over `router`, with the producer ids already known.
    pub(crate) fn new(router: Arc<Router>, config: ProducerConfig, producer_ids: HashMap<String, u64>) -> Self {
        Self { router, config, producer_ids, next: 0, lanes: HashMap::new(), faults: Arc::new(Faults::default()) }
    }

    /// Takes sends until the producer is gone.
    pub(crate) async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = jobs.recv().await {
            let Job { topic, target, messages, reply, avoid } = job;
            let placed = match self.queue_of(&topic, &target, avoid.as_deref()).await {
                Ok(placed) => placed,
                Err(e) => {
                    if let Some(reply) = reply {
                        let unsent = matches!(e, ClientError::Unavailable { .. }).then_some(messages);
                        let _ = reply.send(Err(Refused { error: e, unsent }));
                    }
                    continue;
                }
            };
            let (slot, addr) = placed;
            // Where the replica set's master is now: after a failover, the
            // lane follows it with its producer id and sequences (the new
            // master holds the old one's producer table).
            let session = self.router.session(&addr);
            let lane = match self.lane(&topic, slot, &addr).await {
                Ok(lane) => lane,
                Err(e) => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(e.into()));
                    }
                    continue;
                }
            };
            let ordered = !matches!(target, Target::Next);
            let _ = lane.send(LaneJob { messages, reply, ordered, session });
        }
    }

    /// The queue a send goes to, and its broker's address; asks for the
    /// topic's route when it is not known or too old (sends behind wait:
    /// they keep their order).
    async fn queue_of(
        &mut self,
        topic: &str,
        target: &Target,
        avoid: Option<&str>,
    ) -> Result<(QueueSlot, String), ClientError> {
        let view = match self.router.topic(topic).await {
            Ok(view) => view,
            // Unknown to a broker named directly: queue 0 exists on a
            // broker that creates topics on first send; elsewhere the send
            // fails clearly.
            Err(e)
                if e.code() == Some(ErrorCode::TopicNotFound)
                    && matches!(target, Target::Next)
                    && !self.router.is_cluster() =>
            {
                let addr = self.router.direct_addr().unwrap_or_default().to_string();
                return Ok((QueueSlot { broker: DIRECT.into(), queue: 0 }, addr));
            }
            Err(e) => return Err(e),
        };
        let slot = match target {
            Target::Queue(queue) => view.queues.get(*queue as usize).cloned().ok_or_else(|| {
                ClientError::InvalidArgument(format!("topic {topic:?} has {} queues, not {queue}", view.queues.len()))
            })?,
            Target::Key(key) => {
                let queues = u32::try_from(view.queues.len()).unwrap_or(u32::MAX);
                let index = queue_for_key(key, queues) as usize;
                view.queues
                    .get(index)
                    .cloned()
                    .ok_or_else(|| ClientError::InvalidArgument(format!("topic {topic:?} has no queues")))?
            }
            Target::Next => self.round_robin(&view, avoid).ok_or_else(|| ClientError::Unavailable {
                broker: topic.to_string(),
                cause: "no broker of the topic takes sends".into(),
            })?,
        };
        match view.master(&slot.broker) {
            Some(addr) => Ok((slot, addr.to_string())),
            None => Err(ClientError::Unavailable {
                broker: slot.broker.clone(),
                cause: format!("it holds queue {} of topic {topic:?} and is not in the route", slot.queue),
            }),
        }
    }

    /// The next writable queue, skipping brokers avoided for failing or
    /// answering slowly (and `avoid`), unless every broker is.
    fn round_robin(&mut self, view: &TopicView, avoid: Option<&str>) -> Option<QueueSlot> {
        let usable = |slot: &&QueueSlot, strict: bool| {
            Some(slot.broker.as_str()) != avoid && (!strict || !self.faults.avoided(&slot.broker))
        };
        let mut candidates: Vec<&QueueSlot> = view.writable.iter().filter(|s| usable(s, true)).collect();
        if candidates.is_empty() {
            candidates = view.writable.iter().filter(|s| usable(s, false)).collect();
        }
        if candidates.is_empty() {
            candidates = view.writable.iter().collect();
        }
        self.next = self.next.wrapping_add(1);
        candidates.get(self.next % candidates.len().max(1)).map(|s| (*s).clone())
    }

    /// The lane of `topic`/`slot` at `addr`, started on first use.
    async fn lane(
        &mut self,
        topic: &str,
        slot: QueueSlot,
        addr: &str,
    ) -> Result<&mpsc::UnboundedSender<LaneJob>, ClientError> {
        let key = (topic.to_string(), slot.clone());
        if !self.lanes.contains_key(&key) {
            let producer_id = match self.producer_ids.get(&slot.broker) {
                Some(id) => *id,
                None if !self.config.idempotent => 0,
                None => {
                    let id = init_producer(&self.router.session(addr)).await?;
                    self.producer_ids.insert(slot.broker.clone(), id);
                    id
                }
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let config = LaneConfig {
                retries: self.config.retries,
                backoff: self.config.backoff,
                max_in_flight: self.config.max_in_flight_per_queue,
                reroute: self.router.is_cluster(),
            };
            let lane = Lane::new(
                self.router.session(addr),
                config,
                producer_id,
                (topic.to_string(), slot.queue),
                (slot.broker.clone(), self.faults.clone()),
            );
            tokio::spawn(lane.run(rx));
            self.lanes.insert(key.clone(), tx);
        }
        self.lanes.get(&key).ok_or_else(|| ClientError::Protocol("lane vanished".into()))
    }
}

/// Asks a broker for an idempotent producer id.
pub(crate) async fn init_producer(session: &Session) -> Result<u64, ClientError> {
    match session.get().await?.request(Request::InitProducer).await? {
        Response::Producer { producer_id, .. } => Ok(producer_id),
        other => Err(ClientError::Protocol(format!("unexpected answer to InitProducer: {other:?}"))),
    }
}
