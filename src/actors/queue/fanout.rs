//! The Fanout: carries the records of many queues to the queues' thread in
//! one mailbox push, has each queue assign its records' offsets there, and
//! hands them all to the writer as one append.
//!
//! A connection that read sends for many queues at once (thousands of
//! queues, one request each) used to push to every queue actor from its own
//! thread, each push a cross-thread wake-up and a mailbox message. Through
//! the fanout, the batch crosses once and no queue mailbox is involved.
//! Everything a connection stores goes this way, so its sends to one queue
//! keep their order.

use crate::actors::queue::append::{self, Placed, Written};
use crate::actors::queue::barrier::{self, ActiveQueues, Barrier, Barriered};
use crate::actors::queue::idempotence::{self, Admission, PartProducer};
use crate::actors::queue::spec::QueueSpec;
use crate::actors::writer::Append;
use crate::error::{Error, Result};
use crate::store::commitlog::{AppendBatch, RecordPos};
use crate::store::consume_queue::TailWrite;
use crate::store::producers::ProducerTable;
use actix::prelude::*;
use std::ops::Range;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Records for one or more queues, back to back in one buffer: a
/// connection's gathered sends, or messages the broker writes itself. Each
/// part is a run of records bound for one queue. One buffer, one list of
/// hashes and one answer however many queues the records go to: with a
/// queue per request, a buffer, hash lists and a reply channel per queue
/// (most allocated on one thread and freed on the other) cost more than
/// storing the records.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Produce {
    /// Every part's records, in part order (queue offsets are patched in
    /// on the queues' thread).
    pub batch: AppendBatch,
    /// Tag hash of each record.
    pub tag_hashes: Vec<u64>,
    /// Key hashes for the key index, each with the index of its record in
    /// `batch`, in record order (empty: no keys).
    pub key_hashes: Vec<(u32, u64)>,
    /// The runs of records and their queues.
    pub parts: Vec<Part>,
    /// Where the answer goes.
    pub reply: PlacementsTo,
}

/// Where a [`Produce`]'s answer goes: a channel someone awaits, or a call
/// made with it on the thread that has it (the writer's, most often), which
/// saves the awaiting task's wake-up where that matters (a lone send whose
/// answer is written from there).
pub enum PlacementsTo {
    /// Sent down a channel.
    Channel(oneshot::Sender<Placements>),
    /// Called with it; dropped uncalled (the queues' thread stopping), called
    /// with [`Placements::shutting_down`].
    Call(PlacementsCall),
}

impl PlacementsTo {
    /// Delivers the answer.
    pub fn send(self, placements: Placements) {
        match self {
            PlacementsTo::Channel(tx) => {
                let _ = tx.send(placements);
            }
            PlacementsTo::Call(mut call) => {
                if let Some(f) = call.f.take() {
                    f(placements);
                }
            }
        }
    }
}

/// A call to make with a produce's answer, made exactly once: with the
/// answer, or, dropped without one, with [`Placements::shutting_down`].
pub struct PlacementsCall {
    f: Option<Box<dyn FnOnce(Placements) + Send>>,
    parts: usize,
}

impl PlacementsCall {
    /// `f`, for a produce of `parts` parts.
    pub fn new(parts: usize, f: impl FnOnce(Placements) + Send + 'static) -> Self {
        Self { f: Some(Box::new(f)), parts }
    }
}

impl Drop for PlacementsCall {
    fn drop(&mut self) {
        if let Some(f) = self.f.take() {
            f(Placements::shutting_down(self.parts));
        }
    }
}

/// A run of a [`Produce`]'s records bound for one queue.
pub struct Part {
    /// The queue.
    pub spec: Arc<QueueSpec>,
    /// How many records.
    pub records: usize,
    /// The idempotent producer whose send this is, if any: a part is one
    /// such send, judged by its sequence before it is admitted.
    pub producer: Option<PartProducer>,
}

/// Where a [`Produce`]'s records ended up.
#[derive(Debug, Default)]
pub struct Placements {
    /// The records of every part stored, in order.
    pub stored: Vec<Placed>,
    /// Each part's records within `stored`, or why they were not stored.
    pub outcomes: Vec<Result<Range<usize>>>,
}

impl Placements {
    /// The answer when the queues' thread went away without one.
    pub fn shutting_down(parts: usize) -> Self {
        Self { stored: Vec::new(), outcomes: (0..parts).map(|_| Err(Error::ShuttingDown)).collect() }
    }

    /// The first part's records (for a produce of one part).
    pub fn into_first(self) -> Result<Vec<Placed>> {
        let Self { mut stored, outcomes } = self;
        match outcomes.into_iter().next() {
            Some(Ok(range)) => {
                stored.truncate(range.end);
                stored.drain(..range.start);
                Ok(stored)
            }
            Some(Err(e)) => Err(e),
            None => Err(Error::ShuttingDown),
        }
    }
}

/// Visit queues with a checkpoint's barrier: every queue (`all`) or the
/// active ones. Sent after the writer answered the checkpoint's `Sync`, and
/// behind every append sent before it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BarrierQueues {
    /// The barrier (its round collects the answers).
    pub barrier: Barrier,
    /// Every queue, not just the active ones.
    pub all: bool,
}

/// The outcome of a checkpoint, for the queues: their tail writes, and the
/// producer-state snapshot it wrote.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TailsWritten {
    /// The writes, by queue state id.
    pub tails: Vec<(u64, TailWrite)>,
    /// The change of the producer table the checkpoint's snapshot holds.
    pub producers: Option<u64>,
    /// Whether they (and the checkpoint's syncs) succeeded.
    pub ok: bool,
}

/// Makes the producer table recovery built the one the queues admit sends
/// against (sent before any produce).
#[derive(Message)]
#[rtype(result = "()")]
pub struct InstallProducers(pub ProducerTable);

/// Lives on the queues' thread.
pub struct Fanout {
    /// Queues that took appends since their last barrier.
    pub active: Arc<ActiveQueues>,
    /// The writer's counters: a produce taken in here is no longer on its
    /// way (the writer syncs a lone group itself when nothing is).
    pub writer_stats: Arc<crate::actors::writer::WriterStats>,
}

impl Actor for Fanout {
    type Context = Context<Self>;
}

impl Handler<InstallProducers> for Fanout {
    type Result = ();

    fn handle(&mut self, InstallProducers(table): InstallProducers, _: &mut Context<Self>) {
        idempotence::install(table);
    }
}

impl Handler<Produce> for Fanout {
    type Result = ();

    fn handle(&mut self, produce: Produce, _: &mut Context<Self>) {
        self.writer_stats.arriving.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        produce_here(produce);
    }
}

impl Handler<BarrierQueues> for Fanout {
    type Result = ();

    fn handle(&mut self, BarrierQueues { barrier, all }: BarrierQueues, _: &mut Context<Self>) {
        // The table holds every send the writer answered before this
        // barrier: what the checkpoint's log position covers.
        let producers = idempotence::snapshot(crate::clock::now_ms());
        barrier.round.answer(Ok(Barriered { producers, ..Barriered::default() }));
        barrier::barrier_here(barrier, all, &self.active);
    }
}

impl Handler<TailsWritten> for Fanout {
    type Result = ();

    fn handle(&mut self, TailsWritten { tails, producers, ok }: TailsWritten, _: &mut Context<Self>) {
        if let Some(generation) = producers.filter(|_| ok) {
            idempotence::saved(generation);
        }
        barrier::tails_written_here(tails, ok);
    }
}

/// Admits every part into its queue (offsets are assigned now, in part
/// order) and hands the admitted records to the writer, whose answer is
/// shared out to the queues on this thread. Runs on the queues' thread. A
/// part whose queue refuses (failed, deleted, its actor stopped) or whose
/// sequence is refused is answered with why, and a repeated one with its
/// original placements; their records are left out of the write.
pub fn produce_here(produce: Produce) {
    let Produce { mut batch, tag_hashes, key_hashes, parts, reply } = produce;
    let now = if parts.iter().any(|p| p.producer.is_some()) { crate::clock::now_ms() } else { 0 };
    let mut admitted = Vec::with_capacity(parts.len());
    for (part, records) in parts.iter().zip(record_ranges(&parts)) {
        let outcome = idempotence::admit_part(part, now);
        if let Admission::Store { first_offset, fresh, .. } = outcome {
            for (i, offset) in records.skip(part.records - fresh).zip(first_offset..) {
                let (start, end) = batch.bounds(i);
                if let Some(rec) = batch.buf.get_mut(start..end) {
                    crate::store::record::patch_queue_offset(rec, offset);
                }
            }
        }
        admitted.push(outcome);
    }
    let Some(writer) =
        parts.iter().zip(&admitted).find(|(_, a)| a.fresh() > 0).map(|(p, _)| p.spec.links.writer.clone())
    else {
        // Nothing to write: every part refused or repeated.
        Shares { parts, admitted, tag_hashes, key_hashes, reply }.answer(Ok(Vec::new()));
        return;
    };
    if parts.iter().zip(&admitted).any(|(p, a)| a.fresh() != p.records) {
        batch = admitted_only(&batch, &parts, &admitted);
    }
    let shares = Shares { parts, admitted, tag_hashes, key_hashes, reply };
    writer.do_send(Append { batches: vec![batch], done: Box::new(move |result| shares.answer(result)) });
}

/// Each part's records: their indexes in the produce's batch.
fn record_ranges(parts: &[Part]) -> impl Iterator<Item = Range<usize>> + '_ {
    parts.iter().scan(0, |next, part| {
        let first = *next;
        *next += part.records;
        Some(first..*next)
    })
}

/// The records to write, copied out of `batch` (the rare case of a part
/// refused or repeating records stored before): each part's fresh ones.
fn admitted_only(batch: &AppendBatch, parts: &[Part], admitted: &[Admission]) -> AppendBatch {
    let mut kept = AppendBatch::default();
    for ((part, records), outcome) in parts.iter().zip(record_ranges(parts)).zip(admitted) {
        for i in records.skip(part.records - outcome.fresh()) {
            let (start, end) = batch.bounds(i);
            kept.starts.push(kept.buf.len());
            kept.buf.extend_from_slice(batch.buf.get(start..end).unwrap_or(&[]));
        }
    }
    kept
}

/// What the writer's answer is shared out with.
struct Shares {
    parts: Vec<Part>,
    /// What admission made of each part.
    admitted: Vec<Admission>,
    tag_hashes: Vec<u64>,
    key_hashes: Vec<(u32, u64)>,
    reply: PlacementsTo,
}

impl Shares {
    /// Gives each admitted part its share of the written positions, in
    /// order, and answers once for all. The keys of every share reach the
    /// indexer's buffer in one push: with many queues, a lock per share was
    /// ~1.4 % of the broker's CPU.
    fn answer(self, result: Result<Vec<RecordPos>>) {
        let Self { parts, admitted, tag_hashes, key_hashes, reply } = self;
        // Every share of a failed write fails the same way: a full disk
        // (nothing stored, retriable) or a poisoned writer.
        let failure = result.as_ref().err().map(|e| match e {
            Error::DiskFull { since_ms } => Err(*since_ms),
            Error::Poisoned(reason) => Ok(reason.clone()),
            other => Ok(other.to_string()),
        });
        let positions = result.unwrap_or_default();
        let mut rest = &positions[..];
        let mut stored = Vec::with_capacity(positions.len());
        let mut outcomes = Vec::with_capacity(parts.len());
        let mut keys = Vec::new();
        let mut key = 0;
        for ((part, records), outcome) in parts.iter().zip(record_ranges(&parts)).zip(admitted) {
            let key_start = key;
            while key_hashes.get(key).is_some_and(|&(index, _)| (index as usize) < records.end) {
                key += 1;
            }
            let (repeated, fresh, first_offset) = match (outcome, &failure) {
                (Admission::Refused(e), _) => {
                    outcomes.push(Err(e));
                    continue;
                }
                (Admission::Store { repeated, fresh: 0, .. }, _) => {
                    let start = stored.len();
                    stored.extend(repeated);
                    outcomes.push(Ok(start..stored.len()));
                    continue;
                }
                // A failed write fails every share, and nothing after it is
                // stored until the writer takes writes again (space freed)
                // or ever (poisoned), so no offset gap can become visible.
                (Admission::Store { repeated, fresh, first_offset }, Some(failure)) => {
                    idempotence::finished(part, repeated.len(), false);
                    append::refused(&part.spec, first_offset, fresh);
                    outcomes.push(Err(match failure {
                        Err(since_ms) => Error::DiskFull { since_ms: *since_ms },
                        Ok(reason) => Error::Poisoned(reason.clone()),
                    }));
                    continue;
                }
                (Admission::Store { repeated, fresh, first_offset }, None) => (repeated, fresh, first_offset),
            };
            let (own, after) = rest.split_at(fresh.min(rest.len()));
            rest = after;
            let written_from = records.start + repeated.len();
            let written = Written {
                first_offset,
                positions: own,
                tag_hashes: tag_hashes.get(written_from..records.end).unwrap_or(&[]),
                key_hashes: key_hashes.get(key_start..key).unwrap_or(&[]),
                first_record: written_from,
            };
            let appended = append::written(&part.spec, written, &mut keys);
            idempotence::finished(part, repeated.len(), appended.is_ok());
            outcomes.push(appended.map(|()| {
                let start = stored.len();
                stored.extend(repeated);
                stored.extend(own.iter().enumerate().map(|(i, &pos)| Placed {
                    queue_offset: first_offset + i as u64,
                    pos,
                    due: None,
                }));
                start..stored.len()
            }));
        }
        // Pushed before this thread handles anything else, so before any
        // later barrier: a checkpoint's index flush still covers every key
        // below it.
        if let Some(buffer) = parts.first().and_then(|part| part.spec.links.keys.as_ref()).filter(|_| !keys.is_empty())
        {
            buffer.push(keys);
        }
        reply.send(Placements { stored, outcomes });
    }
}
