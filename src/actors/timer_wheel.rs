//! The TimerWheelActor: exact-time delivery for any number of pending
//! messages. Two levels: on disk, one bucket per minute (src/store/timer.rs;
//! `store.timer_bucket_ms`) filled as messages arrive in the timer topic; in
//! memory, a heap of the buckets about to fire, ordered by due time to the
//! millisecond. A bucket is loaded a moment before its span starts and
//! deleted once everything in it has fired, so memory holds about two
//! buckets of timers.
//!
//! Durable state (the progress file): how far the timer topic has been
//! bucketed (`ingested`) and the watermark — the `(due, log offset)` of the
//! last delivered timer; timers fire in that order, so everything at or
//! below it was delivered. A timer that arrives already past the watermark's
//! time fires at once (it is bucketed at the watermark's time). After a
//! restart the buckets are reloaded, the watermark filters what was
//! delivered, and the topic is re-bucketed from `ingested` (duplicates are
//! dropped), so only the batch in flight at a crash can fire twice.

use crate::actors::appender::Appender;
use crate::actors::queue_registry::QueueRegistry;
use crate::actors::scheduler::pull_entries;
use crate::error::Error;
use crate::store::consume_queue::CqEntry;
use crate::store::progress::ProgressFile;
use crate::store::timer::{Buckets, TimerEntry};
use actix::prelude::*;
use brook_proto::system::TIMER_TOPIC;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Most timers ingested or fired in one step.
const STEP: usize = 1024;
/// How early a bucket is loaded (at most half its width).
const LOOKAHEAD_MS: i64 = 2_000;
/// Longest the actor parks waiting for new timers.
const IDLE_POLL_MS: i64 = 1_000;
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The wheel.
pub struct TimerWheelActor {
    wheel: Option<Wheel>,
}

impl TimerWheelActor {
    /// A wheel over `buckets`, resuming from `progress` (its stored values).
    pub fn new(
        registry: Arc<QueueRegistry>,
        appender: Appender,
        buckets: Arc<Buckets>,
        progress: (Arc<ProgressFile>, [u64; crate::store::progress::MAX_VALUES]),
        metrics: Arc<crate::metrics::Metrics>,
        logger: slog::Logger,
    ) -> Self {
        let (file, values) = progress;
        let wheel = Wheel {
            registry,
            appender,
            buckets,
            progress: file,
            ingested: values[0],
            watermark: (values[1] as i64, values[2]),
            loaded_until: i64::MIN,
            pending: BTreeSet::new(),
            loaded: BTreeMap::new(),
            heap: BinaryHeap::new(),
            in_heap: HashSet::new(),
            metrics,
            logger: logger.new(slog::o!("actor" => "timer_wheel")),
        };
        Self { wheel: Some(wheel) }
    }

    /// A slave's wheel: it delivers nothing (its master does).
    #[must_use]
    pub fn standby(mut self) -> Self {
        self.wheel = None;
        self
    }
}

impl Actor for TimerWheelActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(wheel) = self.wheel.take() {
            ctx.spawn(actix::fut::wrap_future(wheel.run()));
        }
    }
}

struct Wheel {
    registry: Arc<QueueRegistry>,
    appender: Appender,
    buckets: Arc<Buckets>,
    progress: Arc<ProgressFile>,
    ingested: u64,
    watermark: (i64, u64),
    /// Every bucket starting below this time is in the heap.
    loaded_until: i64,
    /// Buckets on disk not loaded yet.
    pending: BTreeSet<i64>,
    /// Timers taken in and delivered (`rocketmq_timer_*`).
    metrics: Arc<crate::metrics::Metrics>,
    /// Loaded buckets, each with the largest `(due, log offset)` it holds:
    /// it is deleted once the watermark passes that.
    loaded: BTreeMap<i64, (i64, u64)>,
    heap: BinaryHeap<Reverse<TimerEntry>>,
    in_heap: HashSet<u64>,
    logger: slog::Logger,
}

impl Wheel {
    fn delivered(&self, e: &TimerEntry) -> bool {
        (e.due, e.log_offset) <= self.watermark
    }

    fn push(&mut self, e: TimerEntry) {
        if !self.delivered(&e) && self.in_heap.insert(e.log_offset) {
            self.heap.push(Reverse(e));
        }
    }

    fn load(&mut self, bucket: i64) {
        match self.buckets.load(bucket) {
            Ok(entries) => {
                for e in entries {
                    self.note_loaded(&e);
                    self.push(e);
                }
            }
            Err(e) => slog::error!(self.logger, "cannot load timer bucket"; "bucket" => bucket, "error" => %e),
        }
    }

    fn note_loaded(&mut self, e: &TimerEntry) {
        let top = self.loaded.entry(self.buckets.start_of(e.due)).or_insert((i64::MIN, 0));
        *top = (*top).max((e.due, e.log_offset));
    }

    fn lookahead(&self) -> i64 {
        LOOKAHEAD_MS.min(self.buckets.width() / 2)
    }

    /// Loads every bucket that starts within the lookahead (all overdue ones
    /// at the first call).
    fn load_ahead(&mut self, now: i64) {
        if self.loaded_until == i64::MIN {
            match self.buckets.list() {
                Ok(on_disk) => self.pending.extend(on_disk),
                Err(e) => slog::error!(self.logger, "cannot list timer buckets"; "error" => %e),
            }
        }
        let target = self.buckets.start_of(now + self.lookahead()) + self.buckets.width();
        let ready: Vec<i64> = self.pending.range(..target).copied().collect();
        for bucket in ready {
            self.pending.remove(&bucket);
            self.load(bucket);
        }
        self.loaded_until = self.loaded_until.max(target);
    }

    fn save(&self) {
        let values = [self.ingested, self.watermark.0 as u64, self.watermark.1];
        if let Err(e) = self.progress.store(&values) {
            slog::error!(self.logger, "cannot record timer progress"; "error" => %e);
        }
    }

    async fn fire(&mut self, now: i64) -> bool {
        let mut due = Vec::new();
        while due.len() < STEP {
            match self.heap.peek() {
                Some(Reverse(e)) if e.due <= now => {}
                _ => break,
            }
            if let Some(Reverse(e)) = self.heap.pop() {
                due.push(e);
            }
        }
        let Some(last) = due.last().copied() else { return false };
        let entries: Vec<CqEntry> =
            due.iter().map(|e| CqEntry { log_offset: e.log_offset, size: e.size, tag_hash: e.due as u64 }).collect();
        if let Err(e) = self.appender.deliver(&entries).await {
            slog::warn!(self.logger, "timer delivery failed; will retry"; "error" => %e);
            due.into_iter().for_each(|e| self.heap.push(Reverse(e)));
            tokio::time::sleep(RETRY_PAUSE).await;
            return true;
        }
        for e in &due {
            self.in_heap.remove(&e.log_offset);
        }
        self.metrics.timers_dequeued.fetch_add(due.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.watermark = (last.due, last.log_offset);
        self.save();
        let fired: Vec<i64> =
            self.loaded.iter().filter(|(_, top)| **top <= self.watermark).map(|(bucket, _)| *bucket).collect();
        for bucket in fired {
            self.loaded.remove(&bucket);
            if let Err(e) = self.buckets.remove(bucket) {
                slog::warn!(self.logger, "cannot delete fired bucket"; "bucket" => bucket, "error" => %e);
            }
        }
        true
    }

    async fn ingest(&mut self, wait_ms: i64) {
        let wait = Duration::from_millis(wait_ms.clamp(0, IDLE_POLL_MS) as u64);
        let found = match pull_entries(&self.registry, TIMER_TOPIC, 0, self.ingested, STEP as u32, wait).await {
            Ok(found) => found,
            Err(Error::BelowRetained { min, .. }) => {
                slog::error!(self.logger, "timers deleted by retention before they were bucketed";
                    "from" => self.ingested, "to" => min);
                self.ingested = min;
                return;
            }
            Err(Error::ShuttingDown) => {
                // The queues stopped with the broker; nothing to ingest, and
                // nothing worth a warning.
                tokio::time::sleep(RETRY_PAUSE).await;
                return;
            }
            Err(e) => {
                slog::warn!(self.logger, "timer pull failed"; "error" => %e);
                tokio::time::sleep(RETRY_PAUSE).await;
                return;
            }
        };
        if found.entries.is_empty() {
            return;
        }
        // Already past the watermark's time: due at once, bucketed where
        // the wheel is, so the watermark never hides an undelivered timer.
        let floor = self.watermark.0;
        let entries: Vec<TimerEntry> = found
            .entries
            .iter()
            .map(|(_, e)| TimerEntry { due: (e.tag_hash as i64).max(floor), log_offset: e.log_offset, size: e.size })
            .collect();
        let buckets = self.buckets.clone();
        let appended = {
            let entries = entries.clone();
            tokio::task::spawn_blocking(move || buckets.append(&entries)).await
        };
        match appended {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                slog::error!(self.logger, "cannot write timer bucket"; "error" => %e);
                tokio::time::sleep(RETRY_PAUSE).await;
                return;
            }
            Err(e) => {
                slog::error!(self.logger, "timer bucket writer stopped"; "error" => %e);
                return;
            }
        }
        for e in entries {
            if e.due < self.loaded_until {
                self.note_loaded(&e);
                self.push(e);
            } else {
                self.pending.insert(self.buckets.start_of(e.due));
            }
        }
        self.metrics.timers_enqueued.fetch_add(found.entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.ingested = found.next_offset;
        self.save();
    }

    async fn run(mut self) {
        slog::info!(self.logger, "timer wheel starting";
            "ingested" => self.ingested, "watermark_ms" => self.watermark.0);
        loop {
            let now = crate::clock::now_ms();
            self.load_ahead(now);
            if self.fire(now).await {
                continue;
            }
            let next_due = self.heap.peek().map_or(i64::MAX, |Reverse(e)| e.due);
            let next_load = self.loaded_until - self.lookahead();
            self.ingest(next_due.min(next_load).saturating_sub(now)).await;
        }
    }
}
