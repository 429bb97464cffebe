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
    /// Admitted at this first queue offset; to be written.
    New(u64),
    /// Stored before: answered with these placements, not written again.
    Duplicate(Vec<Placed>),
    /// Refused; nothing stored.
    Refused(Error),
}

impl Admission {
    pub(crate) fn is_new(&self) -> bool {
        matches!(self, Admission::New(_))
    }
}

/// Admits `part` into its queue, judging its sequence first if it has one.
pub(crate) fn admit_part(part: &Part, now_ms: i64) -> Admission {
    let Some(producer) = &part.producer else {
        return match append::admit(&part.spec, part.records) {
            Ok(first) => Admission::New(first),
            Err(e) => Admission::Refused(e),
        };
    };
    let count = u32::try_from(part.records).unwrap_or(u32::MAX);
    let lane = producer.lane(part);
    let verdict =
        PRODUCERS.with(|producers| producers.borrow_mut().check(lane, producer.seq, count, part.spec.store_id, now_ms));
    match verdict {
        Verdict::New => match append::admit(&part.spec, part.records) {
            Ok(first) => {
                PRODUCERS.with(|producers| {
                    producers.borrow_mut().admitted(lane, producer.seq, count, first, part.spec.store_id)
                });
                Admission::New(first)
            }
            Err(e) => Admission::Refused(e),
        },
        Verdict::Duplicate { first_offset } => match placements(part, first_offset) {
            Ok(placed) => Admission::Duplicate(placed),
            Err(e) => Admission::Refused(e),
        },
        Verdict::Refused(e) => Admission::Refused(e),
    }
}

/// The writer answered an admitted idempotent part: its run is confirmed,
/// or taken back so its sequences may be sent again.
pub(crate) fn finished(part: &Part, written: bool) {
    if let Some(producer) = &part.producer {
        let lane = producer.lane(part);
        PRODUCERS.with(|producers| producers.borrow_mut().finished(lane, producer.seq, written));
    }
}

/// Where a repeated part's records were stored: `part.records` entries of
/// its queue from `first_offset`.
fn placements(part: &Part, first_offset: u64) -> Result<Vec<Placed>> {
    let spec = &part.spec;
    if spec.destroyed.load(Ordering::Acquire) || spec.stopped.load(Ordering::Acquire) {
        return Err(Error::ShuttingDown);
    }
    // Opened if this is the first the queue sees since the broker started
    // (its actor may not have run yet).
    let state = state_for(spec);
    let state = state.borrow();
    let entries = state
        .cq()?
        .read(first_offset, part.records)
        .map_err(|e| Error::io(format!("read consume queue {}", part.spec.name), e))?;
    if entries.len() != part.records {
        // Retention took them: stored once, but their answer is gone.
        let sequence = part.producer.as_ref().map_or(0, |p| p.seq.sequence);
        return Err(Error::DuplicateSequence { sequence });
    }
    // The delay queues' entries carry the due time in place of a tag hash.
    let delayed = matches!(&*part.spec.topic, SCHEDULE_TOPIC | TIMER_TOPIC);
    Ok(entries
        .into_iter()
        .zip(first_offset..)
        .map(|(entry, queue_offset)| Placed {
            queue_offset,
            pos: RecordPos { log_offset: entry.log_offset, size: entry.size, store_ts: 0 },
            due: delayed.then_some(entry.tag_hash as i64),
        })
        .collect())
}
