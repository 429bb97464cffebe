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
//!
//! The files follow the pipeline: [`spec`] (what a queue is made from),
//! [`slots`] (where states live), [`state`], [`append`] (offsets, then
//! entries), [`fanout`] (many queues' appends in one hop), [`pull`] (reads,
//! long polls) and [`barrier`] (checkpoint visits).

pub mod append;
pub mod barrier;
pub mod fanout;
pub mod idempotence;
pub mod pull;
pub mod slots;
pub mod spec;
pub mod state;

pub use append::Placed;
pub use barrier::{ActiveQueues, Barrier, BarrierRound, Barriered};
pub use pull::MAX_PULL_MESSAGES;
pub use spec::{QueueLinks, QueueSpec};
pub use state::QueueState;

use crate::error::{Error, Result};
use crate::filter::TagFilter;
use crate::store::consume_queue::CqEntry;
use actix::prelude::*;
use slots::{state_for, STATES};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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

/// Retention deleted log below `log_min`: drop consume-queue files that only
/// point there. Answers the queue's first offset before and after, so
/// retention can tell groups what they lost.
#[derive(Message)]
#[rtype(result = "Option<(u64, u64)>")]
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

/// Where in the log the message at queue offset `offset` is (`None` if
/// there is none: past the end, or already deleted).
#[derive(Message)]
#[rtype(result = "Option<u64>")]
pub struct LogOffsetOf {
    /// The queue offset.
    pub offset: u64,
}

/// Delete the queue's files and stop (topic deletion).
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct Destroy;

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
    type Result = Option<(u64, u64)>;

    fn handle(&mut self, msg: Retain, _: &mut Context<Self>) -> Self::Result {
        self.state.borrow_mut().retain(msg.log_min)
    }
}

impl Handler<LogOffsetOf> for QueueActor {
    type Result = Option<u64>;

    fn handle(&mut self, msg: LogOffsetOf, _: &mut Context<Self>) -> Self::Result {
        let state = self.state.borrow();
        let cq = state.cq().ok()?;
        if msg.offset < cq.min_offset() {
            return None;
        }
        cq.entry(msg.offset).ok().flatten().filter(|e| !e.is_hole()).map(|e| e.log_offset)
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
