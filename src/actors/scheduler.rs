//! The SchedulerActor: one per delay level. A level's messages wait in their
//! own queue of the schedule topic and, all having the same delay, come due
//! in arrival order — so the actor needs no index: it reads from its
//! durable progress offset, delivers every message at the head that is due,
//! and sleeps until the next one is. Memory is constant however many
//! messages wait.
//!
//! Progress is recorded after every delivered batch (a `pwrite`, fsynced at
//! checkpoints), so a restart delivers nothing twice except the batch that
//! was being delivered when the broker was killed.

use crate::actors::appender::Appender;
use crate::actors::queue::{Pull, PullEntries};
use crate::actors::queue_registry::QueueRegistry;
use crate::error::{Error, Result};
use crate::filter::TagFilter;
use crate::ha::meta::{self, MetaEvent};
use crate::store::consume_queue::CqEntry;
use crate::store::progress::ProgressFile;
use actix::prelude::*;
use brook_proto::system::SCHEDULE_TOPIC;
use std::sync::Arc;
use std::time::Duration;

/// Most messages delivered in one batch.
pub const DELIVER_BATCH: u32 = 512;
/// Longest a caught-up scheduler parks its pull.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Pause after a failure before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Pulls entries of a system queue (no filter).
pub(crate) async fn pull_entries(
    registry: &QueueRegistry,
    topic: &str,
    queue: u32,
    offset: u64,
    max_messages: u32,
    long_poll: Duration,
) -> Result<PullEntries> {
    registry
        .queue(topic, queue)
        .send(Pull {
            offset,
            max_messages,
            max_bytes: u32::MAX,
            filter: Arc::new(TagFilter::All),
            long_poll,
            cut_short: None,
        })
        .await
        .map_err(|e| match e {
            // The queue's thread stopped: the broker is shutting down.
            actix::MailboxError::Closed => Error::ShuttingDown,
            e => Error::Busy(format!("queue actor unavailable: {e}")),
        })?
}

/// All entries of queue 0 of a system topic from `from` (retention skipped
/// over) and the offset after them.
pub(crate) async fn entries_from(
    registry: &QueueRegistry,
    topic: &str,
    from: u64,
) -> Result<(Vec<(u64, CqEntry)>, u64)> {
    let mut out = Vec::new();
    let mut offset = from;
    loop {
        let page = match pull_entries(registry, topic, 0, offset, 1024, Duration::ZERO).await {
            Err(Error::BelowRetained { min, .. }) => {
                offset = min;
                continue;
            }
            other => other?,
        };
        if page.entries.is_empty() {
            return Ok((out, page.next_offset));
        }
        offset = page.next_offset;
        out.extend(page.entries);
    }
}

/// Delivers one delay level.
pub struct SchedulerActor {
    level: Option<Level>,
}

impl SchedulerActor {
    /// The scheduler of `level` (1-based), resuming at the offset its
    /// progress file holds.
    pub fn new(
        level: u32,
        registry: Arc<QueueRegistry>,
        appender: Appender,
        progress: Arc<ProgressFile>,
        offset: u64,
        logger: &slog::Logger,
    ) -> Self {
        let logger = logger.new(slog::o!("delay_level" => level));
        Self { level: Some(Level { queue: level.saturating_sub(1), registry, appender, progress, offset, logger }) }
    }

    /// A slave's scheduler: it delivers nothing (its master does, and the
    /// master's progress reaches its file through the log).
    #[must_use]
    pub fn standby(mut self) -> Self {
        self.level = None;
        self
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(level) = self.level.take() {
            ctx.spawn(actix::fut::wrap_future(level.run()));
        }
    }
}

struct Level {
    queue: u32,
    registry: Arc<QueueRegistry>,
    appender: Appender,
    progress: Arc<ProgressFile>,
    offset: u64,
    logger: slog::Logger,
}

impl Level {
    async fn run(mut self) {
        loop {
            let offset = self.offset;
            let pulled =
                pull_entries(&self.registry, SCHEDULE_TOPIC, self.queue, offset, DELIVER_BATCH, IDLE_POLL).await;
            let found = match pulled {
                Ok(found) => found,
                Err(Error::BelowRetained { min, .. }) => {
                    slog::error!(self.logger, "delayed messages deleted by retention before they were due";
                        "from" => offset, "to" => min);
                    self.advance(min);
                    continue;
                }
                Err(Error::ShuttingDown) => {
                    slog::debug!(self.logger, "scheduler stops: the broker is shutting down");
                    return;
                }
                Err(e) => {
                    slog::warn!(self.logger, "scheduler pull failed"; "error" => %e);
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            let now = crate::clock::now_ms();
            let due: Vec<CqEntry> =
                found.entries.iter().take_while(|(_, e)| e.tag_hash as i64 <= now).map(|(_, e)| *e).collect();
            let Some(&(head_offset, head)) = found.entries.get(due.len()) else {
                if !due.is_empty() {
                    self.deliver(&due, found.entries.last().map_or(offset, |(o, _)| o + 1)).await;
                }
                continue;
            };
            if due.is_empty() {
                // The head is not due yet, and nothing behind it can be
                // earlier: sleep until it is.
                let wait = (head.tag_hash as i64 - now).clamp(1, 60_000) as u64;
                tokio::time::sleep(Duration::from_millis(wait)).await;
                continue;
            }
            self.deliver(&due, head_offset).await;
        }
    }

    async fn deliver(&mut self, due: &[CqEntry], next: u64) {
        match self.appender.deliver(due).await {
            Ok(()) => {
                self.advance(next);
                // A slave keeps the progress too: promoted, it resumes here
                // instead of delivering these again.
                let event = MetaEvent::DelayProgress { level: self.queue + 1, offset: next };
                if let Err(e) = meta::record(&self.appender, &event).await {
                    slog::warn!(self.logger, "delay progress not written to the log"; "error" => %e);
                }
            }
            Err(e) => {
                slog::warn!(self.logger, "delivery failed; will retry"; "error" => %e);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    fn advance(&mut self, next: u64) {
        self.offset = next;
        if let Err(e) = self.progress.store(&[next]) {
            slog::error!(self.logger, "cannot record scheduler progress"; "error" => %e);
        }
    }
}
