//! One producer's sends to one queue — a lane — written in the order the
//! producer's dispatcher hands them over and answered in that order.
//!
//! An idempotent lane numbers its messages: each send carries the lane's
//! epoch and the sequence number of its first message. When a send fails
//! in a way a retry can cure (a lost connection, a busy or stopping broker),
//! the lane waits for every later send in flight to be answered, then sends
//! again, in order and with the same numbers, everything not acknowledged:
//! the broker answers what it had stored with the original acks and stores
//! the rest, and refuses any send while an earlier one is missing. When the
//! lane gives up — retries spent, or an error no retry cures — the first
//! failed send gets its error, every later one [`ClientError::Aborted`],
//! and the lane starts a new epoch at sequence 0.
//!
//! Without idempotence the lane numbers nothing: a failed non-ordered send
//! is sent again (it may then be stored twice), a failed ordered one is not.

use crate::connection::Connection;
use crate::error::ClientError;
use crate::faults::Faults;
use crate::session::{Backoff, Session};
use brook_proto::request::SendAck;
use brook_proto::{ErrorCode, Message, ProducerSeq, Request};
use futures::stream::{FuturesOrdered, StreamExt};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// A send's outcome: its acks, or why not.
pub(crate) type Outcome = Result<Vec<SendAck>, Refused>;

/// A failed send: the error, and its messages handed back when another
/// broker may take them (so the producer need not keep a copy of every
/// send in case its broker dies).
pub(crate) struct Refused {
    pub error: ClientError,
    pub unsent: Option<Vec<Message>>,
}

impl From<ClientError> for Refused {
    fn from(error: ClientError) -> Self {
        Refused { error, unsent: None }
    }
}

/// Where a send's acks go (`None`: one-way).
type Reply = Option<oneshot::Sender<Outcome>>;

/// A send handed to a lane.
pub(crate) struct LaneJob {
    /// Its messages (one request).
    pub messages: Vec<Message>,
    /// Where its answer goes.
    pub reply: Reply,
    /// Sent to a chosen queue (by sharding key or number), not round-robin.
    pub ordered: bool,
    /// The replica set's master as the route named it when the send was
    /// placed.
    pub session: Arc<Session>,
}

/// How a lane retries and how much it keeps in flight.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LaneConfig {
    /// Extra attempts after a retriable failure.
    pub retries: u32,
    /// Backoff between attempts.
    pub backoff: Backoff,
    /// Most sends in flight.
    pub max_in_flight: usize,
    /// A round-robin send whose broker is unreachable is given back (as
    /// [`ClientError::Unavailable`]) for the producer to send elsewhere,
    /// not retried here (a cluster has other brokers).
    pub reroute: bool,
}

/// A send written and not yet answered.
struct Pending {
    /// Its first message's sequence number (idempotent lanes).
    seq: u32,
    messages: Vec<Message>,
    reply: Reply,
    ordered: bool,
    attempts: u32,
    /// When it was last written (answer times feed the fault tolerance).
    written: Instant,
}

type Answer = Pin<Box<dyn Future<Output = Result<Vec<SendAck>, ClientError>> + Send>>;

/// One queue's sends of one producer.
pub(crate) struct Lane {
    session: Arc<Session>,
    conn: Option<Connection>,
    topic: String,
    queue: u32,
    /// 0: not idempotent.
    producer_id: u64,
    epoch: u32,
    next_seq: u32,
    retries: u32,
    backoff: Backoff,
    max_in_flight: usize,
    reroute: bool,
    /// The replica set it writes to (empty: a broker named directly).
    broker: String,
    faults: Arc<Faults>,
}

/// The sends in flight, in order, with their answers in the same order.
#[derive(Default)]
struct InFlight {
    pending: VecDeque<Pending>,
    answers: FuturesOrdered<Answer>,
}

impl Lane {
    pub(crate) fn new(
        session: Arc<Session>,
        config: LaneConfig,
        producer_id: u64,
        lane: (String, u32),
        (broker, faults): (String, Arc<Faults>),
    ) -> Self {
        Self {
            reroute: config.reroute,
            broker,
            faults,
            session,
            conn: None,
            topic: lane.0,
            queue: lane.1,
            producer_id,
            epoch: 0,
            next_seq: 0,
            retries: config.retries,
            backoff: config.backoff,
            max_in_flight: config.max_in_flight.max(1),
        }
    }

    /// Takes sends until the producer is gone and every answer is in.
    pub(crate) async fn run(mut self, mut jobs: mpsc::UnboundedReceiver<LaneJob>) {
        let mut flight = InFlight::default();
        let mut open = true;
        loop {
            tokio::select! {
                biased;
                Some(result) = flight.answers.next(), if !flight.answers.is_empty() => {
                    let Some(done) = flight.pending.pop_front() else { continue };
                    match result {
                        Ok(acks) => {
                            self.faults.answered(&self.broker, done.written.elapsed());
                            answer(done.reply, Ok(acks));
                        }
                        Err(e) => self.recover(done, e, &mut flight).await,
                    }
                }
                job = jobs.recv(), if open && flight.pending.len() < self.max_in_flight => match job {
                    Some(job) => self.start(job, &mut flight).await,
                    None => open = false,
                },
                else => break,
            }
        }
    }

    fn idempotent(&self) -> bool {
        self.producer_id != 0
    }

    /// The connection sends go out on, dialled again after a failure.
    async fn connection(&mut self) -> Result<Connection, ClientError> {
        match &self.conn {
            Some(conn) if !conn.is_closed() => Ok(conn.clone()),
            _ => {
                let conn = self.session.get().await?;
                self.conn = Some(conn.clone());
                Ok(conn)
            }
        }
    }

    /// Numbers a new send and writes it.
    async fn start(&mut self, job: LaneJob, flight: &mut InFlight) {
        let LaneJob { messages, reply, ordered, session } = job;
        if session.addr() != self.session.addr() {
            // The master moved (a failover): the same sequences go on there.
            self.session = session;
            self.conn = None;
        }
        if reply.is_none() {
            // One-way: no answer, so nothing to number or retry.
            if let Ok(conn) = self.connection().await {
                let (topic, queue) = (self.topic.clone(), self.queue);
                let _ = conn.oneway(Request::Send { topic, queue, messages, producer: None }).await;
            }
            return;
        }
        let count = u32::try_from(messages.len()).unwrap_or(u32::MAX);
        if self.idempotent() && self.next_seq.checked_add(count).is_none() {
            // Sequence numbers run out: a new epoch starts again at 0.
            self.epoch += 1;
            self.next_seq = 0;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(count);
        let pending = Pending { seq, messages, reply, ordered, attempts: 0, written: Instant::now() };
        let answer = self.write(&pending).await;
        flight.pending.push_back(pending);
        flight.answers.push_back(answer);
    }

    /// Writes `pending` now (the answer comes later, in order).
    async fn write(&mut self, pending: &Pending) -> Answer {
        let producer = self.idempotent().then_some(ProducerSeq {
            producer_id: self.producer_id,
            epoch: self.epoch,
            sequence: pending.seq,
        });
        match self.connection().await {
            Ok(conn) => Box::pin(conn.send_as(&self.topic, self.queue, pending.messages.clone(), producer)),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }

    /// A send failed: waits for every later answer, then sends the failed
    /// ones again in order, or gives up on them.
    async fn recover(&mut self, first: Pending, error: ClientError, flight: &mut InFlight) {
        if is_connection_error(&error) {
            self.conn = None;
            self.faults.failed(&self.broker);
        }
        let mut failed = vec![first];
        while let Some(result) = flight.answers.next().await {
            let Some(done) = flight.pending.pop_front() else { continue };
            match result {
                Ok(acks) => answer(done.reply, Ok(acks)),
                Err(e) => {
                    if is_connection_error(&e) {
                        self.conn = None;
                    }
                    failed.push(done);
                }
            }
        }
        if self.reroute && is_connection_error(&error) {
            // Another broker takes the unordered ones: each goes back to the
            // producer. Ordered ones stay with their queue, below.
            let cause = error.to_string();
            let (ordered, unordered): (Vec<_>, Vec<_>) = failed.into_iter().partition(|p| p.ordered);
            for pending in unordered {
                if let Some(reply) = pending.reply {
                    let error = ClientError::Unavailable { broker: self.broker.clone(), cause: cause.clone() };
                    let _ = reply.send(Err(Refused { error, unsent: Some(pending.messages) }));
                }
            }
            if ordered.is_empty() {
                self.new_epoch();
                return;
            }
            failed = ordered;
        }
        let head = &failed[0];
        let retry = retriable(&error)
            && head.attempts < self.retries
            && (self.idempotent() || failed.iter().all(|p| !p.ordered));
        if retry {
            tokio::time::sleep(self.backoff.delay(head.attempts)).await;
            for mut pending in failed {
                pending.attempts += 1;
                pending.written = Instant::now();
                let answer = self.write(&pending).await;
                flight.pending.push_back(pending);
                flight.answers.push_back(answer);
            }
            return;
        }
        let mut failed = failed.into_iter();
        if let Some(head) = failed.next() {
            let cause = error.to_string();
            // An ordered send whose broker is gone names it.
            let error = match error {
                e if is_connection_error(&e) && self.reroute => {
                    ClientError::Unavailable { broker: self.broker.clone(), cause: e.to_string() }
                }
                e => e,
            };
            answer(head.reply, Err(error));
            for later in failed {
                let aborted =
                    ClientError::Aborted { sequence: self.idempotent().then_some(head.seq), cause: cause.clone() };
                answer(later.reply, Err(aborted));
            }
        }
        self.new_epoch();
    }

    /// What the broker holds of failed sends is unknown: an idempotent
    /// lane's sequence starts again, in a new epoch.
    fn new_epoch(&mut self) {
        if self.idempotent() {
            self.epoch += 1;
            self.next_seq = 0;
        }
    }
}

fn answer(reply: Reply, result: Result<Vec<SendAck>, ClientError>) {
    if let Some(reply) = reply {
        let _ = reply.send(result.map_err(Refused::from));
    }
}

fn is_connection_error(e: &ClientError) -> bool {
    matches!(e, ClientError::Connection(_) | ClientError::Timeout(_))
}

/// Whether sending again may cure the failure. A send refused as out of
/// order was refused because an earlier one is missing: sent again after
/// it, it goes in.
fn retriable(e: &ClientError) -> bool {
    e.is_retriable() || e.code() == Some(ErrorCode::OutOfOrderSequence)
}
