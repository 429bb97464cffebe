//! The WriterActor: the one owner of the commit log.
//!
//! Appends queue up in the mailbox and in `pending`. Whenever the log is idle
//! the actor takes everything waiting (up to `max_batch_messages` /
//! `max_batch_bytes`), lays it out, and hands one job to the io backend — one
//! vectored write and, in sync-flush mode, one fdatasync per touched segment —
//! then answers every append of the group. While a group is on disk the log is
//! out of the actor (`log: None`) and the next group gathers: that is group
//! commit. In async-flush mode appends are answered after the write, and
//! fdatasyncs — every `flush_interval_ms`, and for a checkpoint's `Sync` —
//! run beside the writes on the blocking pool, one at a time, while the
//! next groups keep going to disk.
//!
//! A failed write or fdatasync poisons the writer: the group and everything
//! after it fail, and nothing is retried (a failed fsync may have dropped
//! dirty pages the kernel will never report again). A restart recovers.

use crate::config::FlushMode;
use crate::error::{Error, Result};
use crate::store::commitlog::{AppendBatch, CommitLog, RecordPos};
use actix::prelude::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Called once with where the batch's records landed (or why not).
pub type AppendDone = Box<dyn FnOnce(Result<Vec<RecordPos>>) + Send>;

/// Append a batch of encoded records.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Append {
    /// The records.
    pub batch: AppendBatch,
    /// Completion callback, run on the writer's thread.
    pub done: AppendDone,
}

/// Drain everything queued so far, fdatasync, and answer with the write
/// position (used at shutdown and by tests).
#[derive(Message)]
#[rtype(result = "Result<SyncedAt>")]
pub struct Sync;

/// Where the log stood after a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncedAt {
    /// One past the last written byte.
    pub write_pos: u64,
    /// Store time of the last record.
    pub last_store_ts: i64,
}

/// Group-commit counters, shared with benches and tests.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Groups written.
    pub groups: AtomicU64,
    /// Records written.
    pub records: AtomicU64,
    /// Append requests answered.
    pub appends: AtomicU64,
}

/// Limits and mode of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Sync or async flush.
    pub flush: FlushMode,
    /// Async flush period.
    pub flush_interval: Duration,
    /// Most appends per group.
    pub max_batch_messages: usize,
    /// Most bytes per group.
    pub max_batch_bytes: usize,
}

type Marker = oneshot::Sender<Result<SyncedAt>>;

/// A sync beside the writes (async flush): the files to fdatasync, and who
/// waits for it with what to answer.
#[derive(Default)]
struct Detached {
    files: Vec<Arc<std::fs::File>>,
    markers: Vec<Marker>,
    at: Option<SyncedAt>,
}

enum Pending {
    Append(Append),
    Sync(Marker),
}

/// The actor owning the commit log.
pub struct WriterActor {
    log: Option<CommitLog>,
    config: WriterConfig,
    pending: VecDeque<Pending>,
    poisoned: Option<String>,
    flush_due: bool,
    position: u64,
    last_store_ts: i64,
    stats: Arc<WriterStats>,
    io_stats: Arc<crate::io::IoStats>,
    /// A detached sync is running.
    syncing: bool,
    /// What the next detached sync covers (gathered while one runs).
    next_sync: Option<Detached>,
    logger: slog::Logger,
}

impl WriterActor {
    /// A writer over `log`.
    pub fn new(log: CommitLog, config: WriterConfig, stats: Arc<WriterStats>, logger: slog::Logger) -> Self {
        Self {
            position: log.write_pos(),
            io_stats: log.io_stats(),
            syncing: false,
            next_sync: None,
            log: Some(log),
            config,
            pending: VecDeque::new(),
            poisoned: None,
            flush_due: false,
            last_store_ts: 0,
            stats,
            logger,
        }
    }

    fn poisoned_error(&self) -> Option<Error> {
        self.poisoned.clone().map(Error::Poisoned)
    }

    /// Takes the next group off `pending`: appends up to the limits, plus a
    /// sync marker right behind them (which makes the group sync).
    fn take_group(&mut self) -> (Vec<Append>, Vec<Marker>) {
        let mut appends = Vec::new();
        let mut markers = Vec::new();
        let mut bytes = 0;
        while let Some(front) = self.pending.front() {
            match front {
                Pending::Append(a) => {
                    if !appends.is_empty()
                        && (appends.len() >= self.config.max_batch_messages
                            || bytes + a.batch.buf.len() > self.config.max_batch_bytes)
                    {
                        break;
                    }
                    bytes += a.batch.buf.len();
                    if let Some(Pending::Append(a)) = self.pending.pop_front() {
                        appends.push(a);
                    }
                }
                Pending::Sync(_) => {
                    if let Some(Pending::Sync(tx)) = self.pending.pop_front() {
                        markers.push(tx);
                    }
                    // Appends behind a marker belong to the next group.
                    break;
                }
            }
        }
        (appends, markers)
    }

    fn synced_at(&self) -> SyncedAt {
        SyncedAt { write_pos: self.position, last_store_ts: self.last_store_ts }
    }

    /// Async flush: everything written so far gets an fdatasync beside the
    /// writes, and `markers` are answered once it (and any before it) is
    /// done. Needs the log at rest, so every write handed out is complete.
    fn detach_sync(&mut self, markers: Vec<Marker>, ctx: &mut Context<Self>) {
        let files = self.log.as_mut().map(CommitLog::take_unsynced).unwrap_or_default();
        let at = self.synced_at();
        let next = self.next_sync.get_or_insert_with(Detached::default);
        for file in files {
            if !next.files.iter().any(|f| Arc::ptr_eq(f, &file)) {
                next.files.push(file);
            }
        }
        next.markers.extend(markers);
        next.at = Some(at);
        self.start_detached(ctx);
    }

    /// Starts the gathered detached sync unless one is running: one at a
    /// time, so a marker is answered only when every sync before it is done.
    fn start_detached(&mut self, ctx: &mut Context<Self>) {
        if self.syncing {
            return;
        }
        let Some(Detached { files, markers, at }) = self.next_sync.take() else {
            return;
        };
        self.syncing = true;
        let work = crate::io::sync_detached(files, self.io_stats.clone());
        ctx.spawn(work.into_actor(self).map(move |result, act, ctx| {
            act.syncing = false;
            match (result, at) {
                (Ok(()), Some(at)) => markers.into_iter().for_each(|m| {
                    let _ = m.send(Ok(at));
                }),
                (Ok(()), None) => {}
                (Err(e), _) => {
                    let msg = act.poison("commit-log fdatasync failed", &e);
                    markers.into_iter().for_each(|m| {
                        let _ = m.send(Err(Error::Poisoned(msg.clone())));
                    });
                }
            }
            act.start_detached(ctx);
            act.dispatch(ctx);
        }));
    }

    /// Refuses every write from now on; returns the reason.
    fn poison(&mut self, what: &str, e: &std::io::Error) -> String {
        let msg = format!("{what}: {e}");
        slog::crit!(self.logger, "writer poisoned; refusing all writes until restart"; "error" => %msg);
        self.poisoned = Some(msg.clone());
        msg
    }

    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.log.is_none() {
            return; // a group is on disk; the next one keeps gathering
        }
        if let Some(err) = self.poisoned_error() {
            self.fail_pending(&err);
            return;
        }
        let detached = self.config.flush == FlushMode::Async;
        let dirty = self.log.as_ref().is_some_and(CommitLog::is_dirty);
        if detached && self.flush_due {
            self.flush_due = false;
            if dirty {
                self.detach_sync(Vec::new(), ctx);
            }
        }
        if self.pending.is_empty() && !(self.flush_due && dirty) {
            return;
        }
        let (appends, markers) = self.take_group();
        if detached && appends.is_empty() {
            // Only a marker: nothing to write first.
            self.detach_sync(markers, ctx);
            return self.dispatch(ctx);
        }
        let sync = !detached && (self.config.flush == FlushMode::Sync || !markers.is_empty() || self.flush_due);
        self.flush_due = false;
        let Some(mut log) = self.log.take() else {
            return;
        };
        let (batches, dones): (Vec<_>, Vec<_>) = appends.into_iter().map(|a| (a.batch, a.done)).unzip();
        let records: usize = batches.iter().map(AppendBatch::len).sum();
        let work = async move {
            let result = log.write_group(batches, sync).await;
            (log, result)
        };
        ctx.spawn(work.into_actor(self).map(move |(log, result), act, ctx| {
            act.position = log.write_pos();
            act.log = Some(log);
            match result {
                Ok(positions) => {
                    act.stats.groups.fetch_add(1, Ordering::Relaxed);
                    act.stats.records.fetch_add(records as u64, Ordering::Relaxed);
                    act.stats.appends.fetch_add(dones.len() as u64, Ordering::Relaxed);
                    if let Some(ts) = positions.iter().flatten().map(|p| p.store_ts).max() {
                        act.last_store_ts = act.last_store_ts.max(ts);
                    }
                    for (done, pos) in dones.into_iter().zip(positions) {
                        done(Ok(pos));
                    }
                    if detached && !markers.is_empty() {
                        act.detach_sync(markers, ctx);
                    } else {
                        let at = act.synced_at();
                        for marker in markers {
                            let _ = marker.send(Ok(at));
                        }
                    }
                }
                Err(e) => {
                    let msg = act.poison("commit-log write failed", &e);
                    for done in dones {
                        done(Err(Error::Poisoned(msg.clone())));
                    }
                    for marker in markers {
                        let _ = marker.send(Err(Error::Poisoned(msg.clone())));
                    }
                }
            }
            act.dispatch(ctx);
        }));
    }

    fn fail_pending(&mut self, err: &Error) {
        let msg = err.to_string();
        for item in self.pending.drain(..) {
            match item {
                Pending::Append(a) => (a.done)(Err(Error::Poisoned(msg.clone()))),
                Pending::Sync(tx) => {
                    let _ = tx.send(Err(Error::Poisoned(msg.clone())));
                }
            }
        }
    }
}

impl Actor for WriterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Appends arrive with do_send from queue actors; the bound matters
        // only for `send` callers, which get backpressure.
        ctx.set_mailbox_capacity(4096);
        if let Some(log) = &self.log {
            slog::info!(self.logger, "writer started"; "backend" => log.backend_name(),
                "write_pos" => log.write_pos(), "flush" => ?self.config.flush);
        }
        if self.config.flush == FlushMode::Async {
            ctx.run_interval(self.config.flush_interval, |act, ctx| {
                act.flush_due = true;
                act.dispatch(ctx);
            });
        }
    }
}

impl Handler<Append> for WriterActor {
    type Result = ();

    fn handle(&mut self, msg: Append, ctx: &mut Context<Self>) {
        if let Some(err) = self.poisoned_error() {
            (msg.done)(Err(err));
            return;
        }
        self.pending.push_back(Pending::Append(msg));
        self.dispatch(ctx);
    }
}

impl Handler<Sync> for WriterActor {
    type Result = ResponseFuture<Result<SyncedAt>>;

    fn handle(&mut self, _: Sync, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.pending.push_back(Pending::Sync(tx));
        self.dispatch(ctx);
        Box::pin(async move { rx.await.map_err(|_| Error::ShuttingDown)? })
    }
}
