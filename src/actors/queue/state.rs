//! One queue's state ([`QueueState`]): its consume queue, next offset,
//! parked pulls and checkpoint bookkeeping; opened on the queue actors'
//! thread and kept there (see `slots`). The pipeline's steps live beside
//! it: `append` (offsets and entries), `pull` (reads and long polls),
//! `barrier` (checkpoints).

use crate::actors::queue::barrier::ActiveQueues;
use crate::actors::queue::pull::Parked;
use crate::actors::queue::spec::QueueSpec;
use crate::error::{Error, Result};
use crate::store::commitlog::LogReader;
use crate::store::consume_queue::ConsumeQueue;
use crate::store::record;
use std::path::PathBuf;
use std::sync::Arc;

/// One topic-queue's offsets, consume queue, appends in flight and parked
/// pulls.
pub struct QueueState {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) per_file: u64,
    pub(super) log_min: u64,
    pub(super) cq: Option<ConsumeQueue>,
    pub(super) failed: Option<String>,
    pub(super) next_offset: u64,
    /// Runs admitted whose write is not answered yet.
    pub(super) outstanding: u32,
    /// A run's write was refused (the disk filled up): its offsets, and
    /// those of every run admitted after it (the writer refuses those too),
    /// are taken back once all are answered; no run is admitted meanwhile,
    /// so no entry is ever appended above a gap.
    pub(super) rollback_to: Option<u64>,
    pub(super) reader: LogReader,
    /// Keys of stored records are handed to the indexer.
    pub(super) indexed: bool,
    pub(super) active: Arc<ActiveQueues>,
    /// In `active` since the last barrier.
    pub(super) listed: bool,
    /// When the in-memory tail got its oldest entry.
    pub(super) tail_since: Option<std::time::Instant>,
    pub(super) parked: Vec<Parked>,
    pub(super) next_park_id: u64,
    pub(super) logger: slog::Logger,
}

impl QueueState {
    /// Opens the queue's files (on the queue actors' thread).
    pub(super) fn open(spec: &QueueSpec) -> Self {
        let mut state = Self {
            id: spec.id,
            name: spec.name.clone(),
            dir: spec.dir.clone(),
            per_file: spec.per_file,
            log_min: spec.log_min,
            cq: None,
            failed: None,
            next_offset: 0,
            outstanding: 0,
            rollback_to: None,
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

    pub(super) fn cq(&self) -> Result<&ConsumeQueue> {
        match (&self.cq, &self.failed) {
            (Some(cq), None) => Ok(cq),
            (_, Some(reason)) => Err(Error::Poisoned(reason.clone())),
            (None, None) => Err(Error::Busy(format!("queue {} is not open", self.name))),
        }
    }

    pub(super) fn fail(&mut self, reason: String) {
        slog::error!(self.logger, "queue failed"; "queue" => &self.name, "reason" => &reason);
        self.failed = Some(reason);
    }

    /// Joins the active list (once until the next barrier).
    pub(super) fn list(&mut self) {
        if !self.listed {
            self.listed = true;
            self.active.add(self.id);
        }
    }

    /// Drops what retention deleted; the first offset before and after.
    pub(super) fn retain(&mut self, log_min: u64) -> Option<(u64, u64)> {
        self.log_min = log_min;
        let cq = self.cq.as_mut()?;
        let before = cq.min_offset();
        if let Err(e) = cq.retain_from_log(log_min) {
            slog::warn!(self.logger, "consume-queue retention failed"; "queue" => &self.name, "error" => %e);
        }
        Some((before, cq.min_offset()))
    }

    pub(super) fn offset_at_time(&self, ts: i64) -> Result<u64> {
        let reader = self.reader.clone();
        // A binary search: a few dozen small page-cache reads at most.
        self.cq()?
            .offset_at_time(ts, |entry| {
                reader.read_raw(entry.log_offset, entry.size).ok().map(|rec| record::head(&rec).store_ts)
            })
            .map_err(|e| Error::io(format!("search {}", self.name), e))
    }

    pub(super) fn destroy(&mut self) -> Result<()> {
        for waiting in self.parked.drain(..) {
            let _ = waiting.reply.send(Err(Error::TopicNotFound(self.name.clone())));
        }
        match self.cq.take() {
            Some(cq) => cq.destroy().map_err(|e| Error::io(format!("delete {}", self.dir.display()), e)),
            None => Ok(()),
        }
    }
}
