//! Idempotent producers' sequence state: for each lane — one producer's
//! sends to one queue, as the send named it — the epoch, the next sequence
//! number expected, and where the recent sends were placed, so a repeat is
//! answered with its original placement instead of being stored again and a
//! gap is refused before anything is stored.
//!
//! The table lives on the queue actors' thread (the fanout owns it), where
//! sends are admitted one after another: checking and admitting a send is
//! one step, so a sequence is never admitted twice. A send's run is recorded
//! at admission (later sequences may follow it at once) and confirmed or
//! taken back when the writer answers.
//!
//! Durability: every idempotent record carries its producer id, epoch and
//! sequence (record format version 2), and each checkpoint writes a snapshot
//! of the table ([`ProducerTable::snapshot`]) before the checkpoint itself.
//! After a crash the broker loads the snapshot and replays the log past the
//! checkpoint into it ([`ProducerTable::apply`]), as it does the consume
//! queues; replaying a record the snapshot already holds changes nothing.
//! Snapshot layout: docs/FORMAT.md, "Producer state".

use crate::error::{Error, Result};
use brook_proto::ProducerSeq;
use std::collections::{HashMap, VecDeque};

/// Runs kept per lane: enough for a client's whole window of sends in
/// flight on one queue (the client keeps at most 256), so every send of that
/// window can be recognised when it is sent again.
const MAX_RUNS: usize = 256;
const MAGIC: u32 = 0x5350_4B42; // "BKPS"
const VERSION: u32 = 1;

/// The hasher of the lane map: lanes are looked up for every idempotent
/// send, by ids and hashes already spread.
type FastHash = foldhash::fast::RandomState;

/// Which lane a send belongs to: its producer, and the topic and queue the
/// send named (a delayed or transactional message is stored elsewhere but
/// keeps its lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneRef<'a> {
    /// The producer id.
    pub producer_id: u64,
    /// The topic the send named.
    pub topic: &'a str,
    /// The queue the send named.
    pub queue: u32,
    /// [`topic_hash`] of `topic`, computed once by whoever names the lane.
    pub topic_hash: u64,
}

/// The hash a lane's topic is looked up by.
pub fn topic_hash(topic: &str) -> u64 {
    brook_proto::hash::fnv1a64(topic)
}

impl<'a> LaneRef<'a> {
    /// The lane of `producer_id`'s sends to `topic`/`queue`.
    pub fn new(producer_id: u64, topic: &'a str, queue: u32) -> Self {
        Self { producer_id, topic, queue, topic_hash: topic_hash(topic) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct LaneId {
    producer_id: u64,
    topic_hash: u64,
    queue: u32,
}

impl LaneRef<'_> {
    fn id(&self) -> LaneId {
        LaneId { producer_id: self.producer_id, topic_hash: self.topic_hash, queue: self.queue }
    }
}

/// Consecutive sequences placed at consecutive offsets of one store queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first_seq: u32,
    count: u32,
    first_offset: u64,
    /// Which queue holds them (hash of its `topic/queue` name).
    store: u64,
    /// Confirmed by the writer; a run still being written is answered as in
    /// flight when repeated, and taken back if its write fails.
    written: bool,
}

impl Run {
    fn end(&self) -> u32 {
        self.first_seq.saturating_add(self.count)
    }
}

/// Whether `next` carries on where `run` ends — sequences and offsets of one
/// store queue — with both written: the two can be kept as one.
fn continues(run: &Run, next: &Run) -> bool {
    run.written
        && next.written
        && run.store == next.store
        && run.end() == next.first_seq
        && run.first_offset + u64::from(run.count) == next.first_offset
}

#[derive(Debug, Clone)]
struct Lane {
    topic: Box<str>,
    epoch: u32,
    /// The next sequence expected: everything below was admitted.
    next: u32,
    runs: VecDeque<Run>,
    last_active_ms: i64,
}

impl Lane {
    fn new(topic: &str, epoch: u32, next: u32, now_ms: i64) -> Self {
        Lane { topic: topic.into(), epoch, next, runs: VecDeque::new(), last_active_ms: now_ms }
    }

    /// Adds a run, folding it into the last one when both are written and it
    /// continues it, and forgets the oldest written runs past the limit.
    fn push(&mut self, run: Run) {
        if let Some(last) = self.runs.back_mut() {
            if continues(last, &run) {
                last.count += run.count;
                return;
            }
        }
        self.runs.push_back(run);
        self.trim();
    }

    /// Forgets the oldest written runs past the limit (runs still being
    /// written are kept: their outcome is yet to come).
    fn trim(&mut self) {
        while self.runs.len() > MAX_RUNS && self.runs.front().is_some_and(|r| r.written) {
            self.runs.pop_front();
        }
    }
}

/// What an idempotent send gets when it reaches its queue.
#[derive(Debug)]
pub enum Verdict {
    /// Never seen: store it.
    New,
    /// Its first messages were stored before (a retry; sends merged on the
    /// way may repeat a prefix and carry new messages after it): they sit at
    /// these `(queue offset, count)` stretches of its store queue, in order,
    /// and the last `fresh` messages are new, to be stored.
    Duplicate {
        /// Where the repeated messages were placed.
        placed: Vec<(u64, u32)>,
        /// How many messages at the end are new.
        fresh: u32,
    },
    /// Refused; nothing is stored.
    Refused(Error),
}

/// Where the sequences `wanted` were placed, as `(queue offset, count)`
/// stretches, from a lane's runs (in sequence order). Refused when one is
/// still being written (busy: ask again) or no longer kept, or was stored
/// in another queue than `store` (its answer cannot be read back here).
fn placed(runs: &VecDeque<Run>, wanted: std::ops::Range<u32>, store: u64) -> Result<Vec<(u64, u32)>> {
    let gone = || Error::DuplicateSequence { sequence: wanted.start };
    let first = runs.iter().rposition(|run| run.first_seq <= wanted.start).ok_or_else(gone)?;
    let mut out = Vec::new();
    let mut at = wanted.start;
    for run in runs.iter().skip(first) {
        if at >= wanted.end {
            break;
        }
        if run.first_seq > at || run.store != store {
            return Err(gone());
        }
        if !run.written {
            return Err(Error::Busy("an earlier copy of this send is still being stored".into()));
        }
        let upto = run.end().min(wanted.end);
        if upto > at {
            out.push((run.first_offset + u64::from(at - run.first_seq), upto - at));
            at = upto;
        }
    }
    if at < wanted.end {
        return Err(gone());
    }
    Ok(out)
}

/// Every lane's state, bounded by a cap on producers and an idle expiry.
#[derive(Debug)]
pub struct ProducerTable {
    lanes: HashMap<LaneId, Lane, FastHash>,
    /// Lanes per producer id, for the cap.
    producers: HashMap<u64, u32, FastHash>,
    max_producers: usize,
    idle_expiry_ms: i64,
    /// Bumped by every change; `saved` is the change a written snapshot
    /// holds.
    generation: u64,
    saved: u64,
}

impl Default for ProducerTable {
    fn default() -> Self {
        Self::new(100_000, 86_400_000)
    }
}

impl ProducerTable {
    /// An empty table keeping at most `max_producers` producers, each
    /// forgotten `idle_expiry_ms` after its last send.
    pub fn new(max_producers: usize, idle_expiry_ms: u64) -> Self {
        Self {
            lanes: HashMap::default(),
            producers: HashMap::default(),
            max_producers,
            idle_expiry_ms: i64::try_from(idle_expiry_ms).unwrap_or(i64::MAX),
            generation: 0,
            saved: 0,
        }
    }

    /// Sets the limits (a loaded snapshot takes the configured ones).
    pub fn set_limits(&mut self, max_producers: usize, idle_expiry_ms: u64) {
        self.max_producers = max_producers;
        self.idle_expiry_ms = i64::try_from(idle_expiry_ms).unwrap_or(i64::MAX);
    }

    /// Producers known.
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    fn touch(&mut self) {
        self.generation += 1;
    }

    /// Judges a send of `count` messages starting at `seq` on `lane`, bound
    /// for the store queue `store`. A new lane, or a new epoch starting at
    /// sequence 0, is opened here.
    pub fn check(&mut self, lane: LaneRef<'_>, seq: ProducerSeq, count: u32, store: u64, now_ms: i64) -> Verdict {
        let id = lane.id();
        let Some(state) = self.lanes.get_mut(&id) else {
            if !self.producers.contains_key(&lane.producer_id) && self.producers.len() >= self.max_producers {
                return Verdict::Refused(Error::TooManyProducers(self.max_producers));
            }
            // Unknown (new, or forgotten while idle): its sequence starts
            // where this send does.
            self.lanes.insert(id, Lane::new(lane.topic, seq.epoch, seq.sequence, now_ms));
            *self.producers.entry(lane.producer_id).or_default() += 1;
            self.touch();
            return Verdict::New;
        };
        if *state.topic != *lane.topic {
            return Verdict::Refused(Error::InvalidArgument(format!(
                "producer {} lane {:?}/{} collides with {:?}",
                lane.producer_id, lane.topic, lane.queue, state.topic
            )));
        }
        state.last_active_ms = now_ms;
        if seq.epoch < state.epoch {
            return Verdict::Refused(Error::ProducerFenced { epoch: seq.epoch, latest: state.epoch });
        }
        if seq.epoch > state.epoch {
            if seq.sequence != 0 {
                return Verdict::Refused(Error::OutOfOrderSequence { got: seq.sequence, expected: 0 });
            }
            // A new epoch: the producer gave up on its old sequence here.
            *state = Lane::new(lane.topic, seq.epoch, 0, now_ms);
            self.generation += 1;
            return Verdict::New;
        }
        let end = seq.sequence.saturating_add(count);
        if seq.sequence == state.next {
            return Verdict::New;
        }
        if seq.sequence > state.next {
            return Verdict::Refused(Error::OutOfOrderSequence { got: seq.sequence, expected: state.next });
        }
        let repeated_end = end.min(state.next);
        match placed(&state.runs, seq.sequence..repeated_end, store) {
            Ok(placed) => Verdict::Duplicate { placed, fresh: end - repeated_end },
            Err(e) => Verdict::Refused(e),
        }
    }

    /// A send judged [`Verdict::New`] was admitted: its messages hold
    /// `first_offset..` of the store queue, not yet written.
    pub fn admitted(&mut self, lane: LaneRef<'_>, seq: ProducerSeq, count: u32, first_offset: u64, store: u64) {
        if let Some(state) = self.lanes.get_mut(&lane.id()) {
            state.next = seq.sequence.saturating_add(count);
            state.runs.push_back(Run { first_seq: seq.sequence, count, first_offset, store, written: false });
            state.trim();
            self.generation += 1;
        }
    }

    /// The writer answered an admitted send: confirmed, or — its write
    /// failed — taken back with every later run of the lane (they were
    /// refused with it), so the producer may send those sequences again.
    pub fn finished(&mut self, lane: LaneRef<'_>, seq: ProducerSeq, written: bool) {
        let Some(state) = self.lanes.get_mut(&lane.id()) else { return };
        if state.epoch != seq.epoch {
            return;
        }
        let Some(at) = state.runs.iter().rposition(|run| run.first_seq == seq.sequence && !run.written) else {
            return;
        };
        if written {
            if let Some(run) = state.runs.get_mut(at) {
                run.written = true;
            }
            // Writes are confirmed in order, so a confirmed run folds into
            // the one before it (its successors fold into it in turn).
            if let (Some(before), Some(run)) = (at.checked_sub(1).and_then(|b| state.runs.get(b)), state.runs.get(at)) {
                if continues(before, run) {
                    let count = run.count;
                    state.runs.remove(at);
                    if let Some(before) = state.runs.get_mut(at - 1) {
                        before.count += count;
                    }
                }
            }
        } else {
            state.runs.truncate(at);
            state.next = seq.sequence;
        }
        self.generation += 1;
    }

    /// Recovery: a record the log holds (its own sequence), stored at
    /// `queue_offset` of the store queue `store` at `store_ts`. A record the
    /// table already covers changes nothing.
    pub fn apply(&mut self, lane: LaneRef<'_>, seq: ProducerSeq, queue_offset: u64, store: u64, store_ts: i64) {
        let id = lane.id();
        let state = match self.lanes.get_mut(&id) {
            Some(state) => state,
            None => {
                *self.producers.entry(lane.producer_id).or_default() += 1;
                self.lanes.entry(id).or_insert_with(|| Lane::new(lane.topic, seq.epoch, seq.sequence, store_ts))
            }
        };
        if seq.epoch < state.epoch || (seq.epoch == state.epoch && seq.sequence < state.next) {
            return;
        }
        if seq.epoch > state.epoch {
            *state = Lane::new(lane.topic, seq.epoch, seq.sequence, store_ts);
        }
        state.next = seq.sequence.saturating_add(1);
        state.last_active_ms = state.last_active_ms.max(store_ts);
        state.push(Run { first_seq: seq.sequence, count: 1, first_offset: queue_offset, store, written: true });
        self.generation += 1;
    }

    /// Forgets producers idle past the expiry.
    pub fn expire(&mut self, now_ms: i64) {
        let horizon = now_ms.saturating_sub(self.idle_expiry_ms);
        let before = self.lanes.len();
        let producers = &mut self.producers;
        self.lanes.retain(|id, lane| {
            let keep = lane.last_active_ms >= horizon;
            if !keep {
                if let Some(n) = producers.get_mut(&id.producer_id) {
                    *n = n.saturating_sub(1);
                }
            }
            keep
        });
        self.producers.retain(|_, n| *n > 0);
        if self.lanes.len() != before {
            self.generation += 1;
        }
    }

    /// The table as a checkpoint writes it, and the change it holds; `None`
    /// when the last snapshot written holds every change. Runs still being
    /// written are left out: their records are past what the checkpoint
    /// covers, and recovery replays them from the log.
    pub fn snapshot(&mut self, now_ms: i64) -> Option<(u64, Vec<u8>)> {
        self.expire(now_ms);
        if self.generation == self.saved {
            return None;
        }
        let mut out = Vec::with_capacity(16 + self.lanes.len() * 64);
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.lanes.len() as u32).to_le_bytes());
        for (id, lane) in &self.lanes {
            let runs: Vec<&Run> = lane.runs.iter().filter(|run| run.written).collect();
            let next = lane.runs.iter().find(|run| !run.written).map_or(lane.next, |run| run.first_seq);
            out.extend_from_slice(&id.producer_id.to_le_bytes());
            out.extend_from_slice(&id.queue.to_le_bytes());
            out.extend_from_slice(&lane.epoch.to_le_bytes());
            out.extend_from_slice(&next.to_le_bytes());
            out.extend_from_slice(&lane.last_active_ms.to_le_bytes());
            out.extend_from_slice(&(lane.topic.len() as u16).to_le_bytes());
            out.extend_from_slice(lane.topic.as_bytes());
            out.extend_from_slice(&(runs.len() as u32).to_le_bytes());
            for run in runs {
                out.extend_from_slice(&run.first_seq.to_le_bytes());
                out.extend_from_slice(&run.count.to_le_bytes());
                out.extend_from_slice(&run.first_offset.to_le_bytes());
                out.extend_from_slice(&run.store.to_le_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Some((self.generation, out))
    }

    /// A snapshot of change `generation` is on disk.
    pub fn saved(&mut self, generation: u64) {
        self.saved = self.saved.max(generation);
    }

    /// Reads a snapshot back; `Err` for one that is damaged or of another
    /// version.
    pub fn load(bytes: &[u8], max_producers: usize, idle_expiry_ms: u64) -> Result<Self> {
        let corrupt = |why: &str| Error::Corrupt { offset: 0, reason: format!("producer state: {why}") };
        let (body, crc) = bytes.split_at_checked(bytes.len().saturating_sub(4)).ok_or_else(|| corrupt("too short"))?;
        if crc.len() != 4 || crc32c::crc32c(body).to_le_bytes() != crc {
            return Err(corrupt("crc mismatch"));
        }
        let mut read = Reader(body);
        if read.u32()? != MAGIC || read.u32()? != VERSION {
            return Err(corrupt("bad magic or version"));
        }
        let mut table = Self::new(max_producers, idle_expiry_ms);
        for _ in 0..read.u32()? {
            let (producer_id, queue, epoch, next, last_active_ms) =
                (read.u64()?, read.u32()?, read.u32()?, read.u32()?, read.u64()? as i64);
            let topic_len = usize::from(read.u16()?);
            let topic = std::str::from_utf8(read.take(topic_len)?).map_err(|_| corrupt("topic is not UTF-8"))?;
            let mut lane = Lane::new(topic, epoch, next, last_active_ms);
            for _ in 0..read.u32()? {
                let (first_seq, count, first_offset, store) = (read.u32()?, read.u32()?, read.u64()?, read.u64()?);
                lane.runs.push_back(Run { first_seq, count, first_offset, store, written: true });
            }
            let id = LaneRef::new(producer_id, topic, queue).id();
            *table.producers.entry(producer_id).or_default() += 1;
            table.lanes.insert(id, lane);
        }
        Ok(table)
    }
}

/// Reads little-endian fields off the front of a snapshot.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let (head, rest) = self
            .0
            .split_at_checked(n)
            .ok_or_else(|| Error::Corrupt { offset: 0, reason: "producer state: cut short".into() })?;
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }
}

/// The hash a store queue is known by in the table.
pub fn store_id(topic: &str, queue: u32) -> u64 {
    brook_proto::hash::fnv1a64_parts(&[topic.as_bytes(), b"/", &queue.to_le_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(epoch: u32, sequence: u32) -> ProducerSeq {
        ProducerSeq { producer_id: 7, epoch, sequence }
    }

    fn lane() -> LaneRef<'static> {
        LaneRef::new(7, "t", 1)
    }
    const STORE: u64 = 42;

    /// Checks and admits a send, as the fanout does (the new part of one
    /// that repeats a prefix goes at `offset`).
    fn send(table: &mut ProducerTable, s: ProducerSeq, count: u32, offset: u64) -> Verdict {
        let verdict = table.check(lane(), s, count, STORE, 1);
        match &verdict {
            Verdict::New => table.admitted(lane(), s, count, offset, STORE),
            Verdict::Duplicate { fresh, .. } if *fresh > 0 => {
                let first = ProducerSeq { sequence: s.sequence + count - fresh, ..s };
                table.admitted(lane(), first, *fresh, offset, STORE);
            }
            _ => {}
        }
        verdict
    }

    fn at(offset: u64, count: u32) -> Vec<(u64, u32)> {
        vec![(offset, count)]
    }

    #[test]
    fn a_repeat_gets_its_original_offset_and_a_gap_is_refused() {
        let mut table = ProducerTable::default();
        assert!(matches!(send(&mut table, seq(0, 0), 2, 100), Verdict::New));
        // In flight: a repeat now is busy, not stored twice.
        assert!(matches!(send(&mut table, seq(0, 0), 2, 0), Verdict::Refused(Error::Busy(_))));
        table.finished(lane(), seq(0, 0), true);
        assert!(matches!(send(&mut table, seq(0, 2), 1, 105), Verdict::New));
        table.finished(lane(), seq(0, 2), true);
        assert!(
            matches!(send(&mut table, seq(0, 0), 2, 0), Verdict::Duplicate { ref placed, fresh: 0 } if *placed == at(100, 2))
        );
        assert!(
            matches!(send(&mut table, seq(0, 1), 1, 0), Verdict::Duplicate { ref placed, fresh: 0 } if *placed == at(101, 1))
        );
        assert!(
            matches!(send(&mut table, seq(0, 2), 1, 0), Verdict::Duplicate { ref placed, fresh: 0 } if *placed == at(105, 1))
        );
        assert!(matches!(
            send(&mut table, seq(0, 5), 1, 0),
            Verdict::Refused(Error::OutOfOrderSequence { got: 5, expected: 3 })
        ));
        assert!(matches!(send(&mut table, seq(0, 3), 1, 106), Verdict::New));
    }

    #[test]
    fn a_send_repeating_a_prefix_stores_only_what_is_new() {
        let mut table = ProducerTable::default();
        // Two sends placed apart (another producer wrote between them).
        assert!(matches!(send(&mut table, seq(0, 0), 2, 100), Verdict::New));
        table.finished(lane(), seq(0, 0), true);
        assert!(matches!(send(&mut table, seq(0, 2), 1, 110), Verdict::New));
        table.finished(lane(), seq(0, 2), true);
        // Sent again merged with two new ones: three repeats, two new.
        let verdict = send(&mut table, seq(0, 0), 5, 200);
        assert!(
            matches!(verdict, Verdict::Duplicate { ref placed, fresh: 2 } if *placed == vec![(100, 2), (110, 1)]),
            "{verdict:?}"
        );
        table.finished(lane(), seq(0, 3), true);
        let verdict = send(&mut table, seq(0, 1), 4, 0);
        assert!(
            matches!(verdict, Verdict::Duplicate { ref placed, fresh: 0 } if *placed == vec![(101, 1), (110, 1), (200, 2)]),
            "{verdict:?}"
        );
    }

    #[test]
    fn a_failed_write_takes_back_its_run_and_every_later_one() {
        let mut table = ProducerTable::default();
        for (s, offset) in [(0, 10), (1, 11), (2, 12)] {
            assert!(matches!(send(&mut table, seq(0, s), 1, offset), Verdict::New));
        }
        table.finished(lane(), seq(0, 0), true);
        table.finished(lane(), seq(0, 1), false);
        table.finished(lane(), seq(0, 2), false);
        assert!(matches!(send(&mut table, seq(0, 1), 1, 20), Verdict::New), "sent again, stored anew");
        assert!(
            matches!(send(&mut table, seq(0, 0), 1, 0), Verdict::Duplicate { ref placed, fresh: 0 } if *placed == at(10, 1))
        );
    }

    #[test]
    fn epochs_fence_old_sends_and_restart_the_sequence() {
        let mut table = ProducerTable::default();
        assert!(matches!(send(&mut table, seq(0, 0), 1, 1), Verdict::New));
        assert!(matches!(send(&mut table, seq(1, 4), 1, 0), Verdict::Refused(Error::OutOfOrderSequence { .. })));
        assert!(matches!(send(&mut table, seq(1, 0), 1, 2), Verdict::New));
        assert!(matches!(send(&mut table, seq(0, 1), 1, 0), Verdict::Refused(Error::ProducerFenced { .. })));
    }

    #[test]
    fn a_snapshot_loads_back_and_replaying_what_it_holds_changes_nothing() {
        let mut table = ProducerTable::default();
        for s in 0..5 {
            assert!(matches!(send(&mut table, seq(0, s), 1, 50 + u64::from(s)), Verdict::New));
            table.finished(lane(), seq(0, s), true);
        }
        let (generation, bytes) = table.snapshot(1).expect("changed");
        table.saved(generation);
        assert!(table.snapshot(1).is_none(), "nothing new to write");
        let mut back = ProducerTable::load(&bytes, 10, 86_400_000).expect("load");
        assert!(
            matches!(back.check(lane(), seq(0, 2), 1, STORE, 1), Verdict::Duplicate { ref placed, fresh: 0 } if *placed == at(52, 1))
        );
        back.apply(lane(), seq(0, 3), 53, STORE, 1);
        back.apply(lane(), seq(0, 5), 60, STORE, 1);
        assert!(
            matches!(back.check(lane(), seq(0, 5), 1, STORE, 1), Verdict::Duplicate { ref placed, fresh: 0 } if *placed == at(60, 1))
        );
        assert!(matches!(back.check(lane(), seq(0, 6), 1, STORE, 1), Verdict::New));
        let mut damaged = bytes.clone();
        damaged[10] ^= 1;
        assert!(ProducerTable::load(&damaged, 10, 86_400_000).is_err());
    }

    #[test]
    fn a_lane_keeps_a_bounded_number_of_runs() {
        let mut table = ProducerTable::default();
        // Offsets far apart: nothing folds, as with producers interleaving.
        for s in 0..(MAX_RUNS as u32 * 3) {
            assert!(matches!(send(&mut table, seq(0, s), 1, u64::from(s) * 10), Verdict::New));
            table.finished(lane(), seq(0, s), true);
        }
        let runs = table.lanes.values().map(|l| l.runs.len()).sum::<usize>();
        assert_eq!(runs, MAX_RUNS);
        let newest = MAX_RUNS as u32 * 3 - 1;
        assert!(matches!(send(&mut table, seq(0, newest), 1, 0), Verdict::Duplicate { .. }));
        assert!(matches!(send(&mut table, seq(0, 0), 1, 0), Verdict::Refused(Error::DuplicateSequence { .. })));
    }

    #[test]
    fn producers_are_capped_and_forgotten_when_idle() {
        let mut table = ProducerTable::new(1, 1_000);
        let other = LaneRef { producer_id: 8, ..lane() };
        assert!(matches!(table.check(lane(), seq(0, 0), 1, STORE, 0), Verdict::New));
        let s = ProducerSeq { producer_id: 8, epoch: 0, sequence: 0 };
        assert!(matches!(table.check(other, s, 1, STORE, 0), Verdict::Refused(Error::TooManyProducers(1))));
        table.expire(5_000);
        assert_eq!(table.producer_count(), 0);
        assert!(matches!(table.check(other, s, 1, STORE, 5_000), Verdict::New));
    }
}
