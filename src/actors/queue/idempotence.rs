//! Idempotent sends at admission: before a part of a produce is given
//! offsets, the producer table (on this thread, beside the queue states)
//! says whether its sequence is new, a repeat — answered with the original
//! placements, read back from the store queue's consume queue — or refused
//! (a gap, a fenced epoch, a full table). Checking and admitting happen in
//! one step on this one thread, so a sequence is never stored twice.

use crate::actors::queue::append::{self, Placed};
use crate::actors::queue::fanout::Part;
use crate::actors::queue::slots::state_for;
use crate::error::{Error, Result};
use crate::store::commitlog::RecordPos;
use crate::store::producers::{topic_hash, LaneRef, ProducerTable, Verdict};
use brook_proto::system::{SCHEDULE_TOPIC, TIMER_TOPIC};
use brook_proto::ProducerSeq;
use std::cell::RefCell;
use std::sync::atomic::Ordering;

thread_local! {
    /// The producer table of the queues on this thread (installed by the
    /// fanout when it starts; empty on any other thread).
    static PRODUCERS: RefCell<ProducerTable> = RefCell::new(ProducerTable::default());
}

/// Makes `table` the one this thread's queues admit sends against.
pub(crate) fn install(table: ProducerTable) {
    PRODUCERS.with(|producers| *producers.borrow_mut() = table);
}

/// A snapshot of this thread's table for a checkpoint, if it changed since
/// the last one saved (see [`ProducerTable::snapshot`]).
pub(crate) fn snapshot(now_ms: i64) -> Option<(u64, Vec<u8>)> {
    PRODUCERS.with(|producers| producers.borrow_mut().snapshot(now_ms))
}

/// A checkpoint holding the snapshot of change `generation` is on disk.
pub(crate) fn saved(generation: u64) {
    PRODUCERS.with(|producers| producers.borrow_mut().saved(generation));
}

/// An idempotent part's producer: its sequence, and the lane it belongs to
/// when that is not the queue it is stored in (a delayed or transactional
/// message waits in a system queue but keeps the lane its send named).
#[derive(Debug, Clone)]
pub struct PartProducer {
    /// Producer id, epoch and the first record's sequence number.
    pub seq: ProducerSeq,
    /// The topic and queue the send named (with the topic's hash), if not
    /// the store queue's.
    pub lane: Option<(String, u32, u64)>,
}

impl PartProducer {
    /// A part of `seq`'s, naming its lane when it is not the store queue.
    pub fn new(seq: ProducerSeq, lane: Option<(String, u32)>) -> Self {
        let lane = lane.map(|(topic, queue)| {
            let hash = topic_hash(&topic);
            (topic, queue, hash)
        });
        Self { seq, lane }
    }

    fn lane<'a>(&'a self, part: &'a Part) -> LaneRef<'a> {
        let producer_id = self.seq.producer_id;
        match &self.lane {
            Some((topic, queue, topic_hash)) => LaneRef { producer_id, topic, queue: *queue, topic_hash: *topic_hash },
            None => LaneRef {
                producer_id,
                topic: &part.spec.topic,
                queue: part.spec.queue,
                topic_hash: part.spec.topic_hash,
            },
        }
    }
}

/// What admission made of a part.
pub(crate) enum Admission {
    /// Admitted: the part's last `fresh` records hold offsets from
    /// `first_offset` and are to be written; the records before them are
    /// repeats of an idempotent producer's, placed at `repeated` before.
    Store {
        /// Placements of the leading repeats (usually none).
        repeated: Vec<Placed>,
        /// How many records at the end are written.
        fresh: usize,
        /// Queue offset of the first of them.
        first_offset: u64,
    },
    /// Refused; nothing stored.
    Refused(Error),
}

impl Admission {
    /// How many of the part's records are written.
    pub(crate) fn fresh(&self) -> usize {
        match self {
            Admission::Store { fresh, .. } => *fresh,
            Admission::Refused(_) => 0,
        }
    }
}

/// Admits `part` into its queue, judging its sequence first if it has one.
pub(crate) fn admit_part(part: &Part, now_ms: i64) -> Admission {
    let Some(producer) = &part.producer else {
        return match append::admit(&part.spec, part.records) {
            Ok(first_offset) => Admission::Store { repeated: Vec::new(), fresh: part.records, first_offset },
            Err(e) => Admission::Refused(e),
        };
    };
    let count = u32::try_from(part.records).unwrap_or(u32::MAX);
    let lane = producer.lane(part);
    let store = part.spec.store_id;
    let verdict = PRODUCERS.with(|producers| producers.borrow_mut().check(lane, producer.seq, count, store, now_ms));
    let (repeated, fresh) = match verdict {
        Verdict::New => (Vec::new(), count),
        Verdict::Duplicate { placed, fresh } => match placements(part, &placed) {
            Ok(repeated) => (repeated, fresh),
            Err(e) => return Admission::Refused(e),
        },
        Verdict::Refused(e) => return Admission::Refused(e),
    };
    if fresh == 0 {
        return Admission::Store { repeated, fresh: 0, first_offset: 0 };
    }
    match append::admit(&part.spec, fresh as usize) {
        Ok(first_offset) => {
            let seq = ProducerSeq { sequence: producer.seq.sequence + (count - fresh), ..producer.seq };
            PRODUCERS.with(|producers| producers.borrow_mut().admitted(lane, seq, fresh, first_offset, store));
            Admission::Store { repeated, fresh: fresh as usize, first_offset }
        }
        Err(e) => Admission::Refused(e),
    }
}

/// The writer answered the fresh records of an admitted idempotent part
/// (after its `repeated` leading repeats): their run is confirmed, or taken
/// back so their sequences may be sent again.
pub(crate) fn finished(part: &Part, repeated: usize, written: bool) {
    if let Some(producer) = &part.producer {
        let lane = producer.lane(part);
        let offset = u32::try_from(repeated).unwrap_or(u32::MAX);
        let seq = ProducerSeq { sequence: producer.seq.sequence.saturating_add(offset), ..producer.seq };
        PRODUCERS.with(|producers| producers.borrow_mut().finished(lane, seq, written));
    }
}

/// Where a part's repeated records were stored: the `(offset, count)`
/// stretches of its queue the table names, read back from the consume
/// queue.
fn placements(part: &Part, placed: &[(u64, u32)]) -> Result<Vec<Placed>> {
    let spec = &part.spec;
    if spec.destroyed.load(Ordering::Acquire) || spec.stopped.load(Ordering::Acquire) {
        return Err(Error::ShuttingDown);
    }
    // Opened if this is the first the queue sees since the broker started
    // (its actor may not have run yet).
    let state = state_for(spec);
    let state = state.borrow();
    let cq = state.cq()?;
    // The delay queues' entries carry the due time in place of a tag hash.
    let delayed = matches!(&*spec.topic, SCHEDULE_TOPIC | TIMER_TOPIC);
    let mut out = Vec::new();
    for &(first_offset, count) in placed {
        let entries = cq
            .read(first_offset, count as usize)
            .map_err(|e| Error::io(format!("read consume queue {}", spec.name), e))?;
        if entries.len() != count as usize {
            // Retention took them: stored once, but their answer is gone.
            let sequence = part.producer.as_ref().map_or(0, |p| p.seq.sequence);
            return Err(Error::DuplicateSequence { sequence });
        }
        out.extend(entries.into_iter().zip(first_offset..).map(|(entry, queue_offset)| Placed {
            queue_offset,
            pos: RecordPos { log_offset: entry.log_offset, size: entry.size, store_ts: 0 },
            due: delayed.then_some(entry.tag_hash as i64),
        }));
    }
    Ok(out)
}

/// A slave's replicated record of an idempotent producer: its sequence
/// state advances as recovery's would (on the writer's thread).
pub(crate) fn apply_replicated(
    lane: crate::store::producers::LaneRef<'_>,
    seq: ProducerSeq,
    queue_offset: u64,
    store: u64,
    store_ts: i64,
) {
    PRODUCERS.with(|producers| producers.borrow_mut().apply(lane, seq, queue_offset, store, store_ts));
}
