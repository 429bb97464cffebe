//! The QueueActor: one per topic-queue, the only mutator of that queue.
//!
//! A queue's state ([`QueueState`]) lives on the queue actors' thread, which
//! is the writer's. Appends reach it without a mailbox: the fanout (one
//! message per batch of sends, whatever the number of queues in it) has each
//! queue assign offsets in arrival order and hands the records of all of
//! them to the writer as one append ([`fanout::produce_here`]); because
//! everything goes to the one writer in that order, offsets within a queue
//! follow commit-log order. When the writer has written a group it calls
//! back on this same thread, and the consume-queue entries are appended
//! right there: only then are the messages readable and acknowledged, so
//! readers never see a message before its producer could, and a
//! checkpoint's `Barrier` (sent after the writer answered its `Sync`) finds
//! every entry below the synced position. With tens of thousands of queues,
//! a mailbox message per append and per answer cost more than the appends
//! did.
//!
//! Everything else (pulls, barriers, retention, deletion) goes through the
//! actor's mailbox. Pulls that find nothing new are parked (long polling)
//! and answered the moment an append makes something visible, or when their
//! time is up.

use crate::actors::fanout::{self, Part, Produce, Stores};
use crate::actors::indexer::KeyBuffer;
use crate::actors::writer::WriterActor;
use crate::error::{Error, Result};
use crate::filter::TagFilter;
use crate::store::commitlog::{AppendBatch, LogReader, RecordPos};
use crate::store::consume_queue::{ConsumeQueue, CqEntry, TailWrite};
use crate::store::index::KeyEntry;
use crate::store::record;
use actix::prelude::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Most consume-queue entries one pull examines (filtered ones included).
const MAX_SCAN: usize = 4096;
/// Most messages one pull returns.
pub const MAX_PULL_MESSAGES: u32 = 1024;

/// Store a batch of encoded records (each with its tag hash) in this
/// queue: for callers outside a connection (tests, tools). Connections and
/// the broker's own writes go through the fanout.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Store {
    /// The records (queue offsets are patched in).
    pub batch: AppendBatch,
    /// Tag hash of each record.
    pub tag_hashes: Vec<u64>,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Stores>,
}

/// Stores `batch` (with each record's tag hash) through `queue` and waits
/// for the answer.
pub async fn store(queue: &Addr<QueueActor>, batch: AppendBatch, tag_hashes: Vec<u64>) -> Result<Vec<Stored>> {
    let (reply, answer) = oneshot::channel();
    queue.do_send(Store { batch, tag_hashes, reply });
    answer.await.unwrap_or_else(|_| Stores::shutting_down(1)).into_first()
}

/// Where one produced record ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Its queue offset.
    pub queue_offset: u64,
    /// Its place in the log.
    pub pos: RecordPos,
}

/// Read entries from an offset.
#[derive(Message, Clone)]
#[rtype(result = "Result<PullEntries>")]
pub struct Pull {
    /// First offset wanted.
    pub offset: u64,
    /// Most entries to return.
    pub max_messages: u32,
    /// Most record bytes to return (at least one entry is returned).
    pub max_bytes: u32,
    /// Tag filter (hash pass).
    pub filter: Arc<TagFilter>,
    /// How long to park when nothing is there.
    pub long_poll: Duration,
    /// Ends the park early once cancelled, with what is there: a stopping
    /// server's clients get their parked pulls answered instead of cut off.
    /// The broker's own readers pass `None`: an answer at once would only
    /// send them round again while the broker stops.
    pub cut_short: Option<CancellationToken>,
}

/// What a pull found in the consume queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullEntries {
    /// `(queue offset, entry)` of each candidate, in order.
    pub entries: Vec<(u64, CqEntry)>,
    /// Where the next pull starts.
    pub next_offset: u64,
    /// Smallest stored offset.
    pub min_offset: u64,
    /// One past the largest stored offset.
    pub max_offset: u64,
}

/// The queue's offset range.
#[derive(Message)]
#[rtype(result = "Result<(u64, u64)>")]
pub struct Range;

/// A checkpoint's (or shutdown's) visit to a queue, through the fanout
/// ([`barrier_here`]) or a queue's own mailbox. The tail of entries kept in
/// memory is written if `force`, or if its oldest entry has waited
/// `max_tail_age`; otherwise it stays, and the answer says how far back it
/// reaches so the checkpoint can name a durable point below it (recovery
/// replays the log from there). With thousands of queues, most checkpoints
/// then cost a visit per active queue instead of a write each. The answer
/// goes into the checkpoint's [`BarrierRound`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Barrier {
    /// Write the whole tail (shutdown).
    pub force: bool,
    /// Write the tail once its oldest entry is this old.
    pub max_tail_age: Duration,
    /// Or once its oldest entry lies below this log offset, which bounds
    /// how much log a crash recovery re-reads (and must find in the page
    /// cache to be quick) when writes are fast.
    pub replay_floor: u64,
    /// Aged tails this checkpoint may still write (shared by all queues it
    /// visits), so tails that aged together are written over several
    /// checkpoints instead of stalling one.
    pub budget: Arc<std::sync::atomic::AtomicUsize>,
    /// Where the answer goes.
    pub round: Arc<BarrierRound>,
}

impl Barrier {
    /// A barrier that writes every tail (shutdown, tests).
    pub fn force(round: Arc<BarrierRound>) -> Self {
        Self { force: true, max_tail_age: Duration::ZERO, replay_floor: u64::MAX, budget: Arc::default(), round }
    }

    fn take_budget(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
    }
}

/// A barrier's answer.
#[derive(Debug, Default)]
pub struct Barriered {
    /// Consume-queue files written since the last barrier, to sync.
    pub files: Vec<PathBuf>,
    /// Log offset of the oldest entry still only in memory and not in
    /// `tails`.
    pub unwritten_from: Option<u64>,
    /// Aged tails for the checkpoint to write off this thread (by queue
    /// state id); their outcome goes back with [`tails_written_here`].
    pub tails: Vec<(u64, TailWrite)>,
}

/// One checkpoint's visit to many queues. Each [`Barrier`] holds a share,
/// and every queue visited answers into it; when the last share is gone —
/// the visit over, or dropped with the mailbox of a queue that stopped — the
/// merged answer (or the first error) is sent. A future per queue, joined,
/// cost more than the visits themselves with 50,000 queues.
#[derive(Debug)]
pub struct BarrierRound {
    merged: std::sync::Mutex<Result<Barriered>>,
    done: Option<oneshot::Sender<Result<Barriered>>>,
}

impl BarrierRound {
    /// A round and where its merged answer arrives once every share of the
    /// returned handle is dropped.
    pub fn start() -> (Arc<Self>, oneshot::Receiver<Result<Barriered>>) {
        let (done, rx) = oneshot::channel();
        (Arc::new(Self { merged: std::sync::Mutex::new(Ok(Barriered::default())), done: Some(done) }), rx)
    }

    fn answer(&self, answer: Result<Barriered>) {
        let Ok(mut merged) = self.merged.lock() else {
            return;
        };
        match (&mut *merged, answer) {
            (Ok(all), Ok(one)) => {
                all.files.extend(one.files);
                all.tails.extend(one.tails);
                all.unwritten_from = match (all.unwritten_from, one.unwritten_from) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            (Ok(_), Err(e)) => *merged = Err(e),
            (Err(_), _) => {}
        }
    }
}

impl Drop for BarrierRound {
    fn drop(&mut self) {
        let merged = self
            .merged
            .get_mut()
            .map(|m| std::mem::replace(m, Ok(Barriered::default())))
            .unwrap_or_else(|_| Err(Error::Busy("barrier round poisoned".into())));
        if let Some(done) = self.done.take() {
            let _ = done.send(merged);
        }
    }
}

/// Queues (by state id) that took appends since their last barrier: the
/// periodic checkpoint visits only these.
#[derive(Debug, Default)]
pub struct ActiveQueues(std::sync::Mutex<Vec<u64>>);

impl ActiveQueues {
    fn add(&self, queue: u64) {
        if let Ok(mut list) = self.0.lock() {
            list.push(queue);
        }
    }

    fn take(&self) -> Vec<u64> {
        self.0.lock().map(|mut list| std::mem::take(&mut *list)).unwrap_or_default()
    }
}

/// Visits the queues on this thread with `barrier`: every one (`all`:
/// shutdown) or those that took appends since their last visit. Each
/// answers into the barrier's round, without a mailbox message per queue:
/// with 50,000 active queues those were as many messages a second as sends.
/// Entries of every write the writer has answered are already appended, so
/// a barrier sent after a `Sync` covers everything below its position.
///
/// The visits run in slices of [`VISITS_PER_SLICE`] queues (about half a
/// millisecond), yielding in between: this thread is also the writer's, and
/// 50,000 visits take 17–30 ms. A queue visited late has only more entries,
/// all above the ones the barrier must cover, so a later visit answers for
/// it as well.
pub fn barrier_here(barrier: Barrier, all: bool, active: &ActiveQueues) {
    let ids = if all { STATES.with(|states| states.borrow().ids()) } else { active.take() };
    let mut visit = Visit { barrier, ids, next: 0 };
    if !visit.slice() {
        tokio::task::spawn_local(async move {
            loop {
                tokio::task::yield_now().await;
                if visit.slice() {
                    break;
                }
            }
        });
    }
}

/// Barrier visits between turns of the thread's other work.
const VISITS_PER_SLICE: usize = 1024;

/// A barrier's visits in progress.
struct Visit {
    barrier: Barrier,
    ids: Vec<u64>,
    next: usize,
}

impl Visit {
    /// Visits the next slice of queues; true once all are visited.
    fn slice(&mut self) -> bool {
        let end = self.ids.len().min(self.next + VISITS_PER_SLICE);
        while self.next < end {
            let id = self.ids.get(self.next).copied();
            self.next += 1;
            if let Some(state) = id.and_then(|id| STATES.with(|states| states.borrow().get(id, usize::MAX).cloned())) {
                let answer = state.borrow_mut().barrier(&self.barrier);
                self.barrier.round.answer(answer);
            }
        }
        self.next >= self.ids.len()
    }
}

impl Drop for Visit {
    fn drop(&mut self) {
        // Dropped half way (the thread is stopping): the round must not
        // read as covering queues never visited.
        if self.next < self.ids.len() {
            self.barrier.round.answer(Err(Error::ShuttingDown));
        }
    }
}

/// Reports the outcome of a checkpoint's tail writes to their queues on
/// this thread (a queue deleted meanwhile is skipped).
pub fn tails_written_here(tails: Vec<(u64, TailWrite)>, ok: bool) {
    for (id, tail) in tails {
        if let Some(state) = STATES.with(|states| states.borrow().get(id, usize::MAX).cloned()) {
            state.borrow_mut().tail_written(&tail, ok);
        }
    }
}

/// Retention deleted log below `log_min`: drop consume-queue files that only
/// point there.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retain {
    /// Smallest log offset still stored.
    pub log_min: u64,
}

/// The first offset whose message was stored at or after `ts` (ms since the
/// epoch); the queue's end if none was.
#[derive(Message)]
#[rtype(result = "Result<u64>")]
pub struct OffsetAtTime {
    /// The time.
    pub ts: i64,
}

/// Delete the queue's files and stop (topic deletion).
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct Destroy;

struct Parked {
    id: u64,
    pull: Pull,
    reply: oneshot::Sender<Result<PullEntries>>,
}

/// What a queue actor works with besides its own files.
pub struct QueueLinks {
    /// The writer its appends go to.
    pub writer: Addr<WriterActor>,
    /// Log reads.
    pub reader: LogReader,
    /// Where the keys of stored messages go.
    pub keys: Option<Arc<KeyBuffer>>,
    /// Where the queue lists itself when it takes appends.
    pub active: Arc<ActiveQueues>,
}

/// What a queue is made from; shared by its actor, the registry and the
/// appends in flight.
pub struct QueueSpec {
    /// Identifies the queue's state on its thread.
    id: u64,
    name: String,
    dir: PathBuf,
    per_file: u64,
    /// Smallest stored log offset when the queue was started.
    log_min: u64,
    pub(crate) links: QueueLinks,
    /// Set by `Destroy`: appends still on their way are refused.
    destroyed: AtomicBool,
    /// Set when the actor stops (destroyed, or shutdown): its state is
    /// gone from the thread and must not be reopened by a late append.
    stopped: AtomicBool,
    /// Where its state sits in the table of the thread that opened it.
    slot: AtomicUsize,
    logger: slog::Logger,
}

impl QueueSpec {
    /// A queue stored in `dir`; `id` must be unique among live queues.
    pub fn new(
        id: u64,
        name: String,
        dir: PathBuf,
        (per_file, log_min): (u64, u64),
        links: QueueLinks,
        logger: slog::Logger,
    ) -> Self {
        Self {
            id,
            name,
            dir,
            per_file,
            log_min,
            links,
            destroyed: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            slot: AtomicUsize::new(usize::MAX),
            logger,
        }
    }
}

/// A queue's state as this thread keeps it.
type SharedState = Rc<RefCell<QueueState>>;

/// The queues' states on this thread. A state's slot is noted on its spec
/// when it opens, so appends and the writer's answers reach it by index:
/// with 50,000 queues, two hash lookups per append in a map that large were
/// a tenth of the extra cost of many queues. The id map serves checkpoints,
/// stops and a spec whose noted slot is stale or another thread's.
struct Slots<T> {
    slots: Vec<Option<(u64, T)>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize, crate::actors::FastHash>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self { slots: Vec::new(), free: Vec::new(), by_id: HashMap::default() }
    }
}

impl<T> Slots<T> {
    /// The slot of `id`, tried at `hint` first.
    fn find(&self, id: u64, hint: usize) -> Option<usize> {
        let holds = |slot: usize| matches!(self.slots.get(slot), Some(Some((owner, _))) if *owner == id);
        if holds(hint) {
            return Some(hint);
        }
        self.by_id.get(&id).copied().filter(|&slot| holds(slot))
    }

    /// The value of `id`, tried at `hint` first.
    fn get(&self, id: u64, hint: usize) -> Option<&T> {
        let slot = self.find(id, hint)?;
        self.slots[slot].as_ref().map(|(_, value)| value)
    }

    /// The slot of `id`'s value, made by `make` unless there is one.
    fn open(&mut self, id: u64, hint: usize, make: impl FnOnce() -> T) -> usize {
        if let Some(slot) = self.find(id, hint) {
            return slot;
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        self.slots[slot] = Some((id, make()));
        self.by_id.insert(id, slot);
        slot
    }

    fn remove(&mut self, id: u64) {
        if let Some(slot) = self.by_id.remove(&id) {
            self.slots[slot] = None;
            self.free.push(slot);
        }
    }

    fn ids(&self) -> Vec<u64> {
        self.by_id.keys().copied().collect()
    }
}

thread_local! {
    /// The state of every queue on this thread.
    static STATES: RefCell<Slots<SharedState>> = RefCell::new(Slots::default());
}

/// The state of `spec`'s queue on this thread, opened on first use (by its
/// actor or by the first append to reach it, whichever comes first).
fn state_for(spec: &Arc<QueueSpec>) -> SharedState {
    STATES.with(|states| {
        let mut states = states.borrow_mut();
        let slot =
            states.open(spec.id, spec.slot.load(Ordering::Relaxed), || Rc::new(RefCell::new(QueueState::open(spec))));
        spec.slot.store(slot, Ordering::Relaxed);
        states.get(spec.id, slot).cloned().expect("just opened")
    })
}

fn local_state(spec: &QueueSpec) -> Option<SharedState> {
    STATES.with(|states| states.borrow().get(spec.id, spec.slot.load(Ordering::Relaxed)).cloned())
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

/// One topic-queue's offsets, consume queue, appends in flight and parked
/// pulls.
pub struct QueueState {
    id: u64,
    name: String,
    dir: PathBuf,
    per_file: u64,
    log_min: u64,
    cq: Option<ConsumeQueue>,
    failed: Option<String>,
    next_offset: u64,
    reader: LogReader,
    /// Keys of stored records are handed to the indexer.
    indexed: bool,
    active: Arc<ActiveQueues>,
    /// In `active` since the last barrier.
    listed: bool,
    /// When the in-memory tail got its oldest entry.
    tail_since: Option<std::time::Instant>,
    parked: Vec<Parked>,
    next_park_id: u64,
    logger: slog::Logger,
}

impl QueueState {
    /// Opens the queue's files (on the queue actors' thread).
    fn open(spec: &QueueSpec) -> Self {
        let mut state = Self {
            id: spec.id,
            name: spec.name.clone(),
            dir: spec.dir.clone(),
            per_file: spec.per_file,
            log_min: spec.log_min,
            cq: None,
            failed: None,
            next_offset: 0,
            reader: spec.links.reader.clone(),
            indexed: spec.links.keys.is_some(),
            active: spec.links.active.clone(),
            listed: false,
            tail_since: None,
            parked: Vec::new(),
            next_park_id: 0,
            logger: spec.logger.clone(),
        };
        match ConsumeQueue::open(state.dir.clone(), state.per_file)
            .and_then(|mut cq| cq.retain_from_log(state.log_min).map(|_| cq))
        {
            Ok(cq) => {
                state.next_offset = cq.next_offset();
                state.cq = Some(cq);
            }
            Err(e) => state.fail(format!("cannot open consume queue {}: {e}", state.dir.display())),
        }
        state
    }

    fn cq(&self) -> Result<&ConsumeQueue> {
        match (&self.cq, &self.failed) {
            (Some(cq), None) => Ok(cq),
            (_, Some(reason)) => Err(Error::Poisoned(reason.clone())),
            (None, None) => Err(Error::Busy(format!("queue {} is not open", self.name))),
        }
    }

    fn fail(&mut self, reason: String) {
        slog::error!(self.logger, "queue failed"; "queue" => &self.name, "reason" => &reason);
        self.failed = Some(reason);
    }

    /// Assigns `records` records their offsets; the first's is returned.
    fn admit(&mut self, records: usize) -> Result<u64> {
        self.cq()?;
        let first_offset = self.next_offset;
        self.next_offset += records as u64;
        Ok(first_offset)
    }

    /// The writer's answer to the oldest run admitted: its entries join the
    /// consume queue, and keys of its records go to `keys`, for the indexer.
    fn written(&mut self, run: Written<'_>, keys: &mut Vec<KeyEntry>) -> Result<()> {
        let Written { first_offset, positions, tag_hashes, key_hashes, first_record } = run;
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

    /// Reads up to the pull's limits from `offset`; `None` when nothing new
    /// is there yet.
    fn collect(&self, pull: &Pull) -> Result<Option<PullEntries>> {
        let cq = self.cq()?;
        let (min, max) = (cq.min_offset(), cq.next_offset());
        if pull.offset < min {
            return Err(Error::BelowRetained { requested: pull.offset, min });
        }
        if pull.offset > max {
            return Err(Error::BeyondEnd { requested: pull.offset, max });
        }
        if pull.offset == max {
            return Ok(None);
        }
        let max_messages = pull.max_messages.clamp(1, MAX_PULL_MESSAGES) as usize;
        let mut out = PullEntries { next_offset: pull.offset, min_offset: min, max_offset: max, ..Default::default() };
        let mut bytes = 0u64;
        let mut scanned = 0;
        'scan: while out.next_offset < max && scanned < MAX_SCAN {
            let chunk = cq
                .read(out.next_offset, (MAX_SCAN - scanned).min(256))
                .map_err(|e| Error::io(format!("read consume queue {}", self.name), e))?;
            if chunk.is_empty() {
                break;
            }
            for entry in chunk {
                if out.entries.len() >= max_messages
                    || (!out.entries.is_empty() && bytes + u64::from(entry.size) > u64::from(pull.max_bytes))
                {
                    break 'scan;
                }
                if pull.filter.may_match(entry.tag_hash) {
                    bytes += u64::from(entry.size);
                    out.entries.push((out.next_offset, entry));
                }
                out.next_offset += 1;
                scanned += 1;
            }
        }
        Ok(Some(out))
    }

    /// What a pull gets now, or the pull to park.
    fn pull(&mut self, pull: Pull) -> std::result::Result<Result<PullEntries>, Pull> {
        match self.collect(&pull) {
            Ok(Some(found)) if !found.entries.is_empty() || pull.long_poll.is_zero() => Ok(Ok(found)),
            Ok(Some(found)) => {
                // All filtered out: park past them rather than spin.
                let mut pull = pull;
                pull.offset = found.next_offset;
                Err(pull)
            }
            Ok(None) if pull.long_poll.is_zero() => {
                let (min, max) = self.cq().map(|cq| (cq.min_offset(), cq.next_offset())).unwrap_or((0, 0));
                Ok(Ok(PullEntries { entries: Vec::new(), next_offset: pull.offset, min_offset: min, max_offset: max }))
            }
            Ok(None) => Err(pull),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Parks `pull`; returns its id (for expiry) and where its answer comes.
    fn park(&mut self, pull: Pull) -> (u64, oneshot::Receiver<Result<PullEntries>>) {
        let (reply, rx) = oneshot::channel();
        let id = self.next_park_id;
        self.next_park_id += 1;
        self.parked.push(Parked { id, pull, reply });
        (id, rx)
    }

    /// Joins the active list (once until the next barrier).
    fn list(&mut self) {
        if !self.listed {
            self.listed = true;
            self.active.add(self.id);
        }
    }

    fn note_tail(&mut self) {
        match self.cq.as_ref().and_then(ConsumeQueue::tail_low) {
            None => self.tail_since = None,
            Some(_) if self.tail_since.is_none() => self.tail_since = Some(std::time::Instant::now()),
            Some(_) => {}
        }
    }

    fn wake_parked(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        let parked = std::mem::take(&mut self.parked);
        for mut waiting in parked {
            match self.collect(&waiting.pull) {
                Ok(Some(found)) if !found.entries.is_empty() => {
                    let _ = waiting.reply.send(Ok(found));
                }
                // Everything new was filtered out: keep waiting from past it.
                Ok(Some(found)) => {
                    waiting.pull.offset = found.next_offset;
                    self.parked.push(waiting);
                }
                Ok(None) => self.parked.push(waiting),
                Err(e) => {
                    let _ = waiting.reply.send(Err(e));
                }
            }
        }
    }

    fn expire(&mut self, id: u64) {
        if let Some(index) = self.parked.iter().position(|p| p.id == id) {
            let waiting = self.parked.swap_remove(index);
            let (min, max) = self.cq().map(|cq| (cq.min_offset(), cq.next_offset())).unwrap_or((0, 0));
            let _ = waiting.reply.send(Ok(PullEntries {
                entries: Vec::new(),
                next_offset: waiting.pull.offset,
                min_offset: min,
                max_offset: max,
            }));
        }
    }

    fn barrier(&mut self, msg: &Barrier) -> Result<Barriered> {
        self.listed = false;
        let far_back = self.cq.as_ref().and_then(ConsumeQueue::tail_low).is_some_and(|low| low < msg.replay_floor);
        let aged = far_back || self.tail_since.is_some_and(|since| since.elapsed() >= msg.max_tail_age);
        let mut tails = Vec::new();
        let written = match self.cq.as_mut() {
            Some(cq) if msg.force => cq.take_dirty(),
            // Written by the checkpoint off this thread (the writer's): with
            // 50,000 queues, 4,096 tail writes here held every append for
            // 100–130 ms once a second.
            Some(cq) if aged && msg.take_budget() => {
                tails.extend(cq.detach_tail().map(|tail| (self.id, tail)));
                Ok(cq.take_written())
            }
            Some(cq) => Ok(cq.take_written()),
            None => Ok(Vec::new()),
        };
        let files = match written {
            Ok(files) => files,
            Err(e) => {
                let reason = format!("cannot write consume queue {}: {e}", self.name);
                self.fail(reason.clone());
                return Err(Error::Poisoned(reason));
            }
        };
        self.note_tail();
        let unwritten_from = self.cq.as_ref().and_then(ConsumeQueue::tail_low);
        if unwritten_from.is_some() {
            // Still holding entries only in memory: visit again.
            self.list();
        }
        Ok(Barriered { files, unwritten_from, tails })
    }

    /// A detached tail's write is over (see [`ConsumeQueue::tail_written`]).
    fn tail_written(&mut self, tail: &TailWrite, ok: bool) {
        if let Some(cq) = self.cq.as_mut() {
            cq.tail_written(tail, ok);
        }
        self.note_tail();
        if !ok {
            // Unwritten again: the next checkpoint must visit this queue.
            self.list();
        }
    }

    fn retain(&mut self, log_min: u64) {
        self.log_min = log_min;
        if let Some(cq) = self.cq.as_mut() {
            if let Err(e) = cq.retain_from_log(log_min) {
                slog::warn!(self.logger, "consume-queue retention failed"; "queue" => &self.name, "error" => %e);
            }
        }
    }

    fn offset_at_time(&self, ts: i64) -> Result<u64> {
        let reader = self.reader.clone();
        // A binary search: a few dozen small page-cache reads at most.
        self.cq()?
            .offset_at_time(ts, |entry| {
                reader.read_raw(entry.log_offset, entry.size).ok().map(|rec| record::head(&rec).store_ts)
            })
            .map_err(|e| Error::io(format!("search {}", self.name), e))
    }

    fn destroy(&mut self) -> Result<()> {
        for waiting in self.parked.drain(..) {
            let _ = waiting.reply.send(Err(Error::TopicNotFound(self.name.clone())));
        }
        match self.cq.take() {
            Some(cq) => cq.destroy().map_err(|e| Error::io(format!("delete {}", self.dir.display()), e)),
            None => Ok(()),
        }
    }
}

/// One topic-queue's mailbox: pulls, barriers, retention, deletion (and
/// appends from callers outside a connection). Its state is shared with the
/// appends that reach the queue directly on this thread.
pub struct QueueActor {
    spec: Arc<QueueSpec>,
    state: Rc<RefCell<QueueState>>,
}

impl QueueActor {
    /// The actor of `spec`'s queue. Build it on the thread it runs on (the
    /// writer's): that is where the queue's state lives.
    pub fn new(spec: Arc<QueueSpec>) -> Self {
        let state = state_for(&spec);
        Self { spec, state }
    }
}

impl Actor for QueueActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1024);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.spec.stopped.store(true, Ordering::Release);
        let id = self.spec.id;
        STATES.with(|states| states.borrow_mut().remove(id));
    }
}

impl Handler<Store> for QueueActor {
    type Result = ();

    fn handle(&mut self, Store { batch, tag_hashes, reply }: Store, _: &mut Context<Self>) {
        let part = Part { spec: self.spec.clone(), records: batch.len() };
        fanout::produce_here(Produce { batch, tag_hashes, key_hashes: Vec::new(), parts: vec![part], reply });
    }
}

impl Handler<Pull> for QueueActor {
    type Result = ResponseFuture<Result<PullEntries>>;

    fn handle(&mut self, pull: Pull, _: &mut Context<Self>) -> Self::Result {
        let mut state = self.state.borrow_mut();
        match state.pull(pull) {
            Ok(found) => Box::pin(async move { found }),
            Err(pull) => {
                let (wait, cut_short) = (pull.long_poll, pull.cut_short.clone());
                let (id, mut rx) = state.park(pull);
                // The long poll's timer lives in the answer's own task and
                // goes with it. Not `ctx.run_later`: actix polls every item
                // of an actor's context on each message, and a timer per
                // parked pull stayed there for the whole wait even when an
                // append answered the pull at once, so every append paid
                // for every pull parked in the last long-poll span.
                let state = Rc::downgrade(&self.state);
                Box::pin(async move {
                    let stopping = async {
                        match cut_short {
                            Some(token) => token.cancelled_owned().await,
                            None => std::future::pending().await,
                        }
                    };
                    let answered = tokio::select! {
                        answer = tokio::time::timeout(wait, &mut rx) => answer.ok(),
                        () = stopping => None,
                    };
                    let answer = match answered {
                        Some(answer) => answer,
                        None => {
                            if let Some(state) = state.upgrade() {
                                state.borrow_mut().expire(id);
                            }
                            rx.await
                        }
                    };
                    answer.map_err(|_| Error::ShuttingDown)?
                })
            }
        }
    }
}

impl Handler<Range> for QueueActor {
    type Result = Result<(u64, u64)>;

    fn handle(&mut self, _: Range, _: &mut Context<Self>) -> Self::Result {
        self.state.borrow().cq().map(|cq| (cq.min_offset(), cq.next_offset()))
    }
}

impl Handler<Barrier> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: Barrier, _: &mut Context<Self>) {
        let answer = self.state.borrow_mut().barrier(&msg);
        msg.round.answer(answer);
    }
}

impl Handler<Retain> for QueueActor {
    type Result = ();

    fn handle(&mut self, msg: Retain, _: &mut Context<Self>) {
        self.state.borrow_mut().retain(msg.log_min);
    }
}

impl Handler<OffsetAtTime> for QueueActor {
    type Result = Result<u64>;

    fn handle(&mut self, msg: OffsetAtTime, _: &mut Context<Self>) -> Self::Result {
        self.state.borrow().offset_at_time(msg.ts)
    }
}

impl Handler<Destroy> for QueueActor {
    type Result = Result<()>;

    fn handle(&mut self, _: Destroy, ctx: &mut Context<Self>) -> Self::Result {
        self.spec.destroyed.store(true, Ordering::Release);
        ctx.stop();
        self.state.borrow_mut().destroy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_barrier_round_merges_every_share_and_answers_when_the_last_is_gone() {
        let (round, mut answer) = BarrierRound::start();
        let (a, b, unanswered) = (round.clone(), round.clone(), round.clone());
        drop(round);
        a.answer(Ok(Barriered { files: vec!["q0".into()], unwritten_from: Some(700), ..Barriered::default() }));
        b.answer(Ok(Barriered { files: vec!["q1".into()], unwritten_from: Some(300), ..Barriered::default() }));
        drop((a, b));
        assert!(answer.try_recv().is_err(), "a share is still out");
        // A queue that stopped drops its share unanswered.
        drop(unanswered);
        let merged = answer.try_recv().expect("answered").expect("no error");
        assert_eq!(merged.files, vec![PathBuf::from("q0"), PathBuf::from("q1")]);
        assert_eq!(merged.unwritten_from, Some(300));
    }

    #[test]
    fn slots_are_found_by_hint_or_id_and_a_stale_hint_finds_nothing_else() {
        let mut slots: Slots<&str> = Slots::default();
        let a = slots.open(10, usize::MAX, || "a");
        let b = slots.open(11, usize::MAX, || "b");
        assert_ne!(a, b);
        assert_eq!(slots.open(10, usize::MAX, || panic!("opened twice")), a);
        assert_eq!(slots.get(10, a), Some(&"a"));
        // A wrong hint falls back to the id.
        assert_eq!(slots.get(10, b), Some(&"a"));
        assert_eq!(slots.get(10, 999), Some(&"a"));
        slots.remove(10);
        assert_eq!(slots.get(10, a), None);
        // The freed slot is reused; the old id's hint must not reach the
        // new value.
        let c = slots.open(12, usize::MAX, || "c");
        assert_eq!(c, a);
        assert_eq!(slots.get(10, a), None);
        assert_eq!(slots.get(12, a), Some(&"c"));
        let mut ids = slots.ids();
        ids.sort_unstable();
        assert_eq!(ids, vec![11, 12]);
    }

    /// One checkpoint visit on this thread; its merged answer.
    fn visit(spec: &QueueSpec) -> Barriered {
        let (round, mut answer) = BarrierRound::start();
        let barrier = Barrier {
            force: false,
            max_tail_age: Duration::from_secs(3600),
            replay_floor: 0,
            budget: Arc::default(),
            round,
        };
        barrier_here(barrier, false, &spec.links.active);
        answer.try_recv().expect("answered").expect("no error")
    }

    /// A checkpoint may visit a queue between the admission of a send and
    /// the writer's answer to it. The entry that answer appends must still
    /// bring the queue to the next visit, or later checkpoints name a
    /// durable point past an entry that is only in memory, and a crash
    /// loses it.
    #[actix_rt::test]
    async fn an_entry_appended_after_a_visit_brings_its_queue_to_the_next() {
        use crate::actors::writer::{WriterActor, WriterConfig};
        use crate::store::commitlog::CommitLog;
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = crate::store::StorePaths::new(dir.path());
        paths.create_dirs().expect("dirs");
        let set = Arc::new(crate::store::segment::SegmentSet::new(paths.commitlog(), 65536));
        let backend = crate::io::IoBackend::Std(crate::io::std_io::StdIo::new(Arc::default()));
        let clock = Arc::new(crate::clock::SystemClock);
        let log = CommitLog::open(set.clone(), 0, 0, backend, None, clock).expect("open");
        let config = WriterConfig {
            flush: crate::config::FlushMode::Async,
            flush_interval: Duration::from_secs(3600),
            max_batch_messages: 1,
            max_batch_bytes: 1 << 20,
            log_cache_bytes: 0,
        };
        let writer = WriterActor::new(log, config, Arc::default(), crate::logging::discard()).start();
        let registry = crate::actors::Registry::new(writer, None, paths, 100, set, crate::logging::discard());
        let spec = registry.queue_spec("t", 0);
        assert_eq!(admit(&spec, 1).expect("admitted"), 0);
        let early = visit(&spec);
        assert_eq!((early.unwritten_from, early.tails.len()), (None, 0), "nothing appended yet");
        let pos = [RecordPos { log_offset: 4096, size: 100, store_ts: 1 }];
        let run = Written { first_offset: 0, positions: &pos, tag_hashes: &[0], key_hashes: &[], first_record: 0 };
        written(&spec, run, &mut Vec::new()).expect("written");
        assert_eq!(visit(&spec).unwritten_from, Some(4096), "the young entry holds the durable point");
        // Still only in memory: every later visit must see it too.
        assert_eq!(visit(&spec).unwritten_from, Some(4096));
    }

    #[test]
    fn a_failed_queue_fails_the_round() {
        let (round, mut answer) = BarrierRound::start();
        round.answer(Err(Error::Poisoned("disk".into())));
        round.answer(Ok(Barriered { files: vec!["q".into()], unwritten_from: None, ..Barriered::default() }));
        drop(round);
        assert!(matches!(answer.try_recv().expect("answered"), Err(Error::Poisoned(_))));
    }
}
