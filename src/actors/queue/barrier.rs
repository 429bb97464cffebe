//! Checkpoint visits: a [`Barrier`] reaches every queue (or the active
//! ones) on the queues' thread, each answers into one [`BarrierRound`], and
//! the checkpoint learns which consume-queue files to sync and how far back
//! entries still held only in memory reach.

use crate::actors::queue::slots::STATES;
use crate::actors::queue::state::QueueState;
use crate::error::{Error, Result};
use crate::store::consume_queue::{ConsumeQueue, TailWrite};
use actix::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

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
    /// The producer table's snapshot and the change it holds, if it changed
    /// since the last one saved (taken once per visit, by the fanout).
    pub producers: Option<(u64, Vec<u8>)>,
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

    pub(super) fn answer(&self, answer: Result<Barriered>) {
        let Ok(mut merged) = self.merged.lock() else {
            return;
        };
        match (&mut *merged, answer) {
            (Ok(all), Ok(one)) => {
                all.files.extend(one.files);
                all.tails.extend(one.tails);
                if one.producers.is_some() {
                    all.producers = one.producers;
                }
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
    pub(super) fn add(&self, queue: u64) {
        if let Ok(mut list) = self.0.lock() {
            list.push(queue);
        }
    }

    pub(super) fn take(&self) -> Vec<u64> {
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
/// The visits run in slices of `VISITS_PER_SLICE` queues (about half a
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

impl QueueState {
    pub(super) fn barrier(&mut self, msg: &Barrier) -> Result<Barriered> {
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
            // The tail stays in memory and the log holds every entry: the
            // checkpoint fails for space and recovery rebuilds from the log.
            Err(e) if crate::io::is_out_of_space(&e) => {
                self.list();
                return Err(Error::io(format!("write consume queue {}", self.name), e));
            }
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
        Ok(Barriered { files, unwritten_from, tails, producers: None })
    }

    /// A detached tail's write is over (see [`ConsumeQueue::tail_written`]).
    pub(super) fn tail_written(&mut self, tail: &TailWrite, ok: bool) {
        if let Some(cq) = self.cq.as_mut() {
            cq.tail_written(tail, ok);
        }
        self.note_tail();
        if !ok {
            // Unwritten again: the next checkpoint must visit this queue.
            self.list();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::queue::append::{admit, written, Written};
    use crate::actors::queue::spec::QueueSpec;
    use crate::store::commitlog::RecordPos;

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
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = crate::store::StorePaths::new(dir.path());
        paths.create_dirs().expect("dirs");
        let set = Arc::new(crate::store::segment::SegmentSet::new(paths.commitlog(), 65536));
        let (writer, stats) = crate::actors::writer::test_writer(set.clone());
        let registry = crate::actors::queue_registry::QueueRegistry::new(
            (writer, stats),
            None,
            paths,
            100,
            set,
            crate::logging::discard(),
        );
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
