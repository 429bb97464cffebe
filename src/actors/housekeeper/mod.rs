//! The Housekeeper runs the broker's periodic jobs, each named, with its own
//! period, and logging a line when it does something:
//!
//! - `checkpoint` (every `checkpoint_interval_ms`): take the writer's
//!   position, pass a barrier through every queue actor that took appends
//!   since its last one (so each has appended the entries of everything
//!   below that position; tails younger than 10 s stay in memory unless
//!   they start more than half of `store.log_cache_bytes` behind the head),
//!   write the older tails the barrier handed over (on the blocking pool,
//!   not the queues' thread, which is the writer's), sync what was written,
//!   then record as the consume queues' durable point the position, or the
//!   oldest entry still only in memory if lower.
//! - `retention` (every `retention_check_interval_ms`): delete expired
//!   segments, or the oldest while the disk is too full, then tell every
//!   queue to drop files that only point into deleted segments.
//!
//! Jobs only send messages and run blocking I/O on the blocking pool; they
//! never mutate another actor's state directly. At shutdown the final,
//! clean checkpoint goes through the same lock so no periodic one can land
//! after it.

mod durable;

use crate::actors::consumer_group::NeededOffsets;
use crate::actors::group_registry::GroupRegistry;
use crate::actors::indexer::{FlushIndex, RetainIndex};
use crate::actors::queue::{Barrier, BarrierRound, Barriered, LogOffsetOf, Retain};
use crate::actors::queue_registry::QueueRegistry;
use crate::actors::writer::Sync as WriterSync;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::store::checkpoint::Checkpoint;
use crate::store::consume_queue::TailWrite;
use crate::store::progress::SystemFiles;
use crate::store::reserve::Reserve;
use crate::store::retention::{self, DiskUsage, Reason, RetentionPolicy};
use crate::store::segment::SegmentSet;
use crate::store::topics::TopicTable;
use crate::store::StorePaths;
use actix::prelude::*;
use durable::{write_checkpoint, Written};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Periods and policy of the periodic jobs.
#[derive(Debug, Clone)]
pub struct HousekeeperConfig {
    /// Checkpoint period.
    pub checkpoint_interval: Duration,
    /// Retention period.
    pub retention_interval: Duration,
    /// Retention rules.
    pub policy: RetentionPolicy,
    /// Consume-queue tails whose oldest entry is more than this many log
    /// bytes behind the head are written at a checkpoint however young.
    pub max_replay_bytes: u64,
    /// The space reserve: laid down again by retention passes once there
    /// is room, let go for a final checkpoint on a full disk.
    pub reserve: Reserve,
    /// Free bytes the disk keeps beside the reserve before it is laid down.
    pub resume_free_bytes: u64,
}

/// What the housekeeper looks after: the store's parts and the actors
/// that hold its state.
pub struct Housekept {
    /// The queues.
    pub registry: Arc<QueueRegistry>,
    /// The consumer groups (told what retention took from them).
    pub groups: Arc<GroupRegistry>,
    /// Topics.
    pub topics: Arc<TopicTable>,
    /// Paths.
    pub paths: StorePaths,
    /// The log's segments.
    pub segments: Arc<SegmentSet>,
    /// The system actors' progress files.
    pub system_files: Option<Arc<SystemFiles>>,
}

/// Runs checkpoints and retention.
pub struct Housekeeper {
    registry: Arc<QueueRegistry>,
    groups: Arc<GroupRegistry>,
    topics: Arc<TopicTable>,
    paths: StorePaths,
    segments: Arc<SegmentSet>,
    config: HousekeeperConfig,
    clock: Arc<dyn Clock>,
    disk: Arc<dyn DiskUsage>,
    lock: Arc<tokio::sync::Mutex<bool>>,
    system_files: Option<Arc<SystemFiles>>,
    retention_running: bool,
    /// Periodic checkpoints failing (on a full disk, every one would).
    checkpoints: Failing,
    /// Periodic retention passes failing.
    retentions: Failing,
    /// Retention keeps segments an active group needs (said once).
    holding_back: bool,
    logger: slog::Logger,
}

/// A periodic job's failures, logged when they begin and when they end
/// rather than at every run: on a full disk a checkpoint fails every
/// interval, and a line per second says nothing the first did not.
struct Failing {
    job: &'static str,
    /// Failures in a row so far.
    failures: u64,
}

impl Failing {
    fn new(job: &'static str) -> Self {
        Self { job, failures: 0 }
    }

    fn failed(&mut self, logger: &slog::Logger, e: &Error) {
        if self.failures == 0 {
            slog::error!(logger, "{} failed; retried every period, logged again when it succeeds", self.job;
                "error" => %e);
        }
        self.failures += 1;
    }

    fn succeeded(&mut self, logger: &slog::Logger) {
        if self.failures > 0 {
            slog::info!(logger, "{} succeeds again", self.job; "failed_runs" => self.failures);
            self.failures = 0;
        }
    }
}

/// How long a queue's newest consume-queue entries may stay only in memory
/// across checkpoints (bounds the log a crash recovery replays).
const MAX_TAIL_AGE: Duration = Duration::from_secs(10);

/// Most aged tails one checkpoint writes; the rest wait for the next.
const AGED_TAILS_PER_CHECKPOINT: usize = 4096;

/// Tails a checkpoint took to write and has not reported back: if it ends
/// early, their queues hear that the write failed, so the entries count as
/// unwritten again instead of never.
struct Unreported {
    registry: Arc<QueueRegistry>,
    ids: Vec<u64>,
}

impl Drop for Unreported {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut self.ids);
        self.registry.tails_written(ids.into_iter().map(|id| (id, TailWrite::default())).collect(), None, false);
    }
}

/// Take a checkpoint now (tests; the periodic job does the same).
#[derive(Message)]
#[rtype(result = "Result<u64>")]
pub struct CheckpointNow;

/// Run retention now (tests; the periodic job does the same).
#[derive(Message)]
#[rtype(result = "Result<retention::Deleted>")]
pub struct RetainNow;

/// Final checkpoint at shutdown: drain and sync the writer, barrier every
/// queue, syncfs, and record a clean stop. Later periodic checkpoints are
/// refused.
#[derive(Message)]
#[rtype(result = "Result<Checkpoint>")]
pub struct FinalCheckpoint;

impl Housekeeper {
    /// A housekeeper for the given store.
    pub fn new(
        kept: Housekept,
        config: HousekeeperConfig,
        clock: Arc<dyn Clock>,
        disk: Arc<dyn DiskUsage>,
        logger: slog::Logger,
    ) -> Self {
        let Housekept { registry, groups, topics, paths, segments, system_files } = kept;
        Self {
            system_files,
            registry,
            groups,
            topics,
            paths,
            segments,
            config,
            clock,
            disk,
            lock: Arc::new(tokio::sync::Mutex::new(false)),
            retention_running: false,
            checkpoints: Failing::new("checkpoint"),
            retentions: Failing::new("retention"),
            holding_back: false,
            logger,
        }
    }

    fn checkpoint_job(&self, final_stop: bool) -> impl std::future::Future<Output = Result<Checkpoint>> + 'static {
        let registry = self.registry.clone();
        let paths = self.paths.clone();
        let lock = self.lock.clone();
        let system_files = self.system_files.clone();
        let segments = self.segments.clone();
        let max_replay = self.config.max_replay_bytes;
        async move {
            let mut stopped = lock.lock().await;
            if *stopped {
                return Err(Error::ShuttingDown);
            }
            let mut dirty = Vec::new();
            if final_stop {
                // Every produce a queue accepted reaches the writer before
                // the writer's final sync.
                dirty = visit_queues(&registry, final_stop, u64::MAX).await?.files;
            }
            // The log must be durable up to the position the checkpoint
            // names: recovery starts scanning there, so an async-flush tail
            // below it that an OS crash lost would leave a hole.
            let at = registry.writer().send(WriterSync).await??;
            let (write_pos, last_store_ts) = (at.write_pos, at.last_store_ts);
            // Records sync replication still holds back from their queues
            // have no entries yet: recovery must replay them.
            let visible_to = at.visible_to.min(write_pos);
            let Barriered { files, unwritten_from: unwritten, tails, producers } =
                visit_queues(&registry, final_stop, write_pos.saturating_sub(max_replay)).await?;
            let mut unreported =
                Unreported { registry: registry.clone(), ids: tails.iter().map(|(id, _)| *id).collect() };
            dirty.extend(files);
            // Every key below write_pos reached the indexer before the
            // barriers were answered.
            if let Some(indexer) = registry.indexer() {
                indexer.send(FlushIndex { covered_to: visible_to }).await??;
            }
            // Entries still only in memory are below write_pos: recovery
            // must replay the log from the oldest of them.
            let cq_durable_offset = unwritten.map_or(visible_to, |low| low.min(visible_to));
            // A stop with records held back is not clean: the next start
            // scans from them.
            let clean = final_stop && visible_to >= write_pos;
            let checkpoint = Checkpoint { cq_durable_offset, log_end: write_pos, last_store_ts, clean };
            let snapshot = producers.as_ref().map(|(generation, _)| *generation);
            let (stored, tails) = tokio::task::spawn_blocking(move || {
                let written = Written { tails: &tails, dirty, system_files: system_files.as_deref(), producers };
                let stored = write_checkpoint(&paths, written, checkpoint);
                (stored, tails)
            })
            .await
            .map_err(|e| Error::Busy(e.to_string()))?;
            // Written and synced, the tails leave the queues' memory; if not,
            // the next checkpoint writes them again.
            unreported.ids.clear();
            registry.tails_written(tails, snapshot, stored.is_ok());
            stored.map_err(|e| Error::io("write checkpoint", e))?;
            // A crash recovery would now re-read the log from here: its
            // pages stay in the page cache (`store.log_cache_bytes`).
            segments.set_replay_from(cq_durable_offset);
            if final_stop {
                *stopped = true;
            }
            Ok(checkpoint)
        }
    }

    fn retention_job(&self) -> impl std::future::Future<Output = Result<retention::Deleted>> + 'static {
        let segments = self.segments.clone();
        let policy = self.config.policy;
        let clock = self.clock.clone();
        let disk = self.disk.clone();
        let registry = self.registry.clone();
        let groups = self.groups.clone();
        let topics = self.topics.clone();
        let (reserve, margin) = (self.config.reserve.clone(), self.config.resume_free_bytes);
        let logger = self.logger.clone();
        async move {
            let needed_from = match policy.protect_unconsumed {
                true => needed_from(&groups, &registry, &topics).await,
                false => None,
            };
            let at_ms = clock.now_ms();
            let (deleted, restored) = tokio::task::spawn_blocking(move || {
                let deleted = retention::run_once(&segments, policy, clock.as_ref(), disk.as_ref(), needed_from);
                // After deleting: the space freed may be what it needs.
                let root = segments.dir().parent().unwrap_or(segments.dir());
                (deleted, reserve.restore(root, margin))
            })
            .await
            .map_err(|e| Error::Busy(e.to_string()))?;
            match restored {
                Ok(true) => slog::info!(logger, "space reserve laid down"),
                Ok(false) => {}
                Err(e) => slog::debug!(logger, "space reserve not laid down"; "error" => %e),
            }
            let mut deleted = deleted.map_err(|e| Error::io("retention", e))?;
            if !deleted.segments.is_empty() {
                let moved = retain_queues(&registry, &topics, deleted.log_min).await;
                if let Some(indexer) = registry.indexer() {
                    indexer.do_send(RetainIndex { log_min: deleted.log_min });
                }
                deleted.unconsumed = groups.retention_deleted(moved, at_ms).await;
            }
            Ok(deleted)
        }
    }

    /// One line per deleted segment; protection that holds segments back
    /// says so when it begins and when it ends.
    fn log_retention(&mut self, deleted: &retention::Deleted) {
        let logger = &self.logger;
        for (base, reason) in &deleted.segments {
            match reason {
                Reason::Expired => {
                    slog::info!(logger, "retention deleted an expired segment"; "base" => base)
                }
                Reason::DiskFull => {
                    slog::warn!(logger, "disk above disk_max_used_ratio: deleted the oldest segment regardless of age";
                    "base" => base, "used_ratio" => deleted.used_ratio)
                }
                Reason::HardCeiling => {
                    slog::warn!(logger, "disk above disk_hard_max_used_ratio: deleted a segment active groups had \
                        not consumed"; "base" => base, "used_ratio" => deleted.used_ratio)
                }
            }
        }
        if deleted.unconsumed > 0 {
            slog::warn!(logger, "retention deleted messages consumer groups had not consumed";
                "messages" => deleted.unconsumed, "log_min" => deleted.log_min);
        }
        match (deleted.held_back, self.holding_back) {
            (Some(base), false) => {
                slog::warn!(logger, "disk above disk_max_used_ratio, but retention keeps segments active groups have \
                    not consumed (retention_protect_unconsumed) until disk_hard_max_used_ratio";
                    "oldest_kept" => base, "used_ratio" => deleted.used_ratio);
                self.holding_back = true;
            }
            (None, true) => {
                slog::info!(logger, "retention no longer holds segments back for active groups";
                    "used_ratio" => deleted.used_ratio);
                self.holding_back = false;
            }
            _ => {}
        }
    }
}

/// Tells every queue what retention deleted; answers the queues whose first
/// offset moved, with where it is now.
async fn retain_queues(
    registry: &QueueRegistry,
    topics: &TopicTable,
    log_min: u64,
) -> Arc<HashMap<(String, u32), u64>> {
    let mut asks = Vec::new();
    for (topic, config) in topics.list() {
        for queue in 0..config.queues {
            let answer = registry.queue(&topic, queue).send(Retain { log_min });
            let at = (topic.clone(), queue);
            asks.push(async move { (at, answer.await) });
        }
    }
    let answers = futures::future::join_all(asks).await;
    let moved = answers
        .into_iter()
        .filter_map(|(at, answer)| match answer {
            Ok(Some((before, after))) if after > before => Some((at, after)),
            _ => None,
        })
        .collect();
    Arc::new(moved)
}

/// The lowest log offset an active group (one with live members) has not
/// consumed: retention keeps it when `retention_protect_unconsumed` is set.
async fn needed_from(groups: &GroupRegistry, registry: &QueueRegistry, topics: &TopicTable) -> Option<u64> {
    let mut lowest: Option<u64> = None;
    for (_, group) in groups.live() {
        let Ok(offsets) = group.send(NeededOffsets).await else { continue };
        for (topic, queue, offset) in offsets {
            if topics.get(&topic).is_none_or(|t| queue >= t.queues) {
                continue;
            }
            if let Ok(Some(at)) = registry.queue(&topic, queue).send(LogOffsetOf { offset }).await {
                lowest = Some(lowest.map_or(at, |l| l.min(at)));
            }
        }
    }
    lowest
}

impl Actor for Housekeeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.checkpoint_interval, |act, ctx| {
            ctx.spawn(act.checkpoint_job(false).into_actor(act).map(move |result, act, _| match result {
                Ok(_) => act.checkpoints.succeeded(&act.logger),
                Err(Error::ShuttingDown) => {}
                Err(e) => act.checkpoints.failed(&act.logger, &e),
            }));
        });
        ctx.run_interval(self.config.retention_interval, |act, ctx| {
            if act.retention_running {
                return;
            }
            act.retention_running = true;
            ctx.spawn(act.retention_job().into_actor(act).map(move |result, act, _| {
                act.retention_running = false;
                match result {
                    Ok(deleted) => {
                        act.retentions.succeeded(&act.logger);
                        act.log_retention(&deleted);
                    }
                    Err(e) => act.retentions.failed(&act.logger, &e),
                }
            }));
        });
    }
}

impl Handler<CheckpointNow> for Housekeeper {
    type Result = ResponseFuture<Result<u64>>;

    fn handle(&mut self, _: CheckpointNow, _: &mut Context<Self>) -> Self::Result {
        let job = self.checkpoint_job(false);
        Box::pin(async move { job.await.map(|c| c.cq_durable_offset) })
    }
}

impl Handler<RetainNow> for Housekeeper {
    type Result = ResponseActFuture<Self, Result<retention::Deleted>>;

    fn handle(&mut self, _: RetainNow, _: &mut Context<Self>) -> Self::Result {
        let job = self.retention_job().into_actor(self).map(|result, act, _| {
            if let Ok(deleted) = &result {
                act.log_retention(deleted);
            }
            result
        });
        Box::pin(job)
    }
}

impl Handler<FinalCheckpoint> for Housekeeper {
    type Result = ResponseFuture<Result<Checkpoint>>;

    fn handle(&mut self, _: FinalCheckpoint, _: &mut Context<Self>) -> Self::Result {
        let (first, again) = (self.checkpoint_job(true), self.checkpoint_job(true));
        let (reserve, logger) = (self.config.reserve.clone(), self.logger.clone());
        Box::pin(async move {
            match first.await {
                Err(e) if e.is_out_of_space() => {
                    // The reserve exists for this: a clean stop on a full disk.
                    let freed = tokio::task::spawn_blocking(move || reserve.release()).await;
                    match freed {
                        Ok(Ok(bytes)) if bytes > 0 => {
                            slog::warn!(logger, "disk full at shutdown: let the space reserve go for the final \
                                checkpoint"; "bytes" => bytes, "error" => %e);
                            again.await
                        }
                        _ => Err(e),
                    }
                }
                done => done,
            }
        })
    }
}

/// Visits the queues with a checkpoint's barrier and waits for their merged
/// answer. A shutdown visits every queue and writes every tail; a periodic
/// checkpoint visits the queues that took appends and leaves young tails in
/// memory.
async fn visit_queues(registry: &QueueRegistry, final_stop: bool, replay_floor: u64) -> Result<Barriered> {
    let (round, answer) = BarrierRound::start();
    let msg = if final_stop {
        Barrier::force(round)
    } else {
        let budget = Arc::new(std::sync::atomic::AtomicUsize::new(AGED_TAILS_PER_CHECKPOINT));
        Barrier { force: false, max_tail_age: MAX_TAIL_AGE, replay_floor, budget, round }
    };
    // The answer comes once the visit is over and its share gone.
    registry.barrier_queues(msg, final_stop);
    answer.await.map_err(|_| Error::ShuttingDown)?
}
