//! Producing load: P connections, each sending S-byte messages in one of
//! three modes — `sync` (await each ack), `pipelined` (W requests in flight)
//! or `batch` (B messages per request, W in flight) — over a set of target
//! queues, until N messages or a deadline.

use crate::stats::{new_histogram, record_ns, Stats};
use brook_client::{Connection, Message, SendAck};
use brook_proto::{ProducerSeq, Request, Response};
use futures::stream::{FuturesUnordered, StreamExt};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// How requests are issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One message per request, wait for each ack.
    Sync,
    /// One message per request, `inflight` requests outstanding.
    Pipelined,
    /// `batch` messages per request, `inflight` requests outstanding.
    Batch,
}

/// When to stop.
#[derive(Debug)]
pub struct Budget {
    remaining: AtomicI64,
    /// Set by a timer at the deadline: reading the clock per claim was a
    /// visible share of the harness's CPU in pipelined runs.
    over: AtomicBool,
}

impl Budget {
    /// `messages` in all (if any) and/or until `deadline` (a timer on the
    /// current runtime ends the run then).
    pub fn new(messages: Option<u64>, deadline: Option<Instant>) -> Arc<Budget> {
        let budget = Arc::new(Budget {
            remaining: AtomicI64::new(messages.map_or(i64::MAX, |m| m as i64)),
            over: AtomicBool::new(false),
        });
        if let Some(deadline) = deadline {
            let budget = Arc::downgrade(&budget);
            tokio::spawn(async move {
                tokio::time::sleep_until(deadline.into()).await;
                if let Some(budget) = budget.upgrade() {
                    budget.over.store(true, Ordering::Relaxed);
                }
            });
        }
        budget
    }

    /// Takes up to `n` messages of work; 0 when the run is over.
    pub fn claim(&self, n: u64) -> u64 {
        if self.over.load(Ordering::Relaxed) {
            return 0;
        }
        let before = self.remaining.fetch_sub(n as i64, Ordering::Relaxed);
        before.clamp(0, n as i64) as u64
    }
}

/// What a producer run sends.
#[derive(Debug, Clone)]
pub struct Load {
    /// `(topic, queue)` pairs, used round-robin.
    pub targets: Arc<Vec<(String, u32)>>,
    /// Body size.
    pub size: usize,
    /// Request mode.
    pub mode: Mode,
    /// Requests in flight per connection (pipelined, batch).
    pub inflight: usize,
    /// Messages per request (batch).
    pub batch: usize,
    /// Keep (key, topic, queue, offset) of every ack.
    pub keep_acks: bool,
    /// Send as an idempotent producer (an id per producer task, a sequence
    /// per target), as the client's producer does by default.
    pub idempotent: bool,
}

/// One acknowledged message.
#[derive(Debug, Clone)]
pub struct Acked {
    /// The message key (`p<producer>-<seq>`).
    pub key: String,
    /// Topic.
    pub topic: String,
    /// Queue.
    pub queue: u32,
    /// Offset.
    pub offset: u64,
}

/// Nanoseconds since the epoch (end-to-end latency is measured across
/// processes on one host).
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A message whose body starts with its send time.
pub fn message(topic: &str, size: usize, key: String) -> Message {
    message_at(topic, size, now_ns(), key)
}

/// A message whose body starts with `sent_ns`: the messages of one request
/// share one clock read.
fn message_at(topic: &str, size: usize, sent_ns: u64, key: String) -> Message {
    let mut body = vec![b'x'; size.max(8)];
    body[..8].copy_from_slice(&sent_ns.to_le_bytes());
    body.truncate(size.max(8));
    Message::new(topic, body).with_key(key)
}

/// [`message_at`] for a send to its own topic: the topic is left empty,
/// which a send reads as its own (one allocation less per message).
fn message_in_send(size: usize, sent_ns: u64, key: String) -> Message {
    message_at("", size, sent_ns, key)
}

/// `p<producer>-<seq>`, written without `core::fmt`: with small bodies the
/// harness formatting keys cost as much CPU as the broker storing them.
fn key(producer: usize, seq: u64) -> String {
    fn push_decimal(out: &mut String, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        digits[at..].iter().for_each(|&d| out.push(char::from(d)));
    }
    let mut key = String::with_capacity(24);
    key.push('p');
    push_decimal(&mut key, producer as u64);
    key.push('-');
    push_decimal(&mut key, seq);
    key
}

/// An idempotent producer id for this task (`None`, with a note, if the
/// broker gives none: the task then sends without).
async fn init_producer(conn: &Connection) -> Option<u64> {
    match conn.request(Request::InitProducer).await {
        Ok(Response::Producer { producer_id, .. }) => Some(producer_id),
        other => {
            eprintln!("no producer id ({other:?}); sending without sequences");
            None
        }
    }
}

/// Runs producer `id` on `conn` until the budget is spent.
pub async fn run(id: usize, conn: Connection, load: Load, budget: Arc<Budget>, stats: Arc<Stats>) -> Vec<Acked> {
    let mut hist = new_histogram();
    let mut acks = Vec::new();
    let mut seq = 0u64;
    let mut target = id;
    let per_request = match load.mode {
        Mode::Batch => load.batch.max(1) as u64,
        _ => 1,
    };
    let window = match load.mode {
        Mode::Sync => 1,
        _ => load.inflight.max(1),
    };
    let mut in_flight = FuturesUnordered::new();
    // Borrowed by the requests in flight, which never outlive this call.
    let (conn, targets) = (&conn, &*load.targets);
    let producer_id = if load.idempotent { init_producer(conn).await } else { None };
    let mut sequences = vec![0u32; targets.len()];
    loop {
        while in_flight.len() < window {
            let n = budget.claim(per_request);
            if n == 0 {
                break;
            }
            let (topic, queue) = &targets[target % targets.len()];
            let producer = producer_id.map(|producer_id| {
                let sequence = &mut sequences[target % targets.len()];
                let first = *sequence;
                *sequence += n as u32;
                ProducerSeq { producer_id, epoch: 0, sequence: first }
            });
            target += 1;
            let sent_ns = now_ns();
            let messages: Vec<Message> =
                (0..n).map(|i| message_in_send(load.size, sent_ns, key(id, seq + i))).collect();
            seq += n;
            let keys: Vec<String> = if load.keep_acks {
                messages.iter().flat_map(|m| m.keys.first().cloned()).collect()
            } else {
                Vec::new()
            };
            // The send leaves now; what is kept in flight is its answer.
            let answer = conn.send_as(topic, *queue, messages, producer);
            in_flight.push(async move { (sent_ns, topic, keys, answer.await) });
        }
        let Some((sent_ns, topic, keys, result)) = in_flight.next().await else { break };
        record_ns(&mut hist, now_ns().saturating_sub(sent_ns));
        match result {
            Ok(sent) => {
                stats.done(sent.len() as u64, (sent.len() * load.size) as u64);
                if load.keep_acks {
                    acks.extend(keys.into_iter().zip(sent).map(|(key, ack): (String, SendAck)| Acked {
                        key,
                        topic: topic.clone(),
                        queue: ack.queue,
                        offset: ack.queue_offset,
                    }));
                }
            }
            Err(e) => {
                if stats.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("first error: {e}");
                }
            }
        }
    }
    stats.merge(&hist);
    acks
}

#[cfg(test)]
mod tests {
    use super::key;

    #[test]
    fn keys_read_as_formatted() {
        for (producer, seq) in [(0, 0), (3, 9), (15, 10), (7, u64::MAX), (123, 4567)] {
            assert_eq!(key(producer, seq), format!("p{producer}-{seq}"));
        }
    }
}
