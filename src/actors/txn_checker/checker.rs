//! The transaction checker's state and every operation on it: taking in
//! half messages, ending them (op records, the visible copy), checking back
//! with producers and giving up. The actor lends this state to one
//! operation at a time.

use crate::actors::appender::Appender;
use crate::actors::producer_registry::ProducerRegistry;
use crate::actors::queue::Pull;
use crate::actors::queue_registry::QueueRegistry;
use crate::actors::scheduler::pull_entries;
use crate::actors::txn_checker::TxnConfig;
use crate::delay::DelayPolicy;
use crate::error::{Error, Result};
use crate::filter::TagFilter;
use crate::store::consume_queue::CqEntry;
use crate::store::progress::ProgressFile;
use crate::store::record::{self, DecodedRecord};
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

/// With no producer of the group connected, how soon to look again.
const NO_PRODUCER_RETRY_MS: i64 = 1_000;
/// How long after a `commit` op record its copy is looked for.
pub(super) const COPY_SEARCH_MS: i64 = 30_000;
/// Recent outcomes remembered, to answer a repeated `EndTransaction`.
const REMEMBERED: usize = 100_000;

/// What an op record says about a half message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Op {
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
    pub(super) fn from_u8(b: u8) -> Option<Op> {
        [Op::Commit, Op::Done, Op::Rollback, Op::Expired, Op::Checked].into_iter().find(|op| *op as u8 == b)
    }
}

#[derive(Debug, Clone)]
pub(super) struct Half {
    pub(super) cq_offset: u64,
    pub(super) entry: CqEntry,
    pub(super) group: String,
    pub(super) client: String,
    pub(super) topic: String,
    pub(super) queue: u32,
    pub(super) stored_ts: i64,
    pub(super) checks: u32,
    pub(super) next_check: i64,
}

/// Counts, persisted with the progress.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counts {
    pub(super) committed: u64,
    pub(super) rolled_back: u64,
    pub(super) checked: u64,
    pub(super) expired: u64,
}

pub(super) struct Checker {
    pub(super) registry: Arc<QueueRegistry>,
    pub(super) appender: Appender,
    pub(super) producers: Arc<ProducerRegistry>,
    pub(super) progress: Arc<ProgressFile>,
    pub(super) advertised: Arc<OnceLock<SocketAddr>>,
    pub(super) config: TxnConfig,
    /// By log offset.
    pub(super) pending: BTreeMap<u64, Half>,
    /// Next half-queue offset to take in.
    pub(super) half_next: u64,
    pub(super) counts: Counts,
    pub(super) recent: BTreeMap<u64, TxnOutcome>,
    pub(super) recent_order: VecDeque<u64>,
    pub(super) logger: slog::Logger,
}

/// An op record's body.
pub(super) fn op_body(half: u64, op: Op) -> Vec<u8> {
    let mut body = half.to_le_bytes().to_vec();
    body.push(op as u8);
    body
}

pub(super) fn parse_op(body: &[u8]) -> Option<(u64, Op)> {
    let half = u64::from_le_bytes(body.get(..8)?.try_into().ok()?);
    Some((half, Op::from_u8(*body.get(8)?)?))
}

/// The first offset of `topic`/`queue` whose entry is at or after
/// `log_offset` in the log (entries are in log order: a binary search).
pub(super) async fn first_at_or_after(
    registry: &QueueRegistry,
    topic: &str,
    queue: u32,
    log_offset: u64,
) -> Result<u64> {
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
    pub(super) fn save(&self) {
        let low = self.pending.values().map(|h| h.cq_offset).min().unwrap_or(self.half_next);
        let c = self.counts;
        if let Err(e) = self.progress.store(&[low, c.committed, c.rolled_back, c.checked, c.expired]) {
            slog::error!(self.logger, "cannot record transaction progress"; "error" => %e);
        }
    }

    pub(super) fn remember(&mut self, half: u64, outcome: TxnOutcome) {
        self.recent.insert(half, outcome);
        self.recent_order.push_back(half);
        while self.recent_order.len() > REMEMBERED {
            if let Some(old) = self.recent_order.pop_front() {
                self.recent.remove(&old);
            }
        }
    }

    pub(super) fn half_from(&self, cq_offset: u64, entry: CqEntry, rec: &DecodedRecord) -> Half {
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

    /// Takes in half messages stored since the last look.
    pub(super) async fn ingest(&mut self) -> Result<()> {
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

    pub(super) async fn op(&self, half: u64, op: Op) -> Result<()> {
        let msg = Message::new(TRANS_OP_TOPIC, op_body(half, op));
        let code = record::tag_hash(None);
        self.appender.append(TRANS_OP_TOPIC, 0, vec![(msg, code)]).await.map(|_| ())
    }

    /// The half as its producer sent it, bound for `topic` (its real one
    /// unless given).
    pub(super) async fn visible_copy(&self, h: &Half) -> Result<Option<(String, u32, Message)>> {
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

    pub(super) async fn write_copy(&self, h: &Half) -> Result<()> {
        let Some((topic, queue, msg)) = self.visible_copy(h).await? else { return Ok(()) };
        let Some(queues) = self.appender.topics().get(&topic).map(|t| t.queues) else {
            slog::warn!(self.logger, "committed message's topic is gone, dropped"; "topic" => &topic);
            return Ok(());
        };
        let code = record::tag_hash(msg.tags.as_deref());
        self.appender.append(&topic, queue.min(queues.saturating_sub(1)), vec![(msg, code)]).await.map(|_| ())
    }

    pub(super) async fn finish(&mut self, half: u64, op: Op, outcome: TxnOutcome) -> Result<()> {
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

    pub(super) async fn end(&mut self, group: &str, half: u64, outcome: TxnOutcome) -> Result<()> {
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
    pub(super) async fn check_due(&mut self) {
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

    pub(super) fn msg_id(&self, log_offset: u64) -> String {
        let broker = self.advertised.get().copied().unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        MessageId { broker, log_offset }.to_hex()
    }

    pub(super) async fn ask(&mut self, h: &Half, now: i64) -> Result<()> {
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

    pub(super) async fn expire(&mut self, h: &Half) -> Result<()> {
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

    pub(super) fn report(&self) -> TxnReport {
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
