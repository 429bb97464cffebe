//! What brookd counts for its `/metrics` page, recorded where it happens
//! (the send path, pulls, the writer) with relaxed atomics only; the HTTP
//! listener (`crate::http`) reads it at scrape time together with gauges
//! it asks the broker for then. Names and labels follow RocketMQ's
//! exporter, so its Grafana boards work unchanged.

pub mod histogram;

use dashmap::DashMap;
use histogram::Histogram;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// RocketMQ's `message_type` label, as far as a broker can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// A plain message.
    Normal,
    /// Delivered after a delay or at a time.
    Delay,
    /// A transaction's half message.
    Transaction,
}

impl MessageType {
    /// Every type, in label order.
    pub const ALL: [MessageType; 3] = [MessageType::Normal, MessageType::Delay, MessageType::Transaction];

    /// The label value RocketMQ uses.
    pub fn label(self) -> &'static str {
        match self {
            MessageType::Normal => "NORMAL",
            MessageType::Delay => "DELAY",
            MessageType::Transaction => "TRANSACTION",
        }
    }
}

/// Messages and body bytes of one topic, by message type.
#[derive(Debug, Default)]
pub struct TopicCounts {
    messages: [AtomicU64; 3],
    bytes: [AtomicU64; 3],
}

impl TopicCounts {
    /// Adds `messages` of `kind` with `bytes` of body.
    pub fn add(&self, kind: MessageType, messages: u64, bytes: u64) {
        self.messages[kind as usize].fetch_add(messages, Ordering::Relaxed);
        self.bytes[kind as usize].fetch_add(bytes, Ordering::Relaxed);
    }

    /// (type, messages, bytes) for each type seen.
    pub fn by_type(&self) -> Vec<(MessageType, u64, u64)> {
        MessageType::ALL
            .iter()
            .map(|t| {
                (
                    *t,
                    self.messages[*t as usize].load(Ordering::Relaxed),
                    self.bytes[*t as usize].load(Ordering::Relaxed),
                )
            })
            .filter(|(_, m, _)| *m > 0)
            .collect()
    }
}

/// The broker's counters.
#[derive(Debug)]
pub struct Metrics {
    /// Stored, by topic.
    stored: DashMap<String, Arc<TopicCounts>>,
    /// Delivered to consumers, by topic.
    delivered: DashMap<String, Arc<TopicCounts>>,
    /// Sizes of stored messages.
    pub message_size: Histogram,
    /// Dead-lettered, by (group, topic).
    dead_lettered: DashMap<(String, String), u64>,
    /// Pulls parked waiting for messages now.
    pub long_polls: AtomicI64,
    /// Client connections open now.
    pub connections: AtomicI64,
    /// Of those, the ones that have sent messages.
    pub producer_connections: AtomicI64,
    /// Of those, the ones served on the log writer's thread.
    pub writer_connections: AtomicI64,
    /// Exact-time messages taken into the timer wheel, since start.
    pub timers_enqueued: AtomicU64,
    /// Exact-time messages the wheel delivered, since start.
    pub timers_dequeued: AtomicU64,
    /// Request latencies, ms, by request code: [answered, refused].
    rpc: Box<[[Histogram; 2]]>,
    /// How far each client has pulled each queue: hash of (client, topic,
    /// queue) → next offset (in-flight and ready messages per group).
    pulled: DashMap<u64, u64, foldhash::fast::FixedState>,
}

/// Most (client, queue) pull positions kept; past it they start over (a
/// gauge's reading, not state anything depends on).
const MAX_PULLED: usize = 100_000;

/// Request codes with a latency histogram (codes past it share the last).
const RPC_CODES: usize = 64;

impl Default for Metrics {
    fn default() -> Self {
        Self {
            stored: DashMap::new(),
            delivered: DashMap::new(),
            message_size: Histogram::new(histogram::MESSAGE_BYTES),
            dead_lettered: DashMap::new(),
            long_polls: AtomicI64::new(0),
            connections: AtomicI64::new(0),
            producer_connections: AtomicI64::new(0),
            writer_connections: AtomicI64::new(0),
            timers_enqueued: AtomicU64::new(0),
            timers_dequeued: AtomicU64::new(0),
            pulled: DashMap::default(),
            rpc: (0..RPC_CODES)
                .map(|_| [Histogram::new(histogram::RPC_MS), Histogram::new(histogram::RPC_MS)])
                .collect(),
        }
    }
}

fn pull_key(client: &str, topic: &str, queue: u32) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::default().hash_one((client, topic, queue))
}

fn counts(map: &DashMap<String, Arc<TopicCounts>>, topic: &str) -> Arc<TopicCounts> {
    if let Some(c) = map.get(topic) {
        return c.clone();
    }
    map.entry(topic.to_string()).or_default().clone()
}

fn read(map: &DashMap<String, Arc<TopicCounts>>) -> Vec<(String, Arc<TopicCounts>)> {
    let mut all: Vec<_> = map.iter().map(|e| (e.key().clone(), e.value().clone())).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

impl Metrics {
    /// The counts of messages stored in `topic`.
    pub fn stored(&self, topic: &str) -> Arc<TopicCounts> {
        counts(&self.stored, topic)
    }

    /// The counts of messages of `topic` delivered.
    pub fn delivered(&self, topic: &str) -> Arc<TopicCounts> {
        counts(&self.delivered, topic)
    }

    /// A message of `topic` was dead-lettered for `group`.
    pub fn dead_lettered(&self, group: &str, topic: &str) {
        *self.dead_lettered.entry((group.to_string(), topic.to_string())).or_default() += 1;
    }

    /// A request with wire code `code` was answered after `ms`, or refused.
    pub fn rpc(&self, code: u32, ok: bool, ms: u64) {
        let slot = (code as usize).min(RPC_CODES - 1);
        self.rpc[slot][usize::from(!ok)].observe(ms);
    }

    /// Request latencies seen: (code, answered, histogram).
    pub fn all_rpc(&self) -> impl Iterator<Item = (u32, bool, &Histogram)> {
        self.rpc.iter().enumerate().flat_map(|(code, pair)| {
            pair.iter().enumerate().filter(|(_, h)| h.snapshot().1 > 0).map(move |(i, h)| (code as u32, i == 0, h))
        })
    }

    /// `client` pulled `topic`/`queue` up to `next_offset`.
    pub fn pulled(&self, client: &str, topic: &str, queue: u32, next_offset: u64) {
        if self.pulled.len() >= MAX_PULLED {
            self.pulled.clear();
        }
        self.pulled.insert(pull_key(client, topic, queue), next_offset);
    }

    /// How far `client` has pulled `topic`/`queue`, if it has.
    pub fn pulled_to(&self, client: &str, topic: &str, queue: u32) -> Option<u64> {
        self.pulled.get(&pull_key(client, topic, queue)).map(|n| *n)
    }

    /// Every topic's stored counts, by name.
    pub fn all_stored(&self) -> Vec<(String, Arc<TopicCounts>)> {
        read(&self.stored)
    }

    /// Every topic's delivered counts, by name.
    pub fn all_delivered(&self) -> Vec<(String, Arc<TopicCounts>)> {
        read(&self.delivered)
    }

    /// Dead letters by (group, topic).
    pub fn all_dead_lettered(&self) -> Vec<((String, String), u64)> {
        let mut all: Vec<_> = self.dead_lettered.iter().map(|e| (e.key().clone(), *e.value())).collect();
        all.sort();
        all
    }
}

/// One unit of a gauge (open connections, waiting pulls), held while this
/// lives.
pub struct Held {
    metrics: Arc<Metrics>,
    gauge: fn(&Metrics) -> &AtomicI64,
}

impl Held {
    /// Adds one to `gauge` of `metrics` until dropped.
    pub fn new(metrics: &Arc<Metrics>, gauge: fn(&Metrics) -> &AtomicI64) -> Self {
        gauge(metrics).fetch_add(1, Ordering::Relaxed);
        Held { metrics: metrics.clone(), gauge }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        (self.gauge)(&self.metrics).fetch_sub(1, Ordering::Relaxed);
    }
}
