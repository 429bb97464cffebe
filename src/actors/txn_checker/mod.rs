//! The TxnCheckerActor: the broker's half of transactional messages.
//!
//! A half message is stored in `RMQ_SYS_TRANS_HALF_TOPIC` (invisible, its
//! real topic and queue in properties). Its producer ends it with commit or
//! rollback; if no outcome arrives within its timeout, the checker asks a
//! live connection of the producer group — the sender's own if it is still
//! there — and asks again every `transaction_check_interval`, up to
//! `transaction_check_max` times, after which the message is parked in
//! `TRANS_CHECK_MAX_TIME_TOPIC` and never delivered.
//!
//! Every step is an op record in `RMQ_SYS_TRANS_OP_HALF_TOPIC` (body: the
//! half's log offset, then a kind byte). A commit writes `commit` *before*
//! the visible copy and `done` after it, so a crash between the two is
//! recognised at the next start: the copy (which carries the half's log
//! offset) is looked for right after the `commit` record and written only if
//! it is missing — committed messages are delivered exactly once whatever
//! moment brookd is killed at. The progress file holds the oldest
//! unresolved half, so a restart reads only halves from there and the op
//! records written since, not the whole log.
//!
//! The actor owns its state. Every operation on it (recovery, a tick, a
//! request) is asynchronous — it reads and writes the log — so the actor
//! lends the state to that operation's future and blocks its own context
//! until the future hands it back (`ctx.wait`, `AtomicResponse`): requests,
//! ticks and recovery run one at a time, in order, and nothing is answered
//! from a half-built table.//!
//! Files: `checker` (the state and each operation on it), `recover`
//! (rebuilding the state at start, finishing interrupted commits).

mod checker;
mod recover;

use crate::actors::appender::Appender;
use crate::actors::producer_registry::ProducerRegistry;
use crate::actors::queue_registry::QueueRegistry;
use crate::error::{Error, Result};
use crate::store::progress::ProgressFile;
use actix::prelude::*;
use brook_proto::request::{TxnOutcome, TxnReport};
use checker::{Checker, Counts};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How often pending halves are looked at.
const TICK: Duration = Duration::from_millis(100);

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct TxnConfig {
    /// Wait for an outcome before the first check, ms.
    pub timeout_ms: u64,
    /// Between checks, ms.
    pub check_interval_ms: u64,
    /// Checks before giving up.
    pub check_max: u32,
}

/// End a half message (from its producer, or a check's answer).
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct End {
    /// Producer group.
    pub group: String,
    /// The half's log offset (from its id).
    pub log_offset: u64,
    /// The outcome.
    pub outcome: TxnOutcome,
}

/// Pending halves and counts.
#[derive(Message)]
#[rtype(result = "TxnReport")]
pub struct Report;

/// The checker.
pub struct TxnCheckerActor {
    /// The state; `None` only while an operation holds it, and the context
    /// handles nothing else until that operation gives it back.
    checker: Option<Checker>,
}

/// An operation's future: it owns the state and gives it back with its
/// outcome.
type Lent<R> = std::pin::Pin<Box<dyn std::future::Future<Output = (Checker, R)>>>;

impl TxnCheckerActor {
    /// A checker resuming from `progress` (its stored values).
    pub fn new(
        registry: Arc<QueueRegistry>,
        appender: Appender,
        producers: Arc<ProducerRegistry>,
        progress: (Arc<ProgressFile>, [u64; crate::store::progress::MAX_VALUES]),
        advertised: Arc<OnceLock<SocketAddr>>,
        config: TxnConfig,
        logger: &slog::Logger,
    ) -> Self {
        let (file, values) = progress;
        let checker = Checker {
            registry,
            appender,
            producers,
            progress: file,
            advertised,
            config,
            pending: BTreeMap::new(),
            half_next: values[0],
            counts: Counts { committed: values[1], rolled_back: values[2], checked: values[3], expired: values[4] },
            recent: BTreeMap::new(),
            recent_order: VecDeque::new(),
            logger: logger.new(slog::o!("actor" => "txn_checker")),
        };
        Self { checker: Some(checker) }
    }

    /// A slave's checker: it checks nothing (its master does; outcomes
    /// reach the slave as op records in the log).
    #[must_use]
    pub fn standby(mut self) -> Self {
        self.checker = None;
        self
    }

    /// Lends the state to `op` and takes it back when `op` is done; the
    /// context handles nothing else meanwhile. The answer is `op`'s, or
    /// `Busy` in the one case the state is out (never, while the context
    /// waits).
    fn lend<R: 'static>(
        &mut self,
        op: impl FnOnce(Checker) -> Lent<R>,
        missing: impl FnOnce() -> R + 'static,
    ) -> AtomicResponse<Self, R> {
        let Some(checker) = self.checker.take() else {
            return AtomicResponse::new(Box::pin(actix::fut::ready(missing())));
        };
        AtomicResponse::new(Box::pin(op(checker).into_actor(self).map(|(checker, answer), act, _| {
            act.checker = Some(checker);
            answer
        })))
    }

    /// Runs `op` on the state with the context waiting for it (start-up
    /// recovery and ticks, which nobody awaits).
    fn wait_on(&mut self, ctx: &mut Context<Self>, op: impl FnOnce(Checker) -> Lent<()>) {
        if let Some(checker) = self.checker.take() {
            ctx.wait(op(checker).into_actor(self).map(|(checker, ()), act, _| act.checker = Some(checker)));
        }
    }
}

impl Actor for TxnCheckerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.wait_on(ctx, |mut checker| {
            Box::pin(async move {
                if let Err(e) = checker.recover().await {
                    slog::error!(checker.logger, "transaction recovery failed"; "error" => %e);
                }
                (checker, ())
            })
        });
        // A tick that runs long delays the next: the interval fires only
        // once the context stops waiting.
        ctx.run_interval(TICK, |act, ctx| {
            act.wait_on(ctx, |mut checker| {
                Box::pin(async move {
                    if let Err(e) = checker.ingest().await {
                        slog::warn!(checker.logger, "cannot read half messages"; "error" => %e);
                    }
                    checker.check_due().await;
                    (checker, ())
                })
            });
        });
    }
}

impl Handler<End> for TxnCheckerActor {
    type Result = AtomicResponse<Self, Result<()>>;

    fn handle(&mut self, msg: End, _: &mut Context<Self>) -> Self::Result {
        self.lend(
            |mut checker| {
                Box::pin(async move {
                    // The half may have been stored a moment ago: take it in first.
                    let ended = match checker.ingest().await {
                        Ok(()) => checker.end(&msg.group, msg.log_offset, msg.outcome).await,
                        Err(e) => Err(e),
                    };
                    (checker, ended)
                })
            },
            || Err(Error::Busy("transaction checker is busy".into())),
        )
    }
}

impl Handler<Report> for TxnCheckerActor {
    type Result = AtomicResponse<Self, TxnReport>;

    fn handle(&mut self, _: Report, _: &mut Context<Self>) -> Self::Result {
        self.lend(
            |mut checker| {
                Box::pin(async move {
                    if let Err(e) = checker.ingest().await {
                        slog::warn!(checker.logger, "cannot read half messages"; "error" => %e);
                    }
                    let report = checker.report();
                    (checker, report)
                })
            },
            TxnReport::default,
        )
    }
}
