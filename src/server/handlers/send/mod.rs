//! Sends: every check happens before anything is stored (one request's bad
//! input fails only that request); messages the broker rewrites (delays,
//! transactions, tracing) are rewritten here; the sends a connection read
//! together are stored as one batch per queue, in arrival order.

mod answer;
mod merge;
mod parts;
mod received;
mod replicated;
mod tally;

use crate::actors::appender::{AppendWait, Encoded};
use crate::actors::queue::idempotence::PartProducer;
use crate::error::Error;
use crate::server::context::{BrokerCore, ConnInfo};
use crate::server::handlers::Reply;
use crate::server::handlers::{check_queue, topic_queues, trace, txn};
use crate::store::record;
use answer::{AnswerSends, Answering};
use brook_proto::system::{
    is_reserved_topic, PROP_DELAY_LEVEL, PROP_DELAY_MS, PROP_DELIVER_AT, PROP_TRACE, PROP_TRANSACTION,
};
use brook_proto::{ErrorCode, Message, ProducerSeq, Response, WireError};
use merge::merge_in_order;
use parts::Parts;
use received::Received;
use smallvec::SmallVec;
use std::sync::Arc;
use tally::Tally;

/// Most messages in one send request.
pub const MAX_BATCH_MESSAGES: usize = brook_proto::MAX_SEND_MESSAGES;

/// A send that came as a decoded request (connections gather their sends
/// into [`send_many`] themselves; this is the same path for one).
pub async fn one(core: &BrokerCore, conn: &ConnInfo, body: SendBody) -> Reply {
    let request = SendRequest { id: None, body };
    match send_many(core, conn, vec![request]).await.pop() {
        Some((_, reply)) => reply,
        None => Err(Error::Busy("send produced no answer".into()).into()),
    }
}

/// One send request as a connection read it.
pub struct SendRequest {
    /// Request id to answer, or `None` for a one-way send.
    pub id: Option<u64>,
    /// Its fields.
    pub body: SendBody,
}

/// A send's fields: as they came off the wire, or already decoded.
pub enum SendBody {
    /// Undecoded ([`brook_proto::Incoming::Send`]): read in place here.
    Wire(bytes::Bytes),
    /// Decoded.
    Owned {
        /// Topic named by the request.
        topic: String,
        /// Queue named by the request.
        queue: u32,
        /// Its messages.
        messages: Vec<Message>,
        /// The idempotent producer's sequence, if any.
        producer: Option<ProducerSeq>,
    },
}

/// A prepared send's messages with their tag codes. Most sends under
/// pipelining carry one message: kept inline, as are the per-message
/// answers' inputs below.
type Items<'a> = SmallVec<[(Received<'a>, u64); 1]>;

/// Properties that make the broker rewrite a message before storing it.
const REWRITING_PROPERTIES: [&str; 4] = [PROP_DELAY_LEVEL, PROP_DELAY_MS, PROP_DELIVER_AT, PROP_TRANSACTION];

/// Most encoded bytes one merged store carries; more start another.
const MERGE_BYTES: usize = 1 << 20;

/// Gives an idempotent producer its id (epoch 0). Ids are reserved in
/// blocks on disk, so a restart never hands one out twice.
pub async fn init_producer(core: &BrokerCore) -> Reply {
    let ids = core.producer_ids.clone();
    let producer_id =
        tokio::task::spawn_blocking(move || ids.lock().allocate()).await.map_err(|e| Error::Busy(e.to_string()))??;
    Ok(Response::Producer { producer_id, epoch: 0 })
}

/// Answers many send requests that arrived together on one connection.
/// Requests bound for the same queue are stored as one batch, in arrival
/// order, so the queue actor and the writer see one append instead of one
/// per request; each request still gets its own answer (or error: one
/// request's bad input fails only that request).
pub async fn send_many(core: &BrokerCore, conn: &ConnInfo, requests: Vec<SendRequest>) -> Vec<(Option<u64>, Reply)> {
    submit_sends(core, conn, requests).answers(core, conn).await
}

/// Sends handed to the queues, waiting for their stores.
pub struct SubmittedSends {
    answering: AnswerSends,
    stored: AppendWait,
}

/// Sends checked and encoded, not yet handed to the queues.
pub struct PreparedSends {
    encoded: Encoded,
    answering: AnswerSends,
}

/// Checks, encodes and hands to the queues the sends of [`send_many`], all
/// before returning: sends submitted one after another are stored in that
/// order, however their waits are scheduled.
pub fn submit_sends(core: &BrokerCore, conn: &ConnInfo, requests: Vec<SendRequest>) -> SubmittedSends {
    prepare_sends(core, conn, requests).submit(core)
}

/// Checks and encodes the sends of [`send_many`]; nothing is stored yet.
pub fn prepare_sends(core: &BrokerCore, conn: &ConnInfo, mut requests: Vec<SendRequest>) -> PreparedSends {
    if !conn.producer.load(std::sync::atomic::Ordering::Relaxed)
        && !conn.producer.swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        core.metrics.producer_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let mut answers = Vec::with_capacity(requests.len());
    let mut ready = Vec::with_capacity(requests.len());
    // A slave takes no writes; under sync replication none is taken while
    // the in-sync set is too small. Refused before anything is stored.
    let refusal = core.replication.refusal().map(WireError::from);
    for SendRequest { id, body } in &mut requests {
        if let Some(e) = &refusal {
            answers.push((*id, Err(e.clone())));
            continue;
        }
        let prepared = match body {
            SendBody::Wire(fields) => match brook_proto::codec::decode_send(fields) {
                Ok(send) => {
                    let messages = send.messages.into_iter().map(Received::InPlace);
                    prepare_send(core, conn, (send.topic, send.queue, send.producer), messages)
                }
                Err(e @ brook_proto::CodecError::TooManyMessages { .. }) => {
                    Err(WireError::new(ErrorCode::InvalidArgument, e.to_string()))
                }
                Err(e) => Err(WireError::new(ErrorCode::MalformedFrame, e.to_string())),
            },
            SendBody::Owned { topic, queue, messages, producer } => {
                let messages = std::mem::take(messages).into_iter().map(Received::Owned);
                prepare_send(core, conn, (topic, *queue, *producer), messages)
            }
        };
        match prepared {
            Ok((items, prepared)) => ready.push((*id, items, prepared)),
            Err(e) => answers.push((*id, Err(e))),
        }
    }
    // An idempotent producer's sends merge only among themselves, by lane
    // and epoch, and a part holds only consecutive sequences: it is judged
    // by its sequence as a whole before it is admitted.
    let (groups, ready) = merge_in_order(
        ready.into_iter().map(|(id, items, prepared)| {
            let dest = (prepared.store_topic(), prepared.store_queue, prepared.lane_key());
            (dest, prepared.bytes, (id, items, prepared))
        }),
        MERGE_BYTES,
    );
    // Every part goes into one produce: one buffer and one answer however
    // many queues the requests name.
    let bytes = ready.iter().map(|(_, _, prepared)| prepared.bytes).sum();
    let records = ready.iter().map(|(_, items, _)| items.len()).sum();
    let mut parts = Parts {
        encoded: Encoded::with_capacity(bytes, records, groups.len()),
        members: Vec::with_capacity(ready.len()),
        sizes: Vec::with_capacity(groups.len()),
        tallies: Vec::with_capacity(groups.len()),
        tally: Tally::default(),
        answers,
        open: None,
    };
    let mut ready = ready.into_iter();
    for ((topic, queue, lane), count) in groups {
        let spec = core.appender.queue_spec(topic, queue);
        let mut next_seq = None;
        for (index, (id, items, prepared)) in ready.by_ref().take(count).enumerate() {
            let sequence = prepared.producer.map(|p| p.sequence);
            if index == 0 || (lane.is_some() && sequence != next_seq) {
                parts.close();
                parts.open(spec.clone(), queue, prepared.lane());
            }
            next_seq = prepared.producer.and_then(|p| p.of(items.len()));
            parts.add(id, &items, prepared, &core.metrics);
        }
        parts.close();
    }
    let Parts { encoded, members, sizes, tallies, answers, .. } = parts;
    PreparedSends { encoded, answering: AnswerSends { answers, members, sizes, tallies } }
}

impl PreparedSends {
    /// Hands the sends to the queues; their answers come through the wait.
    pub fn submit(self, core: &BrokerCore) -> SubmittedSends {
        SubmittedSends { stored: core.appender.submit(self.encoded), answering: self.answering }
    }

    /// Hands the sends to the queues; `then` gets their answers on the
    /// thread that has them first (the writer's, most often), so it must not
    /// block. Not for sync replication, whose answers wait for replicas.
    pub fn submit_then(
        self,
        (core, conn): (Arc<BrokerCore>, Arc<ConnInfo>),
        then: impl FnOnce(Vec<(Option<u64>, Reply)>) + Send + 'static,
    ) {
        let PreparedSends { encoded, answering } = self;
        let answering_core = core.clone();
        core.appender.submit_then(encoded, move |placements| {
            then(answering.answer(&answering_core, &conn, placements));
        });
    }

    /// Whether any message is traced (its answer records trace events).
    pub fn traced(&self) -> bool {
        self.answering.members.iter().any(|(_, a)| a.traced.contains(&true))
    }
}

impl SubmittedSends {
    /// Waits for the stores and answers every request.
    pub async fn answers(self, core: &BrokerCore, conn: &ConnInfo) -> Vec<(Option<u64>, Reply)> {
        let SubmittedSends { answering, stored } = self;
        let placements = replicated::wait(core, stored, answering.sizes.len()).await;
        answering.answer(core, conn, placements)
    }
}

/// A send request that passed every check, its messages encoded-ready and
/// moved out; what is left is needed to answer it once stored.
struct PreparedSend<'a> {
    topic: &'a str,
    queue: u32,
    /// The idempotent producer's sequence, if any.
    producer: Option<ProducerSeq>,
    /// Where the records are stored: `None` is the request's own topic.
    store_in: Option<&'static str>,
    store_queue: u32,
    /// Exact delivery time of each message (delayed ones).
    dues: SmallVec<[Option<i64>; 1]>,
    traced: SmallVec<[bool; 16]>,
    received_at: i64,
    /// Encoded size of all its records.
    bytes: usize,
}

impl<'a> PreparedSend<'a> {
    fn store_topic(&self) -> &'a str {
        self.store_in.unwrap_or(self.topic)
    }

    /// What an idempotent send merges by: its producer, epoch and lane.
    fn lane_key(&self) -> Option<(u64, u32, &'a str, u32)> {
        self.producer.map(|p| (p.producer_id, p.epoch, self.topic, self.queue))
    }

    /// An idempotent send's producer and lane (named only when the records
    /// wait in another queue than the one the send named).
    fn lane(&self) -> Option<PartProducer> {
        let seq = self.producer?;
        let lane = self.store_in.is_some().then(|| (self.topic.to_string(), self.queue));
        Some(PartProducer::new(seq, lane))
    }

    /// What answering it needs, apart from the request's bytes.
    fn answering(self) -> Answering {
        let PreparedSend { topic, queue, store_queue, dues, traced, received_at, .. } = self;
        // The topic only names trace events: copied only for them.
        let topic = if traced.contains(&true) { topic.to_string() } else { String::new() };
        Answering { topic, queue, store_queue, dues, traced, received_at }
    }
}

/// Refuses a send to a reserved or unknown topic (unless topics are made on
/// first send), to a queue out of range, or with no or too many messages.
fn check_destination(core: &BrokerCore, topic: &str, queue: u32, batch_len: usize) -> Result<(), WireError> {
    if is_reserved_topic(topic) {
        return Err(Error::InvalidArgument(format!("topic {topic:?} is reserved for the broker's own use")).into());
    }
    let queues = match topic_queues(core, topic) {
        Err(e) if e.code == ErrorCode::TopicNotFound && core.config.auto_create_topics => {
            core.topics.create(topic, core.config.default_queues)?;
            slog::info!(core.logger, "topic auto-created"; "topic" => topic, "queues" => core.config.default_queues);
            core.config.default_queues
        }
        other => other?,
    };
    check_queue(topic, queue, queues)?;
    if batch_len == 0 || batch_len > MAX_BATCH_MESSAGES {
        return Err(Error::InvalidArgument(format!(
            "a send carries 1..={MAX_BATCH_MESSAGES} messages, got {batch_len}"
        ))
        .into());
    }
    Ok(())
}

/// Checks a send request and turns it into the items to store: every
/// refusal happens here, before anything is written.
fn prepare_send<'a>(
    core: &BrokerCore,
    conn: &ConnInfo,
    (topic, queue, producer): (&'a str, u32, Option<ProducerSeq>),
    messages: impl ExactSizeIterator<Item = Received<'a>>,
) -> Result<(Items<'a>, PreparedSend<'a>), WireError> {
    let batch_len = messages.len();
    check_destination(core, topic, queue, batch_len)?;
    if let Some(p) = producer {
        if p.producer_id == 0 || p.of(batch_len.saturating_sub(1)).is_none() {
            return Err(Error::InvalidArgument(format!(
                "producer id must be non-zero and the batch's sequence numbers fit 32 bits, got {p:?}"
            ))
            .into());
        }
    }
    // An idempotent send's records carry its id, epoch and sequence.
    let producer_len = if producer.is_some() { record::PRODUCER_LEN } else { 0 };
    let max_body = core.config.store.max_message_bytes;
    let max_record = core.config.store.segment_bytes as usize;
    let now = crate::clock::now_ms();
    let mut traced = SmallVec::new();
    let mut items = Items::with_capacity(batch_len);
    let mut bytes = 0;
    let mut dues = SmallVec::with_capacity(batch_len);
    // Where the batch is stored: its topic and queue, or — delayed — the
    // queue where it waits. One batch, one queue, so it shares one delay.
    let mut dest: Option<Option<(&'static str, u32)>> = None;
    for msg in messages {
        let mut msg = match msg {
            Received::InPlace(m)
                if core.config.trace || REWRITING_PROPERTIES.iter().any(|p| m.property(p).is_some()) =>
            {
                Received::Owned(m.to_message())
            }
            other => other,
        };
        msg.claim_topic(topic)?;
        if msg.body_len() > max_body {
            return Err(Error::MessageTooLarge { size: msg.body_len(), max: max_body }.into());
        }
        let (waits_in, code, due) = match &mut msg {
            Received::InPlace(m) => {
                traced.push(m.flag(PROP_TRACE));
                (None, record::tag_hash(m.tags), None)
            }
            Received::Owned(m) => {
                if core.config.trace {
                    m.properties.insert(PROP_TRACE.into(), "true".into());
                }
                traced.push(trace::is_traced(m));
                route(core, conn, m, topic, queue, batch_len, now)?
            }
        };
        match dest {
            None => dest = Some(waits_in),
            Some(d) if d != waits_in => {
                return Err(Error::InvalidArgument(
                    "a batch's messages share one delay level (or all have exact times, or none)".into(),
                )
                .into())
            }
            Some(_) => {}
        }
        let size = msg.checked_len().map_err(|e| Error::InvalidArgument(e.to_string()))? + producer_len;
        if size > max_record {
            return Err(Error::MessageTooLarge { size, max: max_record }.into());
        }
        bytes += size;
        items.push((msg, code));
        dues.push(due);
    }
    let (store_in, store_queue) = match dest.flatten() {
        Some((waits_in, waits_queue)) => (Some(waits_in), waits_queue),
        None => (None, queue),
    };
    let prepared =
        PreparedSend { topic, queue, producer, store_in, store_queue, dues, traced, received_at: now, bytes };
    Ok((items, prepared))
}

/// Where a message waits (a system topic and queue; `None`: its own queue),
/// its tag code and its delivery time.
type Route = (Option<(&'static str, u32)>, u64, Option<i64>);

/// Where a message the broker rewrites waits, if anywhere (a delay queue,
/// the half topic), its tag code and its delivery time; rewrites it so.
fn route(
    core: &BrokerCore,
    conn: &ConnInfo,
    msg: &mut Message,
    topic: &str,
    queue: u32,
    batch_len: usize,
    now: i64,
) -> Result<Route, WireError> {
    let delay = core.delays.take_request(msg, now)?;
    Ok(match delay {
        _ if txn::is_half(msg) => {
            if delay.is_some() || batch_len > 1 {
                return Err(Error::InvalidArgument(
                    "a transactional message is sent alone and cannot be delayed".into(),
                )
                .into());
            }
            (Some(txn::park_half(msg, topic, queue, conn)?), record::tag_hash(msg.tags.as_deref()), None)
        }
        None => (None, record::tag_hash(msg.tags.as_deref()), None),
        Some(delay) => {
            let parked = core.delays.park(msg, topic, queue, delay, now);
            (Some((parked.topic, parked.queue)), parked.due as u64, Some(parked.due))
        }
    })
}
