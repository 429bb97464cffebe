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

use crate::actors::indexer::{FlushIndex, RetainIndex};
use crate::actors::queue::{Barrier, BarrierRound, Barriered, Retain};
use crate::actors::queue_registry::QueueRegistry;
use crate::actors::writer::Sync as WriterSync;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::store::checkpoint::{sync_filesystem, Checkpoint};
use crate::store::consume_queue::TailWrite;
use crate::store::progress::SystemFiles;
use crate::store::retention::{self, DiskUsage, Reason, RetentionPolicy};
use crate::store::segment::SegmentSet;
use crate::store::topics::TopicTable;
use crate::store::StorePaths;
use actix::prelude::*;
use std::path::PathBuf;
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
}

/// Runs checkpoints and retention.
pub struct Housekeeper {
    registry: Arc<QueueRegistry>,
    topics: Arc<TopicTable>,
    paths: StorePaths,
    segments: Arc<SegmentSet>,
    config: HousekeeperConfig,
    clock: Arc<dyn Clock>,
    disk: Arc<dyn DiskUsage>,
    lock: Arc<tokio::sync::Mutex<bool>>,
    system_files: Option<Arc<SystemFiles>>,
    retention_running: bool,
    logger: slog::Logger,
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
    #[expect(clippy::too_many_arguments, reason = "the store's parts and the injected clock and disk, each its own")]
    pub fn new(
        registry: Arc<QueueRegistry>,
        topics: Arc<TopicTable>,
        paths: StorePaths,
        segments: Arc<SegmentSet>,
        config: HousekeeperConfig,
        clock: Arc<dyn Clock>,
        disk: Arc<dyn DiskUsage>,
        system_files: Option<Arc<SystemFiles>>,
        logger: slog::Logger,
    ) -> Self {
        Self {
            system_files,
            registry,
            topics,
            paths,
            segments,
            config,
            clock,
            disk,
            lock: Arc::new(tokio::sync::Mutex::new(false)),
            retention_running: false,
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
            let Barriered { files, unwritten_from: unwritten, tails, producers } =
                visit_queues(&registry, final_stop, write_pos.saturating_sub(max_replay)).await?;
            let mut unreported =
                Unreported { registry: registry.clone(), ids: tails.iter().map(|(id, _)| *id).collect() };
            dirty.extend(files);
            // Every key below write_pos reached the indexer before the
            // barriers were answered.
            if let Some(indexer) = registry.indexer() {
                indexer.send(FlushIndex { covered_to: write_pos }).await??;
            }
            // Entries still only in memory are below write_pos: recovery
            // must replay the log from the oldest of them.
            let cq_durable_offset = unwritten.map_or(write_pos, |low| low.min(write_pos));
            let checkpoint = Checkpoint { cq_durable_offset, log_end: write_pos, last_store_ts, clean: final_stop };
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
        let topics = self.topics.clone();
        async move {
            let deleted = tokio::task::spawn_blocking(move || {
                retention::run_once(&segments, policy, clock.as_ref(), disk.as_ref())
            })
            .await
            .map_err(|e| Error::Busy(e.to_string()))?
            .map_err(|e| Error::io("retention", e))?;
            if !deleted.segments.is_empty() {
                for (topic, config) in topics.list() {
                    for queue in 0..config.queues {
                        registry.queue(&topic, queue).do_send(Retain { log_min: deleted.log_min });
                    }
                }
                if let Some(indexer) = registry.indexer() {
                    indexer.do_send(RetainIndex { log_min: deleted.log_min });
                }
            }
            Ok(deleted)
        }
    }

    fn log_retention(logger: &slog::Logger, deleted: &retention::Deleted) {
        for (base, reason) in &deleted.segments {
            match reason {
                Reason::Expired => {
                    slog::info!(logger, "retention deleted an expired segment"; "base" => base)
                }
                Reason::DiskFull => {
                    slog::warn!(logger, "disk above disk_max_used_ratio: deleted the oldest segment regardless of age";
                    "base" => base, "used_ratio" => deleted.used_ratio)
                }
            }
        }
    }
}

/// Past this many dirty consume-queue files one `syncfs` is cheaper than an
/// fdatasync each (it also flushes unrelated data on the filesystem, which is
/// why it is not the default).
const SYNCFS_THRESHOLD: usize = 512;

fn sync_queue_files(root: &std::path::Path, dirty: &[std::path::PathBuf]) -> std::io::Result<()> {
    if dirty.len() > SYNCFS_THRESHOLD {
        return sync_filesystem(root);
    }
    for path in dirty {
        match crate::store::fd_cache::get(path, false) {
            Ok(file) => file.sync_data()?,
            // Deleted meanwhile (retention, topic deletion): nothing to sync.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Actor for Housekeeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.checkpoint_interval, |act, ctx| {
            let logger = act.logger.clone();
            ctx.spawn(act.checkpoint_job(false).into_actor(act).map(move |result, _, _| {
                if let Err(e) = result {
                    if !matches!(e, Error::ShuttingDown) {
                        slog::error!(logger, "checkpoint failed"; "error" => %e);
                    }
                }
            }));
        });
        ctx.run_interval(self.config.retention_interval, |act, ctx| {
            if act.retention_running {
                return;
            }
            act.retention_running = true;
            let logger = act.logger.clone();
            ctx.spawn(act.retention_job().into_actor(act).map(move |result, act, _| {
                act.retention_running = false;
                match result {
                    Ok(deleted) => Self::log_retention(&logger, &deleted),
                    Err(e) => slog::error!(logger, "retention failed"; "error" => %e),
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
    type Result = ResponseFuture<Result<retention::Deleted>>;

    fn handle(&mut self, _: RetainNow, _: &mut Context<Self>) -> Self::Result {
        let job = self.retention_job();
        let logger = self.logger.clone();
        Box::pin(async move {
            let deleted = job.await?;
            Self::log_retention(&logger, &deleted);
            Ok(deleted)
        })
    }
}

impl Handler<FinalCheckpoint> for Housekeeper {
    type Result = ResponseFuture<Result<Checkpoint>>;

    fn handle(&mut self, _: FinalCheckpoint, _: &mut Context<Self>) -> Self::Result {
        Box::pin(self.checkpoint_job(true))
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

/// What a checkpoint writes besides the checkpoint file.
struct Written<'a> {
    /// Aged tails the barrier left to it.
    tails: &'a [(u64, TailWrite)],
    /// Consume-queue files written since the last checkpoint.
    dirty: Vec<PathBuf>,
    /// The progress files of the system actors.
    system_files: Option<&'a SystemFiles>,
    /// The producer table's snapshot, if it changed.
    producers: Option<(u64, Vec<u8>)>,
}

/// Writes what a checkpoint names durable, on the blocking pool: the aged
/// tails the barrier left to it (the entries below `cq_durable_offset` must
/// be in their files first), then fsyncs of every written consume-queue
/// file and of the system files, the producer state, then the checkpoint
/// itself.
fn write_checkpoint(paths: &StorePaths, written: Written<'_>, checkpoint: Checkpoint) -> std::io::Result<()> {
    let Written { tails, mut dirty, system_files, producers } = written;
    for (_, tail) in tails {
        dirty.extend(tail.run()?);
    }
    sync_queue_files(&paths.root, &dirty)?;
    // After the log: a synced progress must not name deliveries whose
    // copies a power loss could still take back.
    if let Some(files) = system_files {
        files.sync()?;
    }
    // Before the checkpoint: recovery replays the log from the checkpoint's
    // position into this snapshot, which must hold at least everything
    // below it.
    if let Some((_, bytes)) = producers {
        crate::store::write_atomically(&paths.producers(), &bytes)?;
    }
    checkpoint.store(&paths.checkpoint())
}
