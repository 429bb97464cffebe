//! The TxnCheckerActor: the broker's half of transactional messages.
//!
//! A half message is stored in `RMQ_SYS_TRANS_HALF_TOPIC` (invisible, its
//! real topic and queue in properties). Its producer ends it with commit or
//! rollback; if no outcome arrives within its timeout, the checker asks a
//! live connection of the producer group — the sender's own if it is still
//! there — and asks again every `transaction_check_interval`, up to
//! `transaction_check_max` times, after which the message is parked in
//! `TRANS_CHECK_MAX_TIME_TOPIC` and never delivered.
//!
//! Every step is an op record in `RMQ_SYS_TRANS_OP_HALF_TOPIC` (body: the
//! half's log offset, then a kind byte). A commit writes `commit` *before*
//! the visible copy and `done` after it, so a crash between the two is
//! recognised at the next start: the copy (which carries the half's log
//! offset) is looked for right after the `commit` record and written only if
//! it is missing — committed messages are delivered exactly once whatever
//! moment brookd is killed at. The progress file holds the oldest
//! unresolved half, so a restart reads only halves from there and the op
//! records written since, not the whole log.
//!
//! The actor owns its state. Every operation on it (recovery, a tick, a
//! request) is asynchronous — it reads and writes the log — so the actor
//! lends the state to that operation's future and blocks its own context
//! until the future hands it back (`ctx.wait`, `AtomicResponse`): requests,
//! ticks and recovery run one at a time, in order, and nothing is answered
//! from a half-built table.

use crate::actors::appender::Appender;
use crate::actors::producer_registry::ProducerRegistry;
use crate::actors::queue::Pull;
use crate::actors::queue_registry::QueueRegistry;
use crate::actors::scheduler::{entries_from, pull_entries};
use crate::delay::DelayPolicy;
use crate::error::{Error, Result};
use crate::filter::TagFilter;
use crate::store::consume_queue::CqEntry;
use crate::store::progress::ProgressFile;
use crate::store::record::{self, DecodedRecord};
use actix::prelude::*;
use brook_proto::request::{PendingTxn, TxnOutcome, TxnReport};
use brook_proto::system::{
    PROP_ORIGIN_LOG_OFFSET, PROP_PRODUCER_CLIENT, PROP_PRODUCER_GROUP, PROP_TRANSACTION, PROP_TRANSACTION_CHECKS,
    PROP_TRANSACTION_TIMEOUT_MS, TRANS_CHECK_MAX_TOPIC, TRANS_HALF_TOPIC, TRANS_OP_TOPIC,
};
use brook_proto::{Frame, Message, MessageId, Request, StoredMessage};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How often pending halves are looked at.
const TICK: Duration = Duration::from_millis(100);
/// With no producer of the group connected, how soon to look again.
const NO_PRODUCER_RETRY_MS: i64 = 1_000;
/// How long after a `commit` op record its copy is looked for.
const COPY_SEARCH_MS: i64 = 30_000;
/// Recent outcomes remembered, to answer a repeated `EndTransaction`.
const REMEMBERED: usize = 100_000;

/// What an op record says about a half message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    /// Committing: the visible copy may or may not be written yet.
    Commit = 1,
    /// The visible copy is written.
    Done = 2,
    /// Rolled back.
    Rollback = 3,
    /// Given up after the maximum number of checks.
    Expired = 4,
    /// A check was asked.
    Checked = 5,
}

impl Op {
    fn from_u8(b: u8) -> Option<Op> {
        [Op::Commit, Op::Done, Op::Rollback, Op::Expired, Op::Checked].into_iter().find(|op| *op as u8 == b)
    }
}

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct TxnConfig {
    /// Wait for an outcome before the first check, ms.
    pub timeout_ms: u64,
    /// Between checks, ms.
    pub check_interval_ms: u64,
    /// Checks before giving up.
    pub check_max: u32,
}

/// A half message waiting for its outcome.
#[derive(Debug, Clone)]
struct Half {
    cq_offset: u64,
    entry: CqEntry,
    group: String,
    client: String,
    topic: String,
    queue: u32,
    stored_ts: i64,
    checks: u32,
    next_check: i64,
}

/// Counts, persisted with the progress.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    committed: u64,
    rolled_back: u64,
    checked: u64,
    expired: u64,
}

struct Checker {
    registry: Arc<QueueRegistry>,
    appender: Appender,
    producers: Arc<ProducerRegistry>,
    progress: Arc<ProgressFile>,
    advertised: Arc<OnceLock<SocketAddr>>,
    config: TxnConfig,
    /// By log offset.
    pending: BTreeMap<u64, Half>,
    /// Next half-queue offset to take in.
    half_next: u64,
    counts: Counts,
    recent: BTreeMap<u64, TxnOutcome>,
    recent_order: VecDeque<u64>,
    logger: slog::Logger,
}

/// End a half message (from its producer, or a check's answer).
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct End {
    /// Producer group.
    pub group: String,
    /// The half's log offset (from its id).
    pub log_offset: u64,
    /// The outcome.
    pub outcome: TxnOutcome,
}

/// Pending halves and counts.
#[derive(Message)]
#[rtype(result = "TxnReport")]
pub struct Report;

/// The checker.
pub struct TxnCheckerActor {
    /// The state; `None` only while an operation holds it, and the context
    /// handles nothing else until that operation gives it back.
    checker: Option<Checker>,
}

/// An operation's future: it owns the state and gives it back with its
/// outcome.
type Lent<R> = std::pin::Pin<Box<dyn std::future::Future<Output = (Checker, R)>>>;

impl TxnCheckerActor {
    /// A checker resuming from `progress` (its stored values).
    pub fn new(
        registry: Arc<QueueRegistry>,
        appender: Appender,
        producers: Arc<ProducerRegistry>,
        progress: (Arc<ProgressFile>, [u64; crate::store::progress::MAX_VALUES]),
        advertised: Arc<OnceLock<SocketAddr>>,
        config: TxnConfig,
        logger: &slog::Logger,
    ) -> Self {
        let (file, values) = progress;
        let checker = Checker {
            registry,
            appender,
            producers,
            progress: file,
            advertised,
            config,
            pending: BTreeMap::new(),
            half_next: values[0],
            counts: Counts { committed: values[1], rolled_back: values[2], checked: values[3], expired: values[4] },
            recent: BTreeMap::new(),
            recent_order: VecDeque::new(),
            logger: logger.new(slog::o!("actor" => "txn_checker")),
        };
        Self { checker: Some(checker) }
    }

    /// Lends the state to `op` and takes it back when `op` is done; the
    /// context handles nothing else meanwhile. The answer is `op`'s, or
    /// `Busy` in the one case the state is out (never, while the context
    /// waits).
    fn lend<R: 'static>(
        &mut self,
        op: impl FnOnce(Checker) -> Lent<R>,
        missing: impl FnOnce() -> R + 'static,
    ) -> AtomicResponse<Self, R> {
        let Some(checker) = self.checker.take() else {
            return AtomicResponse::new(Box::pin(actix::fut::ready(missing())));
        };
        AtomicResponse::new(Box::pin(op(checker).into_actor(self).map(|(checker, answer), act, _| {
            act.checker = Some(checker);
            answer
        })))
    }

    /// Runs `op` on the state with the context waiting for it (start-up
    /// recovery and ticks, which nobody awaits).
    fn wait_on(&mut self, ctx: &mut Context<Self>, op: impl FnOnce(Checker) -> Lent<()>) {
        if let Some(checker) = self.checker.take() {
            ctx.wait(op(checker).into_actor(self).map(|(checker, ()), act, _| act.checker = Some(checker)));
        }
    }
}

impl Actor for TxnCheckerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.wait_on(ctx, |mut checker| {
            Box::pin(async move {
                if let Err(e) = checker.recover().await {
                    slog::error!(checker.logger, "transaction recovery failed"; "error" => %e);
                }
                (checker, ())
            })
        });
        // A tick that runs long delays the next: the interval fires only
        // once the context stops waiting.
        ctx.run_interval(TICK, |act, ctx| {
            act.wait_on(ctx, |mut checker| {
                Box::pin(async move {
                    if let Err(e) = checker.ingest().await {
                        slog::warn!(checker.logger, "cannot read half messages"; "error" => %e);
                    }
                    checker.check_due().await;
                    (checker, ())
                })
            });
        });
    }
}

impl Handler<End> for TxnCheckerActor {
    type Result = AtomicResponse<Self, Result<()>>;

    fn handle(&mut self, msg: End, _: &mut Context<Self>) -> Self::Result {
        self.lend(
            |mut checker| {
                Box::pin(async move {
                    // The half may have been stored a moment ago: take it in first.
                    let ended = match checker.ingest().await {
                        Ok(()) => checker.end(&msg.group, msg.log_offset, msg.outcome).await,
                        Err(e) => Err(e),
                    };
                    (checker, ended)
                })
            },
            || Err(Error::Busy("transaction checker is busy".into())),
        )
    }
}

impl Handler<Report> for TxnCheckerActor {
    type Result = AtomicResponse<Self, TxnReport>;

    fn handle(&mut self, _: Report, _: &mut Context<Self>) -> Self::Result {
        self.lend(
            |mut checker| {
                Box::pin(async move {
                    if let Err(e) = checker.ingest().await {
                        slog::warn!(checker.logger, "cannot read half messages"; "error" => %e);
                    }
                    let report = checker.report();
                    (checker, report)
                })
            },
            TxnReport::default,
        )
    }
}

/// An op record's body.
fn op_body(half: u64, op: Op) -> Vec<u8> {
    let mut body = half.to_le_bytes().to_vec();
    body.push(op as u8);
    body
}

fn parse_op(body: &[u8]) -> Option<(u64, Op)> {
    let half = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    Some((half, Op::from_u8(*body.get(8)?)?))
}

/// The first offset of `topic`/`queue` whose entry is at or after
/// `log_offset` in the log (entries are in log order: a binary search).
async fn first_at_or_after(registry: &QueueRegistry, topic: &str, queue: u32, log_offset: u64) -> Result<u64> {
    let addr = registry.queue(topic, queue);
    let (mut lo, mut hi) = addr.send(crate::actors::queue::Range).await??;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let probe = Pull {
            offset: mid,
            max_messages: 1,
            max_bytes: u32::MAX,
            filter: Arc::new(TagFilter::All),
            long_poll: Duration::ZERO,
            cut_short: None,
        };
        let page = addr.send(probe).await??;
        match page.entries.first() {
            Some((_, e)) if e.log_offset < log_offset => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

impl Checker {
    fn save(&self) {
        let low = self.pending.values().map(|h| h.cq_offset).min().unwrap_or(self.half_next);
        let c = self.counts;
        if let Err(e) = self.progress.store(&[low, c.committed, c.rolled_back, c.checked, c.expired]) {
            slog::error!(self.logger, "cannot record transaction progress"; "error" => %e);
        }
    }

    fn remember(&mut self, half: u64, outcome: TxnOutcome) {
        self.recent.insert(half, outcome);
        self.recent_order.push_back(half);
        while self.recent_order.len() > REMEMBERED {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }

    fn half_from(&self, cq_offset: u64, entry: CqEntry, rec: &DecodedRecord) -> Half {
        let props = &rec.message.properties;
        let timeout_ms =
            props.get(PROP_TRANSACTION_TIMEOUT_MS).and_then(|t| t.parse().ok()).unwrap_or(self.config.timeout_ms);
        Half {
            cq_offset,
            entry,
            group: props.get(PROP_PRODUCER_GROUP).cloned().unwrap_or_default(),
            client: props.get(PROP_PRODUCER_CLIENT).cloned().unwrap_or_default(),
            topic: props.get(brook_proto::system::PROP_REAL_TOPIC).cloned().unwrap_or_default(),
            queue: props.get(brook_proto::system::PROP_REAL_QUEUE).and_then(|q| q.parse().ok()).unwrap_or(0),
            stored_ts: rec.head.store_ts,
            checks: 0,
            next_check: rec.head.store_ts.saturating_add(timeout_ms as i64),
        }
    }

    /// Rebuilds the pending table: halves from the oldest unresolved one,
    /// op records written since it, and any commit a crash interrupted.
    async fn recover(&mut self) -> Result<()> {
        let from = self.half_next;
        let (halves, next) = entries_from(&self.registry, TRANS_HALF_TOPIC, from).await?;
        self.half_next = next;
        let Some((_, first)) = halves.first() else {
            self.save();
            return Ok(());
        };
        let op_from = first_at_or_after(&self.registry, TRANS_OP_TOPIC, 0, first.log_offset).await?;
        let (ops, _) = entries_from(&self.registry, TRANS_OP_TOPIC, op_from).await?;
        let half_recs = self.appender.read(halves.iter().map(|(_, e)| (e.log_offset, Some(e.size))).collect()).await?;
        for ((cq_offset, entry), rec) in halves.iter().zip(half_recs) {
            match rec {
                Ok(rec) => {
                    let half = self.half_from(*cq_offset, *entry, &rec);
                    self.pending.insert(entry.log_offset, half);
                }
                Err(e) => {
                    slog::error!(self.logger, "half message unreadable, dropped"; "log_offset" => entry.log_offset, "error" => %e)
                }
            }
        }
        let op_recs = self.appender.read(ops.iter().map(|(_, e)| (e.log_offset, Some(e.size))).collect()).await?;
        // half → (log offset, store time) of a commit whose copy is unconfirmed.
        let mut interrupted: BTreeMap<u64, (u64, i64)> = BTreeMap::new();
        for ((_, entry), rec) in ops.iter().zip(op_recs) {
            let Ok(rec) = rec else { continue };
            let Some((half, op)) = parse_op(&rec.message.body) else { continue };
            let ts = rec.head.store_ts;
            match op {
                Op::Commit => {
                    interrupted.insert(half, (entry.log_offset, ts));
                }
                Op::Done | Op::Rollback | Op::Expired => {
                    interrupted.remove(&half);
                    self.pending.remove(&half);
                }
                Op::Checked => {
                    if let Some(h) = self.pending.get_mut(&half) {
                        h.checks += 1;
                        h.next_check = ts.saturating_add(self.config.check_interval_ms as i64);
                    }
                }
            }
        }
        for (half, (op_offset, op_ts)) in interrupted {
            let Some(h) = self.pending.get(&half).cloned() else { continue };
            if !self.copy_exists(&h, op_offset, op_ts).await? {
                self.write_copy(&h).await?;
            }
            self.finish(half, Op::Done, TxnOutcome::Commit).await?;
            slog::info!(self.logger, "interrupted commit completed"; "half" => half);
        }
        slog::info!(self.logger, "transactions recovered"; "pending" => self.pending.len(), "from" => from);
        self.save();
        Ok(())
    }

    /// Whether the visible copy of `h` was written after its `commit` op
    /// record (at `op_offset`, stored at `op_ts`).
    async fn copy_exists(&self, h: &Half, op_offset: u64, op_ts: i64) -> Result<bool> {
        let Some(queues) = self.appender.topics().get(&h.topic).map(|t| t.queues) else { return Ok(true) };
        let queue = h.queue.min(queues.saturating_sub(1));
        let mut offset = first_at_or_after(&self.registry, &h.topic, queue, op_offset).await?;
        loop {
            let page = pull_entries(&self.registry, &h.topic, queue, offset, 256, Duration::ZERO).await?;
            if page.entries.is_empty() {
                return Ok(false);
            }
            let recs =
                self.appender.read(page.entries.iter().map(|(_, e)| (e.log_offset, Some(e.size))).collect()).await?;
            for rec in recs.into_iter().flatten() {
                let origin = rec.message.properties.get(PROP_ORIGIN_LOG_OFFSET).and_then(|o| o.parse::<u64>().ok());
                if origin == Some(h.entry.log_offset) {
                    return Ok(true);
                }
                if rec.head.store_ts > op_ts + COPY_SEARCH_MS {
                    return Ok(false);
                }
            }
            offset = page.next_offset;
        }
    }

    /// Takes in half messages stored since the last look.
    async fn ingest(&mut self) -> Result<()> {
        loop {
            let page =
                match pull_entries(&self.registry, TRANS_HALF_TOPIC, 0, self.half_next, 256, Duration::ZERO).await {
                    Err(Error::BelowRetained { min, .. }) => {
                        self.half_next = min;
                        continue;
                    }
                    other => other?,
                };
            if page.entries.is_empty() {
                return Ok(());
            }
            let recs =
                self.appender.read(page.entries.iter().map(|(_, e)| (e.log_offset, Some(e.size))).collect()).await?;
            for ((cq_offset, entry), rec) in page.entries.iter().zip(recs) {
                if let Ok(rec) = rec {
                    let half = self.half_from(*cq_offset, *entry, &rec);
                    self.pending.insert(entry.log_offset, half);
                }
            }
            self.half_next = page.next_offset;
            self.save();
        }
    }

    async fn op(&self, half: u64, op: Op) -> Result<()> {
        let msg = Message::new(TRANS_OP_TOPIC, op_body(half, op));
        let code = record::tag_hash(None);
        self.appender.append(TRANS_OP_TOPIC, 0, vec![(msg, code)]).await.map(|_| ())
    }

    /// The half as its producer sent it, bound for `topic` (its real one
    /// unless given).
    async fn visible_copy(&self, h: &Half) -> Result<Option<(String, u32, Message)>> {
        let rec = self.appender.read(vec![(h.entry.log_offset, Some(h.entry.size))]).await?.pop();
        let mut msg = match rec {
            Some(Ok(rec)) => rec.message,
            Some(Err(e)) => return Err(e),
            None => return Ok(None),
        };
        for prop in [PROP_TRANSACTION, PROP_PRODUCER_CLIENT, PROP_TRANSACTION_TIMEOUT_MS] {
            msg.properties.remove(prop);
        }
        msg.properties.insert(PROP_ORIGIN_LOG_OFFSET.into(), h.entry.log_offset.to_string());
        let Some((topic, queue)) = DelayPolicy::unpark(&mut msg) else { return Ok(None) };
        Ok(Some((topic, queue, msg)))
    }

    async fn write_copy(&self, h: &Half) -> Result<()> {
        let Some((topic, queue, msg)) = self.visible_copy(h).await? else { return Ok(()) };
        let Some(queues) = self.appender.topics().get(&topic).map(|t| t.queues) else {
            slog::warn!(self.logger, "committed message's topic is gone, dropped"; "topic" => &topic);
            return Ok(());
        };
        let code = record::tag_hash(msg.tags.as_deref());
        self.appender.append(&topic, queue.min(queues.saturating_sub(1)), vec![(msg, code)]).await.map(|_| ())
    }

    async fn finish(&mut self, half: u64, op: Op, outcome: TxnOutcome) -> Result<()> {
        self.op(half, op).await?;
        self.pending.remove(&half);
        self.remember(half, outcome);
        match op {
            Op::Done => self.counts.committed += 1,
            Op::Rollback => self.counts.rolled_back += 1,
            Op::Expired => self.counts.expired += 1,
            Op::Commit | Op::Checked => {}
        }
        self.save();
        Ok(())
    }

    async fn end(&mut self, group: &str, half: u64, outcome: TxnOutcome) -> Result<()> {
        let Some(h) = self.pending.get(&half).cloned() else {
            return match self.recent.get(&half) {
                Some(done) if *done == outcome || outcome == TxnOutcome::Unknown => Ok(()),
                Some(done) => Err(Error::InvalidArgument(format!("transaction already ended with {done:?}"))),
                None => Err(Error::MessageNotFound(format!("no pending half message at log offset {half}"))),
            };
        };
        if h.group != group {
            return Err(Error::InvalidArgument(format!(
                "the half message belongs to producer group {:?}, not {group:?}",
                h.group
            )));
        }
        match outcome {
            TxnOutcome::Unknown => Ok(()),
            TxnOutcome::Rollback => self.finish(half, Op::Rollback, outcome).await,
            TxnOutcome::Commit => {
                self.op(half, Op::Commit).await?;
                crate::failpoint::stall("after_commit_op").await;
                self.write_copy(&h).await?;
                crate::failpoint::stall("after_commit_copy").await;
                self.finish(half, Op::Done, outcome).await
            }
        }
    }

    /// Asks about, or gives up on, every half whose time has come.
    async fn check_due(&mut self) {
        let now = crate::clock::now_ms();
        let due: Vec<u64> = self.pending.iter().filter(|(_, h)| h.next_check <= now).map(|(k, _)| *k).collect();
        for half in due {
            let Some(h) = self.pending.get(&half).cloned() else { continue };
            let result =
                if h.checks >= self.config.check_max { self.expire(&h).await } else { self.ask(&h, now).await };
            if let Err(e) = result {
                slog::warn!(self.logger, "transaction check failed"; "half" => half, "error" => %e);
                if let Some(h) = self.pending.get_mut(&half) {
                    h.next_check = now + NO_PRODUCER_RETRY_MS;
                }
            }
        }
    }

    fn msg_id(&self, log_offset: u64) -> String {
        let broker = self.advertised.get().copied().unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        MessageId { broker, log_offset }.to_hex()
    }

    async fn ask(&mut self, h: &Half, now: i64) -> Result<()> {
        let half = h.entry.log_offset;
        let Some(producer) = self.producers.pick(&h.group, &h.client) else {
            // Nobody to ask: wait for one, without counting a check.
            if let Some(p) = self.pending.get_mut(&half) {
                p.next_check = now + NO_PRODUCER_RETRY_MS.min(self.config.check_interval_ms as i64);
            }
            return Ok(());
        };
        let rec = self.appender.read(vec![(half, Some(h.entry.size))]).await?.pop();
        let Some(Ok(rec)) = rec else { return Err(Error::MessageNotFound(format!("half at {half}"))) };
        let broker = self.advertised.get().copied().unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let message: StoredMessage = rec.to_stored_message(broker, half, h.cq_offset);
        let body =
            Request::CheckTransaction { group: h.group.clone(), msg_id: self.msg_id(half), message: Box::new(message) };
        if producer.notify.try_send(Frame::Oneway { body }.into()).is_err() {
            if let Some(p) = self.pending.get_mut(&half) {
                p.next_check = now + NO_PRODUCER_RETRY_MS;
            }
            return Ok(());
        }
        self.op(half, Op::Checked).await?;
        self.counts.checked += 1;
        if let Some(p) = self.pending.get_mut(&half) {
            p.checks += 1;
            p.next_check = now + self.config.check_interval_ms as i64;
        }
        slog::info!(self.logger, "transaction check asked";
            "half" => half, "group" => &h.group, "client" => &producer.client_id, "checks" => h.checks + 1);
        self.save();
        Ok(())
    }

    async fn expire(&mut self, h: &Half) -> Result<()> {
        let half = h.entry.log_offset;
        if let Some((_, _, mut msg)) = self.visible_copy(h).await? {
            self.appender.ensure_topic(TRANS_CHECK_MAX_TOPIC)?;
            msg.properties.insert(PROP_TRANSACTION_CHECKS.into(), h.checks.to_string());
            msg.topic = TRANS_CHECK_MAX_TOPIC.to_string();
            let code = record::tag_hash(msg.tags.as_deref());
            self.appender.append(TRANS_CHECK_MAX_TOPIC, 0, vec![(msg, code)]).await?;
        }
        slog::warn!(self.logger, "transaction given up after the maximum checks; never delivered";
            "half" => half, "group" => &h.group, "checks" => h.checks);
        self.finish(half, Op::Expired, TxnOutcome::Rollback).await
    }

    fn report(&self) -> TxnReport {
        let now = crate::clock::now_ms();
        let mut pending: Vec<PendingTxn> = self
            .pending
            .values()
            .map(|h| PendingTxn {
                msg_id: self.msg_id(h.entry.log_offset),
                topic: h.topic.clone(),
                producer_group: h.group.clone(),
                age_ms: (now - h.stored_ts).max(0) as u64,
                checks: h.checks,
            })
            .collect();
        pending.sort_by_key(|p| std::cmp::Reverse(p.age_ms));
        let c = self.counts;
        TxnReport {
            pending,
            committed: c.committed,
            rolled_back: c.rolled_back,
            checked: c.checked,
            expired: c.expired,
        }
    }
}
