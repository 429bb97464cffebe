//! Producing load: P connections, each sending S-byte messages in one of
//! three modes — `sync` (await each ack), `pipelined` (W requests in flight)
//! or `batch` (B messages per request, W in flight) — over a set of target
//! queues, until N messages or a deadline.

use crate::stats::{new_histogram, record, Stats};
use brook_client::{Connection, Message, SendAck};
use futures::stream::{FuturesUnordered, StreamExt};
use std::sync::atomic::{AtomicI64, Ordering};
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
    deadline: Option<Instant>,
}

impl Budget {
    /// `messages` in all (if any) and/or until `deadline`.
    pub fn new(messages: Option<u64>, deadline: Option<Instant>) -> Budget {
        Budget { remaining: AtomicI64::new(messages.map_or(i64::MAX, |m| m as i64)), deadline }
    }

    /// Takes up to `n` messages of work; 0 when the run is over.
    pub fn claim(&self, n: u64) -> u64 {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
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
    let mut body = vec![b'x'; size.max(8)];
    body[..8].copy_from_slice(&now_ns().to_le_bytes());
    body.truncate(size.max(8));
    Message::new(topic, body).with_key(key)
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
    loop {
        while in_flight.len() < window {
            let n = budget.claim(per_request);
            if n == 0 {
                break;
            }
            let (topic, queue) = load.targets[target % load.targets.len()].clone();
            target += 1;
            let keys: Vec<String> = (0..n).map(|i| format!("p{id}-{}", seq + i)).collect();
            seq += n;
            let messages = keys.iter().map(|k| message(&topic, load.size, k.clone())).collect();
            let conn = conn.clone();
            in_flight.push(async move {
                let start = Instant::now();
                let result = conn.send(&topic, queue, messages).await;
                (start, topic, keys, result)
            });
        }
        let Some((start, topic, keys, result)) = in_flight.next().await else { break };
        record(&mut hist, start);
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
