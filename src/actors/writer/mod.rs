//! The WriterActor: the one owner of the commit log.
//!
//! Appends queue up in the mailbox and in `pending`. Whenever the log is idle
//! the actor takes everything waiting (up to `max_batch_messages` /
//! `max_batch_bytes`), lays it out, and writes it: a group of at most
//! `store.inline_write_max_bytes` with `pwritev` right here (a small
//! buffered write costs less than the backend's hop to another thread and
//! back, see `CommitLog::with_inline_writes`), a larger one as one vectored
//! write on the io backend, the log out of the actor (`log: None`) while
//! the next group gathers.
//!
//! fdatasyncs run beside the writes on the syncer ([`syncer`]), a thread of
//! its own, one round at a time, each covering everything written before
//! it began. Under sync flush a group's appends are answered when the
//! round covering it ends, so the groups written while one round runs
//! share the next: that is group commit. Under async flush appends are
//! answered after the write, and rounds run every `flush_interval_ms` and
//! for each `Sync` (checkpoints, shutdown), which is answered once
//! everything written before it is on disk.
//!
//! One exception: a lone sync append — the syncer idle, nothing else
//! waiting or on its way, the last round covering no other — is synced
//! right here and answered at once. With no group to gather, the syncer's
//! two thread hops (there and back) were most of such a send's time beyond
//! the disk's; whatever arrives meanwhile waits one fdatasync for the
//! thread and then goes the usual way.
//!
//! A failed write or fdatasync poisons the writer: the group and everything
//! after it fail, everything waiting for a round fails, and nothing is
//! retried (a failed fsync may have dropped dirty pages the kernel will
//! never report again). A restart recovers. A group refused for space is
//! the exception: the log is left as it was, and the writer refuses appends
//! at once until the disk has room again (see `disk_full`).

mod cache_drops;
mod disk_full;
pub mod idle_poll;
mod replica;
mod rounds;
mod stats;
mod syncer;

pub use replica::{ReplicaGateConfig, ReplicasAdvanced, Replicate, ReplicatedTo};
pub use stats::WriterStats;

use crate::config::FlushMode;
use crate::error::{Error, Result};
use crate::io::SyncFiles;
use crate::store::commitlog::{AppendBatch, CommitLog, GroupError, RecordPos};
use crate::store::segment::SegmentSet;
use actix::prelude::*;
use cache_drops::CacheDrops;
use disk_full::{CheckSpace, DiskFull};
use replica::ReplicaGate;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use syncer::{Awaiting, Marker, Synced, Syncer, Unsynced, Waiter};
use tokio::sync::{mpsc, oneshot};

/// Called once with where the batches' records landed, in order (or why
/// not).
pub type AppendDone = Box<dyn FnOnce(Result<Vec<RecordPos>>) + Send>;

/// Append batches of encoded records, written back to back.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Append {
    /// The records. Several queues' batches travel as one append without
    /// being copied into one buffer: the write is vectored anyway.
    pub batches: Vec<AppendBatch>,
    /// Completion callback, run on the writer's thread.
    pub done: AppendDone,
}

impl Append {
    fn bytes(&self) -> usize {
        self.batches.iter().map(|b| b.buf.len()).sum()
    }
}

/// Drain everything queued so far, fdatasync, and answer with the write
/// position (used at shutdown and by tests).
#[derive(Message)]
#[rtype(result = "Result<SyncedAt>")]
pub struct Sync;

/// Where the log stood after a sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncedAt {
    /// One past the last written byte.
    pub write_pos: u64,
    /// Every record below this is in its queue (readable, its key handed
    /// to the indexer): `write_pos`, unless sync replication holds written
    /// records back from their queues until their slaves have them.
    pub visible_to: u64,
    /// Store time of the last record.
    pub last_store_ts: i64,
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
    /// Newest log bytes left in the page cache after an fdatasync (0: all).
    pub log_cache_bytes: u64,
    /// Free bytes the disk must have again before writes resume after it
    /// filled up.
    pub resume_free_bytes: u64,
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
    /// Set while the disk is full: appends are refused at once.
    full: Option<DiskFull>,
    flush_due: bool,
    position: u64,
    last_store_ts: i64,
    stats: Arc<WriterStats>,
    /// The thread that fdatasyncs beside the writes.
    syncer: Syncer,
    /// The last request made of it, and the last whose round ended: equal
    /// when it is idle.
    asked: u64,
    settled: u64,
    /// Appends the last round answered (1: sends arrive one at a time).
    last_round_appends: usize,
    /// fdatasyncs of a lone append, run here.
    own_sync: SyncFiles,
    /// Its rounds' ends, until the actor starts listening.
    synced: Option<mpsc::UnboundedReceiver<Synced>>,
    /// What waits for a round.
    awaiting: Awaiting,
    /// Which of the log's pages the next sync drops from the page cache.
    drops: CacheDrops,
    /// Groups held back until their replicas have them (sync replication).
    gate: ReplicaGate,
    /// A slave's replicated bytes waiting for the log.
    replicas: VecDeque<Replicate>,
    /// The log's segments (the log itself is away while a group is written).
    segments: Arc<SegmentSet>,
    logger: slog::Logger,
}

impl WriterActor {
    /// A writer over `log`, with its syncer thread.
    pub fn new(
        log: CommitLog,
        config: WriterConfig,
        stats: Arc<WriterStats>,
        logger: slog::Logger,
    ) -> std::io::Result<Self> {
        let (done, synced) = mpsc::unbounded_channel();
        let syncer = Syncer::start(log.sync_files(), done)?;
        let own_sync = log.sync_files();
        stats.write_pos.store(log.write_pos(), Ordering::Relaxed);
        Ok(Self {
            position: log.write_pos(),
            // Pages of an earlier run are left to the kernel: only what this
            // writer wrote is dropped.
            drops: CacheDrops::from(log.write_pos().saturating_sub(config.log_cache_bytes)),
            segments: log.segment_set().clone(),
            syncer,
            asked: 0,
            settled: 0,
            last_round_appends: 0,
            own_sync,
            synced: Some(synced),
            awaiting: Awaiting::default(),
            gate: ReplicaGate::default(),
            replicas: VecDeque::new(),
            log: Some(log),
            config,
            pending: VecDeque::new(),
            poisoned: None,
            full: None,
            flush_due: false,
            last_store_ts: 0,
            stats,
            logger,
        })
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
                    let size = a.bytes();
                    if !appends.is_empty()
                        && (appends.len() >= self.config.max_batch_messages
                            || bytes + size > self.config.max_batch_bytes)
                    {
                        break;
                    }
                    bytes += size;
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
        self.stats.queued.store(self.pending.len() as u64, Ordering::Relaxed);
        (appends, markers)
    }

    fn synced_at(&self) -> SyncedAt {
        SyncedAt { write_pos: self.position, visible_to: self.position, last_store_ts: self.last_store_ts }
    }

    /// Refuses every write from now on; returns the reason.
    fn poison(&mut self, what: &str, e: &dyn std::fmt::Display) -> String {
        let msg = format!("{what}: {e}");
        slog::crit!(self.logger, "writer poisoned; refusing all writes until restart"; "error" => %msg);
        self.poisoned = Some(msg.clone());
        *self.stats.poisoned.lock() = Some(msg.clone());
        // Nothing written before is answered as synced any more: a later
        // round could not vouch for pages an earlier failure dropped.
        self.awaiting.fail_all(&msg);
        self.gate.fail_all(&msg);
        msg
    }

    /// Says so, while the active segment still has room, when the next
    /// one could not be prepared: the disk will be full at the roll unless
    /// space is freed first.
    fn report_prepare_failure(&self, log: &mut CommitLog) {
        if let Some((base, e)) = log.prepare_failure() {
            slog::warn!(self.logger, "cannot prepare the next commit-log segment; writes will be refused when the \
                active one fills unless space is freed first";
                "segment" => base, "active_room_bytes" => log.active_room(), "error" => %e);
        }
    }

    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.log.is_none() {
            return; // a group is on disk; the next one keeps gathering
        }
        if let Some(err) = self.poisoned_error() {
            self.fail_pending(&err);
            return;
        }
        if let Some(replicated) = self.replicas.pop_front() {
            return self.write_replicated(replicated, ctx);
        }
        if let Some(full) = self.full {
            self.refuse_appends(full);
        }
        let dirty = self.log.as_ref().is_some_and(CommitLog::is_dirty);
        if self.flush_due {
            self.flush_due = false;
            if dirty {
                self.detach_sync(Vec::new());
            }
        }
        if self.pending.is_empty() {
            return;
        }
        let (appends, markers) = self.take_group();
        if appends.is_empty() {
            // Only a marker: nothing to write first.
            self.detach_sync(markers);
            return self.dispatch(ctx);
        }
        let Some(mut log) = self.log.take() else {
            return;
        };
        let mut batches = Vec::with_capacity(appends.len());
        let mut dones = Vec::with_capacity(appends.len());
        for a in appends {
            dones.push((a.batches.len(), a.done));
            batches.extend(a.batches);
        }
        let records: usize = batches.iter().map(AppendBatch::len).sum();
        let work = async move {
            // The fdatasync (sync flush) runs beside, after the write.
            let result = log.write_group(batches, false).await;
            (log, result)
        };
        ctx.spawn(work.into_actor(self).map(move |(mut log, result), act, ctx| {
            act.position = log.write_pos();
            act.stats.write_pos.store(act.position, Ordering::Relaxed);
            act.stats.moved();
            act.report_prepare_failure(&mut log);
            act.log = Some(log);
            act.group_done(result, (dones, markers, records));
            act.dispatch(ctx);
        }));
    }

    /// A group is written (or refused): answers its appends and markers.
    fn group_done(
        &mut self,
        result: std::result::Result<Vec<Vec<RecordPos>>, GroupError>,
        (dones, markers, records): (Vec<(usize, AppendDone)>, Vec<Marker>, usize),
    ) {
        match result {
            Ok(positions) => {
                self.stats.groups.fetch_add(1, Ordering::Relaxed);
                self.stats.records.fetch_add(records as u64, Ordering::Relaxed);
                self.stats.appends.fetch_add(dones.len() as u64, Ordering::Relaxed);
                self.stats.group_records.observe(records as u64);
                if let Some(ts) = positions.iter().flatten().map(|p| p.store_ts).max() {
                    self.last_store_ts = self.last_store_ts.max(ts);
                }
                let group = Unsynced { dones, positions };
                if self.config.flush == FlushMode::Sync && self.alone(&group) {
                    self.sync_here(markers, group);
                } else if self.config.flush == FlushMode::Sync {
                    // Answered by the next fdatasync to start, which covers
                    // every group written while the one before it ran.
                    self.detach_sync_with(markers, Some(group), records);
                } else {
                    self.release(group);
                    if !markers.is_empty() {
                        self.detach_sync(markers);
                    }
                }
            }
            Err(GroupError::OutOfSpace(e)) => {
                // Nothing of the group is in the log: refused, and the
                // markers' sync covers what was written before it.
                let full = self.enter_full(&e);
                for (_, done) in dones {
                    done(Err(full.error()));
                }
                if !markers.is_empty() {
                    self.detach_sync(markers);
                }
            }
            Err(GroupError::Failed(e)) => {
                let msg = self.poison("commit-log write failed", &e);
                for (_, done) in dones {
                    done(Err(Error::Poisoned(msg.clone())));
                }
                markers.into_iter().for_each(|m| syncer::fail(Waiter::Marker(m), &msg));
            }
        }
    }

    fn fail_pending(&mut self, err: &Error) {
        let msg = err.to_string();
        for replicated in self.replicas.drain(..) {
            (replicated.done)(Err(Error::Poisoned(msg.clone())));
        }
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
        if let Some(synced) = self.synced.take() {
            ctx.add_stream(futures::stream::unfold(synced, |mut rx| async move { rx.recv().await.map(|s| (s, rx)) }));
        }
        if let Some(log) = &self.log {
            slog::info!(self.logger, "writer started"; "backend" => log.backend_name(),
                "write_pos" => log.write_pos(), "flush" => ?self.config.flush);
        }
        // Through the mailbox: every append that was already on its way
        // when the disk filled up is refused before writes resume, so a
        // queue never sees a run written after one refused.
        ctx.run_interval(Duration::from_secs(1), |act, ctx| {
            if act.full.is_some() {
                ctx.address().do_send(CheckSpace);
            }
        });
        if self.config.flush == FlushMode::Async {
            ctx.run_interval(self.config.flush_interval, |act, ctx| {
                act.flush_due = true;
                act.dispatch(ctx);
            });
        }
    }
}

impl StreamHandler<Synced> for WriterActor {
    fn handle(&mut self, synced: Synced, ctx: &mut Context<Self>) {
        self.synced(synced);
        self.dispatch(ctx);
    }

    /// The syncer's thread ends only when the writer drops it.
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<Append> for WriterActor {
    type Result = ();

    fn handle(&mut self, msg: Append, ctx: &mut Context<Self>) {
        if let Some(err) = self.poisoned_error() {
            (msg.done)(Err(err));
            return;
        }
        if let Some(full) = self.full {
            (msg.done)(Err(full.error()));
            return;
        }
        self.pending.push_back(Pending::Append(msg));
        self.stats.queued.store(self.pending.len() as u64, Ordering::Relaxed);
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

/// A started writer over `set` from offset 0 for unit tests: async flush
/// with no background flushes, no log cache, the plain io backend.
#[cfg(test)]
pub(crate) fn test_writer(set: Arc<SegmentSet>) -> (Addr<WriterActor>, Arc<WriterStats>) {
    let backend = crate::io::IoBackend::Std(crate::io::std_io::StdIo::new(Arc::default()));
    let log = CommitLog::open(set, 0, 0, backend, None, Arc::new(crate::clock::SystemClock)).expect("log");
    let config = WriterConfig {
        flush: FlushMode::Async,
        flush_interval: Duration::from_secs(3600),
        max_batch_messages: 1,
        max_batch_bytes: 1 << 20,
        log_cache_bytes: 0,
        resume_free_bytes: 1 << 30,
    };
    let stats: Arc<WriterStats> = Arc::default();
    let writer = WriterActor::new(log, config, stats.clone(), crate::logging::discard()).expect("writer").start();
    (writer, stats)
}
