//! The syncer: a thread of its own that fdatasyncs the log beside the
//! writes. The writer asks (files written since, and the position they
//! reach); the syncer runs one fdatasync round after another for as long
//! as anything asked is not yet synced, and reports each round's end back
//! to the writer's thread, which answers what it covered.
//!
//! Rounds start here, not on the writer's thread: started from there, each
//! waited for the writer to take in the last one's completion (a thread
//! hop) while the disk idled — a quarter of its time under sync sends.
//! One round at a time, so a round's end means everything asked before it
//! began is on disk.

use crate::actors::writer::SyncedAt;
use crate::io::SyncFiles;
use parking_lot::{Condvar, Mutex};
use std::fs::File;
use std::io;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A round's end: everything asked up to `asked` is synced (or not).
pub(super) struct Synced {
    /// The last request the round covered.
    pub asked: u64,
    /// How long its fdatasyncs took (`None`: nothing needed one).
    pub took: Option<std::time::Duration>,
    /// Where the log stood when that request was made.
    pub at: SyncedAt,
    /// The round's outcome (a failure poisons the writer).
    pub result: io::Result<()>,
}

#[derive(Default)]
struct Asked {
    files: Vec<Arc<File>>,
    at: SyncedAt,
    /// Requests made so far (each `ask` counts one).
    asked: u64,
    /// Records written since the last round began.
    records: usize,
    stop: bool,
    /// What the syncer waits for: an ask wakes it only when it brings that.
    waiting: Waiting,
}

/// What the syncer thread waits for.
#[derive(Default, Clone, Copy)]
enum Waiting {
    /// Nothing: it is running a round, or about to.
    #[default]
    Nothing,
    /// Any ask.
    AnyAsk,
    /// As many records as the round before covered (until its patience
    /// runs out).
    Records(usize),
}

struct Shared {
    asked: Mutex<Asked>,
    wake: Condvar,
}

/// The syncer thread's handle; dropping it stops the thread once the
/// requests made are synced.
pub(super) struct Syncer {
    shared: Arc<Shared>,
}

impl Syncer {
    /// Starts the thread; each round's end goes to `done`.
    pub fn start(sync: SyncFiles, done: mpsc::UnboundedSender<Synced>) -> io::Result<Self> {
        let shared = Arc::new(Shared { asked: Mutex::new(Asked::default()), wake: Condvar::new() });
        let theirs = shared.clone();
        std::thread::Builder::new().name("brook-sync".into()).spawn(move || run(&theirs, sync, &done))?;
        Ok(Self { shared })
    }

    /// Asks for `files` to be synced up to `at`; returns the request's
    /// number, which the round that covers it reports (or a later one).
    pub fn ask(&self, files: Vec<Arc<File>>, at: SyncedAt, records: usize) -> u64 {
        let mut asked = self.shared.asked.lock();
        asked.records += records;
        for file in files {
            if !asked.files.iter().any(|f| Arc::ptr_eq(f, &file)) {
                asked.files.push(file);
            }
        }
        asked.at = at;
        asked.asked += 1;
        // A wake-up is a futex call here and a thread switch there: only
        // when it brings what the syncer waits for.
        let wanted = match asked.waiting {
            Waiting::Nothing => false,
            Waiting::AnyAsk => true,
            Waiting::Records(n) => asked.records >= n,
        };
        if wanted {
            asked.waiting = Waiting::Nothing;
            self.shared.wake.notify_one();
        }
        asked.asked
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.asked.lock().stop = true;
        self.shared.wake.notify_one();
    }
}

fn run(shared: &Shared, mut sync: SyncFiles, done: &mpsc::UnboundedSender<Synced>) {
    let mut synced = 0;
    let mut pace = Pace::default();
    loop {
        let (files, at, asked) = {
            let mut asked = shared.asked.lock();
            while asked.asked == synced && !asked.stop {
                asked.waiting = Waiting::AnyAsk;
                shared.wake.wait(&mut asked);
            }
            if asked.asked == synced {
                return; // stopping, nothing left
            }
            // The producers the last round answered are about to send
            // again: a round started at the first of them would leave the
            // rest a whole round to wait.
            let until = std::time::Instant::now() + pace.patience();
            while asked.records < pace.expected && !asked.stop {
                asked.waiting = Waiting::Records(pace.expected);
                if shared.wake.wait_until(&mut asked, until).timed_out() {
                    break;
                }
            }
            asked.waiting = Waiting::Nothing;
            pace.expected = std::mem::take(&mut asked.records);
            (std::mem::take(&mut asked.files), asked.at, asked.asked)
        };
        let began = std::time::Instant::now();
        let result = if files.is_empty() { Ok(()) } else { sync(&files) };
        let took = began.elapsed();
        pace.took(took);
        synced = asked;
        let took = (!files.is_empty()).then_some(took);
        if done.send(Synced { asked, at, result, took }).is_err() {
            return; // the writer is gone
        }
    }
}

/// The longest a round waits for the writes it expects, µs.
const MAX_PATIENCE_US: f64 = 1000.0;

/// How long a round waits for the writes it expects.
#[derive(Default)]
struct Pace {
    /// Records the last round covered: about as many come back.
    expected: usize,
    /// Smoothed fdatasync time, in µs.
    sync_us: f64,
}

impl Pace {
    /// Up to one round's time: a latecomer left out waits for this round
    /// and then its own, two; waiting for it costs the others at most one.
    /// (Measured on a virtual disk with 16/64/256 sync producers: waiting
    /// up to half a round gave 23k/43k/53k msgs/s, a whole one 25k/43k/52k,
    /// not waiting 19k/32k/41k.)
    fn patience(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.sync_us.min(MAX_PATIENCE_US) as u64)
    }

    fn took(&mut self, took: std::time::Duration) {
        let us = took.as_secs_f64() * 1e6;
        self.sync_us = if self.sync_us == 0.0 { us } else { self.sync_us * 0.9 + us * 0.1 };
    }
}

/// A `Sync` request's answer channel.
pub(super) type Marker = tokio::sync::oneshot::Sender<crate::error::Result<SyncedAt>>;

/// A group written under sync flush, its appends waiting for the round
/// that covers it.
pub(super) struct Unsynced {
    pub dones: Vec<(usize, super::AppendDone)>,
    pub positions: Vec<Vec<crate::store::commitlog::RecordPos>>,
}

impl Unsynced {
    /// The group's first byte.
    pub fn start(&self) -> u64 {
        self.positions.iter().flatten().map(|p| p.log_offset).min().unwrap_or(u64::MAX)
    }

    /// One past the group's last byte.
    pub fn end(&self) -> u64 {
        self.positions.iter().flatten().map(|p| p.log_offset + u64::from(p.size)).max().unwrap_or(0)
    }

    /// Answers each append with its records' positions.
    pub fn answer(self) {
        let mut positions = self.positions.into_iter();
        for (parts, done) in self.dones {
            let pos = match parts {
                1 => positions.next().unwrap_or_default(),
                _ => positions.by_ref().take(parts).flatten().collect(),
            };
            done(Ok(pos));
        }
    }
}

/// What waits for a round: a written group's appends, or a `Sync`.
pub(super) enum Waiter {
    Group(Unsynced),
    Marker(Marker),
}

/// Everything asked of the syncer and not yet answered, oldest first.
#[derive(Default)]
pub(super) struct Awaiting(std::collections::VecDeque<(u64, Waiter)>);

impl Awaiting {
    /// `waiter` is answered by the round covering request `asked`.
    pub fn push(&mut self, asked: u64, waiter: Waiter) {
        self.0.push_back((asked, waiter));
    }

    /// A round covering every request up to `asked` ended well: answers
    /// what it covered.
    /// Hands over, in order, every waiter the round that covered request
    /// `asked` settles.
    pub fn settle(&mut self, asked: u64, mut each: impl FnMut(Waiter)) {
        while self.0.front().is_some_and(|(n, _)| *n <= asked) {
            match self.0.pop_front() {
                Some((_, waiter)) => each(waiter),
                None => break,
            }
        }
    }

    /// Fails everything waiting (the writer is poisoned).
    pub fn fail_all(&mut self, msg: &str) {
        for (_, waiter) in self.0.drain(..) {
            fail(waiter, msg);
        }
    }
}

/// Fails one waiter (the writer is poisoned).
pub(super) fn fail(waiter: Waiter, msg: &str) {
    let err = || crate::error::Error::Poisoned(msg.to_string());
    match waiter {
        Waiter::Group(group) => group.dones.into_iter().for_each(|(_, done)| done(Err(err()))),
        Waiter::Marker(marker) => {
            let _ = marker.send(Err(err()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn at(write_pos: u64) -> SyncedAt {
        SyncedAt { write_pos, visible_to: write_pos, last_store_ts: 0 }
    }

    /// Asks made while a round runs share the next round, and rounds end in
    /// order: a round's end covers every request made before it began.
    #[tokio::test]
    async fn asks_during_a_round_share_the_next_and_ends_come_in_order() {
        let file = Arc::new(tempfile::tempfile().expect("file"));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let rounds = Arc::new(AtomicUsize::new(0));
        let counted = rounds.clone();
        let sync: SyncFiles = Box::new(move |_| {
            // The first round waits until the test lets it end.
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                let _ = release_rx.recv();
            }
            Ok(())
        });
        let (done, mut ends) = mpsc::unbounded_channel();
        let syncer = Syncer::start(sync, done).expect("start");
        assert_eq!(syncer.ask(vec![file.clone()], at(10), 1), 1);
        while rounds.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(syncer.ask(vec![file.clone()], at(20), 1), 2);
        assert_eq!(syncer.ask(vec![file.clone()], at(30), 1), 3);
        release_tx.send(()).expect("release");
        let first = ends.recv().await.expect("first round");
        assert_eq!((first.asked, first.at), (1, at(10)));
        let second = ends.recv().await.expect("second round");
        assert_eq!((second.asked, second.at), (3, at(30)), "both asks made meanwhile, in one round");
        assert_eq!(rounds.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn waiters_are_answered_by_the_round_that_covers_them() {
        let mut awaiting = Awaiting::default();
        let (tx1, mut rx1) = tokio::sync::oneshot::channel();
        let (tx2, mut rx2) = tokio::sync::oneshot::channel();
        awaiting.push(1, Waiter::Marker(tx1));
        awaiting.push(2, Waiter::Marker(tx2));
        awaiting.settle(1, |waiter| match waiter {
            Waiter::Group(group) => group.answer(),
            Waiter::Marker(marker) => {
                let _ = marker.send(Ok(at(10)));
            }
        });
        assert!(matches!(rx1.try_recv(), Ok(Ok(a)) if a == at(10)));
        assert!(rx2.try_recv().is_err(), "request 2 was made after round 1 began");
        awaiting.fail_all("broken");
        assert!(matches!(rx2.try_recv(), Ok(Err(crate::error::Error::Poisoned(_)))));
    }
}
