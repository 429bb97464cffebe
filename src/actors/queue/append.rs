//! The queue's part of an append: offsets are assigned when a run of
//! records is admitted (in call order, on the queues' thread), and its
//! consume-queue entries are appended when the writer answers — only then
//! is the run readable and acknowledged.

use crate::actors::queue::slots::{local_state, state_for};
use crate::actors::queue::spec::QueueSpec;
use crate::actors::queue::state::QueueState;
use crate::error::{Error, Result};
use crate::store::commitlog::RecordPos;
use crate::store::consume_queue::{ConsumeQueue, CqEntry};
use crate::store::index::KeyEntry;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Where one produced record ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    /// Its queue offset.
    pub queue_offset: u64,
    /// Its place in the log.
    pub pos: RecordPos,
    /// A repeated idempotent send's delivery time, when it waits in a delay
    /// queue (the due time its consume-queue entry carries): the repeat is
    /// answered with the original's, not one computed anew.
    pub due: Option<i64>,
}

/// Admits `records` records into `spec`'s queue and returns the first's
/// queue offset: offsets are assigned now, in call order. Runs on the
/// queues' thread. A queue deleted (or whose actor stopped) meanwhile
/// refuses, as does a failed one.
pub(crate) fn admit(spec: &Arc<QueueSpec>, records: usize) -> Result<u64> {
    if spec.destroyed.load(Ordering::Acquire) || spec.stopped.load(Ordering::Acquire) {
        return Err(Error::ShuttingDown);
    }
    state_for(spec).borrow_mut().admit(records)
}

/// An admitted run of records as the writer placed them.
pub(crate) struct Written<'a> {
    /// Queue offset of the first.
    pub first_offset: u64,
    /// Where each landed.
    pub positions: &'a [RecordPos],
    /// Tag hash of each.
    pub tag_hashes: &'a [u64],
    /// Key hashes, each with its record's index in the whole produce.
    pub key_hashes: &'a [(u32, u64)],
    /// Index of the first record in the whole produce.
    pub first_record: usize,
}

/// Appends the consume-queue entries of a run `spec`'s queue admitted,
/// making it readable; its keys go to `keys`, for the indexer. Runs on the
/// queues' thread, where the writer answers.
pub(crate) fn written(spec: &QueueSpec, run: Written<'_>, keys: &mut Vec<KeyEntry>) -> Result<()> {
    match local_state(spec) {
        Some(state) => state.borrow_mut().written(run, keys),
        // A queue deleted meanwhile has no state left to answer into.
        None => {
            slog::warn!(spec.logger, "append answered after its queue was gone"; "queue" => &spec.name);
            Err(Error::ShuttingDown)
        }
    }
}

/// The writer refused an admitted run (the disk is full): its offsets are
/// taken back, with every later run of the queue's, once all are answered.
pub(crate) fn refused(spec: &QueueSpec, first_offset: u64, records: usize) {
    if let Some(state) = local_state(spec) {
        state.borrow_mut().refused(first_offset, records);
    }
}

impl QueueState {
    /// Assigns `records` records their offsets; the first's is returned.
    pub(super) fn admit(&mut self, records: usize) -> Result<u64> {
        self.cq()?;
        if self.rollback_to.is_some() {
            return Err(Error::Busy(format!("queue {} is taking back sends the disk refused", self.name)));
        }
        let first_offset = self.next_offset;
        self.next_offset += records as u64;
        self.outstanding += 1;
        Ok(first_offset)
    }

    /// A run's write was refused; see [`QueueState::rollback_to`].
    pub(super) fn refused(&mut self, first_offset: u64, records: usize) {
        if records == 0 {
            return;
        }
        self.outstanding = self.outstanding.saturating_sub(1);
        let to = self.rollback_to.map_or(first_offset, |to| to.min(first_offset));
        self.rollback_to = Some(to);
        if self.outstanding == 0 {
            self.next_offset = to;
            self.rollback_to = None;
        }
    }

    /// The writer's answer to the oldest run admitted: its entries join the
    /// consume queue, and keys of its records go to `keys`, for the indexer.
    pub(super) fn written(&mut self, run: Written<'_>, keys: &mut Vec<KeyEntry>) -> Result<()> {
        let Written { first_offset, positions, tag_hashes, key_hashes, first_record } = run;
        self.outstanding = self.outstanding.saturating_sub(1);
        if let Some(to) = self.rollback_to {
            // The writer refuses every run admitted before it took writes
            // again; a run written after a refused one would sit above a
            // gap. Failing loudly beats a silent hole.
            let reason = format!("run at {first_offset} written after one refused at {to}");
            self.fail(reason.clone());
            return Err(Error::Poisoned(reason));
        }
        // Inline for the one-message appends of pipelined sends.
        let entries: smallvec::SmallVec<[CqEntry; 4]> = positions
            .iter()
            .zip(tag_hashes)
            .map(|(pos, tag_hash)| CqEntry { log_offset: pos.log_offset, size: pos.size, tag_hash: *tag_hash })
            .collect();
        // A small page-cache write; durability comes from the checkpoint.
        let appended = match self.cq.as_mut() {
            Some(cq) => cq.append(first_offset, &entries).map_err(|e| e.to_string()),
            None => Err("queue not open".to_string()),
        };
        self.note_tail();
        if let Err(e) = appended {
            let reason = format!("consume queue append failed: {e}");
            self.fail(reason.clone());
            return Err(Error::Poisoned(reason));
        }
        // Listed here, not at admission: a checkpoint can visit the queue
        // between the two, and would then find no entry and leave it off
        // the list while this one sits in memory below its durable point.
        self.list();
        // Pushed to the indexer's buffer by the fanout before any later
        // barrier is handled.
        if self.indexed {
            keys.extend(key_hashes.iter().filter_map(|&(record, hash)| {
                let pos = positions.get((record as usize).checked_sub(first_record)?)?;
                Some(KeyEntry { hash, log_offset: pos.log_offset, store_ts: pos.store_ts })
            }));
        }
        self.wake_parked();
        Ok(())
    }

    pub(super) fn note_tail(&mut self) {
        match self.cq.as_ref().and_then(ConsumeQueue::tail_low) {
            None => self.tail_since = None,
            Some(_) if self.tail_since.is_none() => self.tail_since = Some(std::time::Instant::now()),
            Some(_) => {}
        }
    }
}
