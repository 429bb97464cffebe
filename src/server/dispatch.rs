//! Routes each request to the actor that owns it and maps every error to a
//! wire code. Validation happens here, before anything reaches an actor, so
//! invalid input changes nothing.

use crate::actors::fanout::Stores;
use crate::actors::queue::{Destroy, Pull, Range, Stored};
use crate::actors::reput::{Encoded, StoreWait};
use crate::error::Error;
use crate::filter::sql::{Expr, Fields};
use crate::filter::TagFilter;
use crate::server::connection::ConnInfo;
use crate::server::{groups, query, retry, trace, txn, BrokerCore};
use crate::store::commitlog::LogReader;
use crate::store::consume_queue::CqEntry;
use crate::store::record::{self, DecodedRecord};
use brook_proto::names::validate_name;
use brook_proto::request::{QueueRef, QueueStats, StoredAck, TopicInfo};
use brook_proto::system::{
    is_reserved_topic, PROP_DELAY_LEVEL, PROP_DELAY_MS, PROP_DELIVER_AT, PROP_ORIGIN_LOG_OFFSET, PROP_RECONSUME_TIMES,
    PROP_TRACE, PROP_TRANSACTION,
};
use brook_proto::{
    ErrorCode, Frame, Message, MessageId, MessageOut, MessageRef, Outbound, PulledFrame, Request, Response,
    StoredMessage, StoredMessageOut, WireError,
};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

/// Most messages in one send request.
pub const MAX_BATCH_MESSAGES: usize = brook_proto::MAX_SEND_MESSAGES;
/// Longest a pull may be parked.
pub const MAX_LONG_POLL_MS: u64 = 120_000;

/// What a request is answered with: a response or why not.
pub type Reply = Result<Response, WireError>;

fn mailbox(e: actix::MailboxError) -> WireError {
    Error::Busy(format!("actor unavailable: {e}")).into()
}

/// How a request's answer goes out.
pub enum Answer {
    /// An answer to encode.
    Reply(Reply),
    /// A pull's answer, encoded already but for the request id.
    Pulled(PulledAnswer),
}

/// A pull's messages in their frame, and the queue's offsets.
pub struct PulledAnswer {
    frame: PulledFrame,
    offsets: (u64, u64, u64),
}

impl Answer {
    /// The frame that answers request `id`.
    pub fn framed(self, id: u64, max_frame: usize) -> Outbound {
        let body = match self {
            Answer::Reply(body) => body,
            Answer::Pulled(PulledAnswer { frame, offsets }) => match frame.finish(id, offsets, max_frame) {
                Ok(bytes) => return Outbound::Encoded(bytes),
                Err(e) => Err(WireError::new(ErrorCode::Internal, format!("pull answer not encoded: {e}"))),
            },
        };
        Frame::Response { id, body }.into()
    }
}

/// Answers one request.
pub async fn handle(core: &BrokerCore, conn: &ConnInfo, request: Request) -> Answer {
    let reply = match request {
        Request::Hello { .. } => Err(WireError::new(ErrorCode::InvalidArgument, "hello was already received")),
        Request::Ping => Ok(Response::Pong),
        Request::CreateTopic { name, queues } => create_topic(core, &name, queues),
        Request::DeleteTopic { name } => delete_topic(core, &name).await,
        Request::ListTopics => Ok(Response::Topics(
            core.topics
                .list()
                .into_iter()
                .map(|(name, c)| TopicInfo { name, queues: c.queues, queue_stats: Vec::new() })
                .collect(),
        )),
        Request::DescribeTopic { name } => describe_topic(core, &name).await,
        // Connections gather their sends into `send_many` themselves; this
        // is the same path for one.
        Request::Send { topic, queue, messages } => {
            let request = SendRequest { id: None, body: SendBody::Owned { topic, queue, messages } };
            match send_many(core, conn, vec![request]).await.pop() {
                Some((_, reply)) => reply,
                None => Err(Error::Busy("send produced no answer".into()).into()),
            }
        }
        Request::Pull { topic, queue, offset, max_messages, max_bytes, tags, long_poll_ms, sql } => {
            let filters = (tags.as_deref(), sql.as_deref());
            return match pull(core, &topic, queue, offset, max_messages, max_bytes, filters, long_poll_ms).await {
                Ok(pulled) => Answer::Pulled(pulled),
                Err(e) => Answer::Reply(Err(e)),
            };
        }
        Request::Heartbeat(heartbeat) => groups::heartbeat(core, conn, heartbeat).await,
        Request::LeaveGroup { group, member } => groups::leave(core, &group, member).await,
        Request::CommitOffsets { group, member, offsets, generation } => {
            groups::commit(core, &group, member, offsets, generation).await
        }
        Request::ResetOffsets { group, topic, to } => groups::reset(core, &group, &topic, to).await,
        Request::GetMessage { msg_id } => query::get_message(core, &msg_id).await,
        Request::QueryByKey { topic, key, begin_ms, end_ms, max } => {
            query::by_key(core, &topic, &key, (begin_ms, end_ms), max).await
        }
        Request::OffsetsAtTime { topic, time_ms } => query::offsets_at_time(core, &topic, time_ms).await,
        Request::FetchOffset { group, member, topic, queue } => {
            groups::fetch(core, &group, member, QueueRef { topic, queue }).await
        }
        Request::LockQueue { group, member, topic, queue } => {
            groups::lock(core, &group, member, QueueRef { topic, queue }).await
        }
        Request::UnlockQueue { group, member, topic, queue } => {
            groups::unlock(core, &group, member, QueueRef { topic, queue }).await
        }
        Request::ListGroups => Ok(Response::Groups(core.groups.known())),
        Request::DescribeGroup { group } => groups::describe(core, &group).await,
        Request::SendBack { group, log_offset, to_dlq } => retry::send_back(core, &group, log_offset, to_dlq).await,
        Request::ResendDlq { group, msg_id } => retry::resend_dlq(core, &group, &msg_id).await,
        Request::RegisterProducer { group } => txn::register(core, conn, &group),
        Request::EndTransaction { group, msg_id, outcome, .. } => txn::end(core, &group, &msg_id, outcome).await,
        Request::ListTransactions => txn::list(core).await,
        Request::ReportTrace { group, traces } => trace::report(core, conn, &group, traces),
        Request::CheckTransaction { .. } => {
            Err(WireError::new(ErrorCode::InvalidArgument, "CheckTransaction is sent by the broker, not to it"))
        }
        Request::AssignmentChanged { .. } | Request::OffsetsReset { .. } => {
            Err(WireError::new(ErrorCode::InvalidArgument, "notices are sent by the broker, not to it"))
        }
    };
    Answer::Reply(reply)
}

fn create_topic(core: &BrokerCore, name: &str, queues: u32) -> Reply {
    core.topics.create(name, queues)?;
    slog::info!(core.logger, "topic created or updated"; "topic" => name, "queues" => queues);
    Ok(Response::Topic(TopicInfo { name: name.to_string(), queues, queue_stats: Vec::new() }))
}

async fn delete_topic(core: &BrokerCore, name: &str) -> Reply {
    validate_name("topic", name).map_err(Error::InvalidName)?;
    if !core.topics.delete(name)? {
        return Err(Error::TopicNotFound(name.to_string()).into());
    }
    for addr in core.registry.remove_topic(name) {
        let _ = addr.send(Destroy).await;
    }
    let dir = core.paths.consumequeue().join(name);
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    slog::info!(core.logger, "topic deleted"; "topic" => name);
    Ok(Response::Done)
}

/// The topic's queue count, or the error a request naming it gets.
fn topic_queues(core: &BrokerCore, topic: &str) -> Result<u32, WireError> {
    validate_name("topic", topic).map_err(Error::InvalidName)?;
    core.topics.get(topic).map(|c| c.queues).ok_or_else(|| Error::TopicNotFound(topic.to_string()).into())
}

fn check_queue(topic: &str, queue: u32, queues: u32) -> Result<(), WireError> {
    if queue >= queues {
        return Err(Error::QueueOutOfRange { topic: topic.to_string(), queue, queues }.into());
    }
    Ok(())
}

async fn describe_topic(core: &BrokerCore, name: &str) -> Reply {
    let queues = topic_queues(core, name)?;
    let mut stats = Vec::with_capacity(queues as usize);
    for queue in 0..queues {
        let (min_offset, max_offset) = core.registry.queue(name, queue).send(Range).await.map_err(mailbox)??;
        stats.push(QueueStats { queue, min_offset, max_offset });
    }
    Ok(Response::Topic(TopicInfo { name: name.to_string(), queues, queue_stats: stats }))
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
    },
}

/// A message on its way to the log: read in place from its frame, or owned
/// because the broker rewrites it (delays, transactions, tracing).
enum Outgoing<'a> {
    InPlace(MessageRef<'a>),
    Owned(Message),
}

impl Outgoing<'_> {
    fn encode(&self, into: &mut Encoded, code: u64) -> crate::error::Result<()> {
        match self {
            Outgoing::InPlace(m) => into.push(m, code),
            Outgoing::Owned(m) => into.push(m, code),
        }
    }

    fn checked_len(&self) -> Result<usize, record::EncodeError> {
        match self {
            Outgoing::InPlace(m) => record::checked_len(m),
            Outgoing::Owned(m) => record::checked_len(m),
        }
    }

    fn body_len(&self) -> usize {
        match self {
            Outgoing::InPlace(m) => m.body.len(),
            Outgoing::Owned(m) => m.body.len(),
        }
    }
}

/// A prepared send's messages with their tag codes. Most sends under
/// pipelining carry one message: kept inline, as are the per-message
/// answers' inputs below.
type Items<'a> = SmallVec<[(Outgoing<'a>, u64); 1]>;

/// Properties that make the broker rewrite a message before storing it.
const REWRITING_PROPERTIES: [&str; 4] = [PROP_DELAY_LEVEL, PROP_DELAY_MS, PROP_DELIVER_AT, PROP_TRANSACTION];

/// Most encoded bytes one merged store carries; more start another.
const MERGE_BYTES: usize = 1 << 20;

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
    /// Requests already answered (refused).
    answers: Vec<(Option<u64>, Reply)>,
    /// The rest, in store order, and how many belong to each stored part.
    members: Vec<(Option<u64>, Answering)>,
    sizes: Vec<usize>,
    stored: StoreWait,
}

/// Checks, encodes and hands to the queues the sends of [`send_many`], all
/// before returning: sends submitted one after another are stored in that
/// order, however their waits are scheduled.
pub fn submit_sends(core: &BrokerCore, conn: &ConnInfo, mut requests: Vec<SendRequest>) -> SubmittedSends {
    let mut answers = Vec::with_capacity(requests.len());
    let mut ready = Vec::with_capacity(requests.len());
    for SendRequest { id, body } in &mut requests {
        let prepared = match body {
            SendBody::Wire(fields) => match brook_proto::codec::decode_send(fields) {
                Ok(send) => {
                    prepare_send(core, conn, send.topic, send.queue, send.messages.into_iter().map(Outgoing::InPlace))
                }
                Err(e @ brook_proto::CodecError::TooManyMessages { .. }) => {
                    Err(WireError::new(ErrorCode::InvalidArgument, e.to_string()))
                }
                Err(e) => Err(WireError::new(ErrorCode::MalformedFrame, e.to_string())),
            },
            SendBody::Owned { topic, queue, messages } => {
                prepare_send(core, conn, topic, *queue, std::mem::take(messages).into_iter().map(Outgoing::Owned))
            }
        };
        match prepared {
            Ok((items, prepared)) => ready.push((*id, items, prepared)),
            Err(e) => answers.push((*id, Err(e))),
        }
    }
    let (groups, ready) = merge_in_order(
        ready.into_iter().map(|(id, items, prepared)| {
            let dest = (prepared.store_topic(), prepared.store_queue);
            (dest, prepared.bytes, (id, items, prepared))
        }),
        MERGE_BYTES,
    );
    // Every group is a part of one produce: one buffer and one answer
    // however many queues the requests name.
    let bytes = ready.iter().map(|(_, _, prepared)| prepared.bytes).sum();
    let records = ready.iter().map(|(_, items, _)| items.len()).sum();
    let mut encoded = Encoded::with_capacity(bytes, records, groups.len());
    // The requests of every part opened, and how many each part has.
    let mut members = Vec::with_capacity(ready.len());
    let mut ready = ready.into_iter();
    let mut sizes = Vec::with_capacity(groups.len());
    for ((topic, queue), count) in groups {
        encoded.begin(core.reput.queue_spec(topic, queue), queue);
        let mut failed = None;
        let first = members.len();
        for (id, items, prepared) in ready.by_ref().take(count) {
            for (msg, code) in &items {
                if let Err(e) = msg.encode(&mut encoded, *code) {
                    failed.get_or_insert(e);
                }
            }
            members.push((id, prepared.answering()));
        }
        match failed {
            None => sizes.push(count),
            // Every field was checked while preparing; a failure here is a
            // bug, and it fails only this group.
            Some(e) => {
                encoded.abandon();
                let e = WireError::from(e);
                answers.extend(members.drain(first..).map(|(id, _)| (id, Err(e.clone()))));
            }
        }
    }
    SubmittedSends { answers, members, sizes, stored: core.reput.submit_encoded(encoded) }
}

impl SubmittedSends {
    /// Waits for the stores and answers every request.
    pub async fn answers(self, core: &BrokerCore, conn: &ConnInfo) -> Vec<(Option<u64>, Reply)> {
        let SubmittedSends { mut answers, members, sizes, stored } = self;
        let Stores { stored, outcomes } = stored.wait().await;
        let mut members = members.into_iter();
        for (outcome, size) in outcomes.into_iter().zip(sizes) {
            let group = members.by_ref().take(size);
            match outcome {
                Ok(range) => {
                    let mut rest = stored.get(range).unwrap_or(&[]);
                    for (id, answering) in group {
                        let (own, after) = rest.split_at(answering.dues.len().min(rest.len()));
                        rest = after;
                        answers.push((id, Ok(finish_send(core, conn, answering, own))));
                    }
                }
                Err(e) => {
                    let e = WireError::from(e);
                    answers.extend(group.map(|(id, _)| (id, Err(e.clone()))));
                }
            }
        }
        answers
    }
}

/// Groups items by destination, keeping arrival order within each: an item
/// joins only the newest group of its destination (joining an older one
/// would put it ahead of items after that group), and a group stops taking
/// items at `cap` bytes (a single bigger item still gets a group). Returns
/// each group's destination and size, and the items in group order.
///
/// The newest group of each destination is found by a search back through
/// the groups while they are few (most gathers are a request or a handful)
/// and through a map past that: with thousands of queues each request has a
/// group of its own, and the search made a gather quadratic. The items come
/// back in one list, not a list per group, for the same reason.
fn merge_in_order<D: Eq + Hash + Clone, T>(
    items: impl Iterator<Item = (D, usize, T)>,
    cap: usize,
) -> (Vec<(D, usize)>, Vec<T>) {
    /// Groups searched without a map.
    const SEARCHED: usize = 8;
    let mut groups: Vec<(D, usize, usize)> = Vec::with_capacity(items.size_hint().0);
    let mut newest: Option<HashMap<D, usize, crate::actors::FastHash>> = None;
    let mut placed = Vec::with_capacity(items.size_hint().0);
    for (dest, bytes, item) in items {
        let found = match &newest {
            Some(map) => map.get(&dest).copied(),
            None => groups.iter().rposition(|(d, _, _)| *d == dest),
        };
        let group = match found {
            Some(i) if groups[i].1 + bytes <= cap => {
                groups[i].1 += bytes;
                groups[i].2 += 1;
                i
            }
            _ => {
                if let Some(map) = &mut newest {
                    map.insert(dest.clone(), groups.len());
                }
                groups.push((dest, bytes, 1));
                if newest.is_none() && groups.len() > SEARCHED {
                    // Later groups overwrite earlier ones: the newest wins.
                    newest = Some(groups.iter().enumerate().map(|(i, (d, _, _))| (d.clone(), i)).collect());
                }
                groups.len() - 1
            }
        };
        placed.push((group, item));
    }
    // Stable: arrival order within a group stays.
    placed.sort_by_key(|(group, _)| *group);
    (
        groups.into_iter().map(|(dest, _, count)| (dest, count)).collect(),
        placed.into_iter().map(|(_, item)| item).collect(),
    )
}
/// A send request that passed every check, its messages encoded-ready and
/// moved out; what is left is needed to answer it once stored.
struct PreparedSend<'a> {
    topic: &'a str,
    queue: u32,
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

    /// What answering it needs, apart from the request's bytes.
    fn answering(self) -> Answering {
        let PreparedSend { topic, queue, store_queue, dues, traced, received_at, .. } = self;
        // The topic only names trace events: copied only for them.
        let topic = if traced.contains(&true) { topic.to_string() } else { String::new() };
        Answering { topic, queue, store_queue, dues, traced, received_at }
    }
}

/// A submitted send's answer, waiting for its store.
struct Answering {
    topic: String,
    queue: u32,
    store_queue: u32,
    dues: SmallVec<[Option<i64>; 1]>,
    traced: SmallVec<[bool; 16]>,
    received_at: i64,
}

/// Checks a send request and turns it into the items to store: every
/// refusal happens here, before anything is written.
fn prepare_send<'a>(
    core: &BrokerCore,
    conn: &ConnInfo,
    topic: &'a str,
    queue: u32,
    messages: impl ExactSizeIterator<Item = Outgoing<'a>>,
) -> Result<(Items<'a>, PreparedSend<'a>), WireError> {
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
    let batch_len = messages.len();
    if batch_len == 0 || batch_len > MAX_BATCH_MESSAGES {
        return Err(Error::InvalidArgument(format!(
            "a send carries 1..={MAX_BATCH_MESSAGES} messages, got {batch_len}"
        ))
        .into());
    }
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
            Outgoing::InPlace(m)
                if core.config.trace || REWRITING_PROPERTIES.iter().any(|p| m.property(p).is_some()) =>
            {
                Outgoing::Owned(m.to_message())
            }
            other => other,
        };
        let named = match &mut msg {
            Outgoing::InPlace(m) if m.topic.is_empty() => topic,
            Outgoing::InPlace(m) => m.topic,
            Outgoing::Owned(m) if m.topic.is_empty() => {
                m.topic = topic.to_string();
                topic
            }
            Outgoing::Owned(m) => &m.topic,
        };
        if named != topic {
            return Err(Error::InvalidArgument(format!(
                "a batch goes to one topic: {topic:?}, but a message names {named:?}"
            ))
            .into());
        }
        if let Outgoing::InPlace(m) = &mut msg {
            m.topic = topic;
        }
        if msg.body_len() > max_body {
            return Err(Error::MessageTooLarge { size: msg.body_len(), max: max_body }.into());
        }
        let (waits_in, code, due) = match &mut msg {
            Outgoing::InPlace(m) => {
                traced.push(m.flag(PROP_TRACE));
                (None, record::tag_hash(m.tags), None)
            }
            Outgoing::Owned(m) => {
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
        let size = msg.checked_len().map_err(|e| Error::InvalidArgument(e.to_string()))?;
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
    let prepared = PreparedSend { topic, queue, store_in, store_queue, dues, traced, received_at: now, bytes };
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

/// The answer to a stored send (and its trace events).
fn finish_send(core: &BrokerCore, conn: &ConnInfo, answering: Answering, stored: &[Stored]) -> Response {
    let Answering { topic, queue, store_queue, dues, traced, received_at } = answering;
    let acks: Vec<StoredAck> = stored
        .iter()
        .zip(dues)
        .map(|(s, deliver_at)| StoredAck {
            log_offset: s.pos.log_offset,
            queue,
            queue_offset: s.queue_offset,
            deliver_at,
        })
        .collect();
    if traced.contains(&true) {
        let cost_ms = crate::clock::now_ms() - received_at;
        let sent = acks
            .iter()
            .zip(&traced)
            .filter(|(_, t)| **t)
            .map(|(ack, _)| trace::SentTrace {
                msg_id: MessageId { broker: core.advertised, log_offset: ack.log_offset }.to_hex(),
                topic: &topic,
                queue: store_queue,
                offset: ack.queue_offset,
                received_at,
                cost_ms,
            })
            .collect();
        trace::sent(core, conn, sent);
    }
    Response::Sent(acks)
}

#[allow(clippy::too_many_arguments)]
async fn pull(
    core: &BrokerCore,
    topic: &str,
    queue: u32,
    offset: u64,
    max_messages: u32,
    max_bytes: u32,
    (tags, sql): (Option<&str>, Option<&str>),
    long_poll_ms: u64,
) -> Result<PulledAnswer, WireError> {
    let queues = topic_queues(core, topic)?;
    check_queue(topic, queue, queues)?;
    let filter = Arc::new(TagFilter::parse(tags).map_err(Error::InvalidArgument)?);
    let sql = sql.map(|text| query::sql_filter(core, text)).transpose()?;
    if long_poll_ms > MAX_LONG_POLL_MS {
        return Err(
            Error::InvalidArgument(format!("long_poll_ms is at most {MAX_LONG_POLL_MS}, got {long_poll_ms}")).into()
        );
    }
    // Keep every answer well inside one frame.
    let byte_cap = (core.config.server.max_frame_bytes / 2) as u32;
    let max_bytes = if max_bytes == 0 { 1 << 20 } else { max_bytes }.min(byte_cap);
    let found = core
        .registry
        .queue(topic, queue)
        .send(Pull {
            offset,
            max_messages: if max_messages == 0 { 32 } else { max_messages },
            max_bytes,
            filter: filter.clone(),
            long_poll: Duration::from_millis(long_poll_ms),
            cut_short: Some(core.stopping.clone()),
        })
        .await
        .map_err(mailbox)??;
    // Fresh records are read right here: all of them for a consumer that
    // this pull brings to the queue's end (it is keeping up; a thread hop
    // would only add latency), the first few for one catching up on a
    // backlog. From the first record not in the page cache on, or past those
    // few, the rest are read on the blocking pool: a cold or long read must
    // not stall the connections sharing this thread.
    let pulled = Pulled { reader: core.reader.clone(), broker: core.advertised, filter, sql };
    let entries = found.entries;
    let bytes = entries.iter().map(|(_, e)| e.size as usize).sum();
    let mut frame = PulledFrame::with_capacity(bytes);
    let caught_up = found.next_offset >= found.max_offset;
    let inline = if caught_up { entries.len() } else { entries.len().min(INLINE_READS) };
    let next = pulled.read(&entries[..inline], 0, true, &mut frame)?;
    if next < entries.len() {
        frame = tokio::task::spawn_blocking(move || -> Result<PulledFrame, Error> {
            pulled.read(&entries, next, false, &mut frame)?;
            Ok(frame)
        })
        .await
        .map_err(|e| Error::Busy(e.to_string()))??;
    }
    Ok(PulledAnswer { frame, offsets: (found.next_offset, found.min_offset, found.max_offset) })
}

/// Records a pull that leaves a backlog behind it reads on the
/// connection's thread at most.
const INLINE_READS: usize = 32;

/// How a pull turns consume-queue entries into messages.
struct Pulled {
    reader: LogReader,
    broker: std::net::SocketAddr,
    filter: Arc<TagFilter>,
    sql: Option<Arc<Expr>>,
}

impl Pulled {
    /// Reads `entries` from `from` into `out`, in order, keeping those the
    /// filters accept. With `cached_only` it stops at the first record not in
    /// the page cache; returns where it stopped.
    fn read(
        &self,
        entries: &[(u64, CqEntry)],
        from: usize,
        cached_only: bool,
        out: &mut PulledFrame,
    ) -> Result<usize, Error> {
        let entries = entries.get(from..).unwrap_or(&[]);
        let at: Vec<(u64, u32)> = entries.iter().map(|(_, e)| (e.log_offset, e.size)).collect();
        let each = |i: usize, bytes: &[u8]| {
            let (queue_offset, entry) = &entries[i];
            self.keep(*queue_offset, entry, bytes, out)
        };
        let read = if cached_only { self.reader.read_cached(&at, each)? } else { self.reader.read_many(&at, each)? };
        Ok(from + read)
    }

    /// Adds the checked record `bytes` to `out` if the filters accept it,
    /// encoding it from its fields in place.
    fn keep(&self, queue_offset: u64, entry: &CqEntry, bytes: &[u8], out: &mut PulledFrame) -> Result<(), Error> {
        let corrupt = |reason| Error::Corrupt { offset: entry.log_offset, reason };
        let rec = record::view(bytes).map_err(corrupt)?;
        let keys: SmallVec<[&str; 4]> = rec.keys().collect::<Result<_, _>>().map_err(corrupt)?;
        let pairs: SmallVec<[(&str, &str); 8]> = rec.properties().collect::<Result<_, _>>().map_err(corrupt)?;
        // The hash pass can collide; the tag string decides.
        if !self.filter.matches(rec.tags) {
            return Ok(());
        }
        let properties = sorted_properties(pairs.into_iter());
        let fields = Fields { properties: &properties, tags: rec.tags };
        if self.sql.as_ref().is_some_and(|expr| !expr.matches(&fields)) {
            return Ok(());
        }
        let (origin, reconsume_times) = lineage(entry.log_offset, |name| fields.property(name));
        let mut hex = [0u8; 56];
        let msg = StoredMessageOut {
            msg_id: MessageId { broker: self.broker, log_offset: origin }.hex_into(&mut hex),
            queue: rec.head.queue_id,
            queue_offset,
            log_offset: entry.log_offset,
            store_ts: rec.head.store_ts,
            flags: rec.head.flags,
            reconsume_times,
            message: MessageOut {
                topic: rec.topic,
                tags: rec.tags,
                keys: &keys,
                properties: &properties,
                body: rec.body,
                born_ts: rec.head.born_ts,
            },
        };
        // Encoding fails only if the room made for it was short: a bug,
        // reported with the record it met.
        out.push(&msg).map_err(|e| corrupt(format!("answer not encoded: {e}")))
    }
}

/// A record's properties as the owned message's map holds them: sorted by
/// name, and a name given twice with its last value. Records the broker or
/// this crate's client wrote are sorted already.
fn sorted_properties<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> SmallVec<[(&'a str, &'a str); 8]> {
    let mut pairs: SmallVec<[(&str, &str); 8]> = pairs.collect();
    if !pairs.windows(2).all(|w| w[0].0 < w[1].0) {
        // Reversed, a stable sort puts each name's last value first, and
        // dedup keeps the first of each run.
        pairs.reverse();
        pairs.sort_by_key(|(name, _)| *name);
        pairs.dedup_by_key(|(name, _)| *name);
    }
    pairs
}

/// A record as a consumer sees it. Copies the broker made (delayed,
/// retried, dead-lettered) carry the id of the message the producer sent.
pub fn stored_message(
    broker: std::net::SocketAddr,
    log_offset: u64,
    queue_offset: u64,
    rec: DecodedRecord,
) -> StoredMessage {
    let props = &rec.message.properties;
    let (origin, reconsume_times) = lineage(log_offset, |name| props.get(name).map(String::as_str));
    StoredMessage {
        msg_id: MessageId { broker, log_offset: origin }.to_hex(),
        queue: rec.head.queue_id,
        queue_offset,
        log_offset,
        store_ts: rec.head.store_ts,
        flags: rec.head.flags,
        reconsume_times,
        message: rec.message,
    }
}

/// Where the message at `log_offset` was first stored (its id names that
/// record) and how often it was retried, from its properties.
fn lineage<'a>(log_offset: u64, property: impl Fn(&str) -> Option<&'a str>) -> (u64, u32) {
    let origin = property(PROP_ORIGIN_LOG_OFFSET).and_then(|o| o.parse().ok()).unwrap_or(log_offset);
    (origin, property(PROP_RECONSUME_TIMES).and_then(|n| n.parse().ok()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::{merge_in_order, sorted_properties};
    use std::collections::BTreeMap;

    #[test]
    fn stored_properties_are_answered_as_the_owned_map_holds_them() {
        let cases: [&[(&str, &str)]; 6] = [
            &[],
            &[("a", "1")],
            &[("a", "1"), ("b", "2"), ("c", "3")],
            &[("c", "3"), ("a", "1"), ("b", "2")],
            // A name given twice keeps its last value, wherever it sits.
            &[("b", "old"), ("a", "1"), ("b", "new")],
            &[("x", "1"), ("x", "2"), ("a", "0"), ("x", "3"), ("a", "9")],
        ];
        for pairs in cases {
            let map: BTreeMap<&str, &str> = pairs.iter().copied().collect();
            let expected: Vec<(&str, &str)> = map.into_iter().collect();
            assert_eq!(sorted_properties(pairs.iter().copied()).to_vec(), expected, "{pairs:?}");
        }
    }

    #[test]
    fn merged_groups_keep_arrival_order_per_destination() {
        let items = [("a", 10, 1), ("b", 10, 2), ("a", 80, 3), ("a", 15, 4), ("b", 10, 5), ("a", 200, 6), ("a", 1, 7)];
        let (groups, items) = merge_in_order(items.into_iter(), 100);
        // "a": 1+3 fit (90 bytes); 4 would pass the cap, so a new group;
        // 6 is bigger than the cap alone; 7 must follow it, never join
        // the room left in an older group.
        assert_eq!(groups, vec![("a", 2), ("b", 2), ("a", 1), ("a", 1), ("a", 1)]);
        assert_eq!(items, vec![1, 3, 2, 5, 4, 6, 7]);
    }

    /// The plain rule, searched back through every group.
    fn merged_by_search(items: &[(u32, usize, usize)], cap: usize) -> (Vec<(u32, usize)>, Vec<usize>) {
        let mut groups: Vec<(u32, usize, Vec<usize>)> = Vec::new();
        for &(dest, bytes, item) in items {
            match groups.iter_mut().rev().find(|(d, _, _)| *d == dest) {
                Some(group) if group.1 + bytes <= cap => {
                    group.1 += bytes;
                    group.2.push(item);
                }
                _ => groups.push((dest, bytes, vec![item])),
            }
        }
        let sizes = groups.iter().map(|(d, _, items)| (*d, items.len())).collect();
        (sizes, groups.into_iter().flat_map(|(_, _, items)| items).collect())
    }

    #[test]
    fn many_destinations_merge_as_few_do() {
        // Past a handful of groups the newest is found through a map; the
        // outcome must be the plain rule's, before and after the switch.
        let mut seed = 7u64;
        for destinations in [1u32, 3, 8, 9, 40] {
            for len in [0usize, 1, 5, 9, 10, 200] {
                let items: Vec<(u32, usize, usize)> = (0..len)
                    .map(|i| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        ((seed >> 33) as u32 % destinations, (seed >> 20) as usize % 60, i)
                    })
                    .collect();
                let merged = merge_in_order(items.iter().copied(), 100);
                assert_eq!(merged, merged_by_search(&items, 100), "{destinations} destinations, {len} items");
            }
        }
    }
}
