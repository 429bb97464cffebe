//! One worker per assigned queue: pull (long polling), hand messages to the
//! listener, commit. `concurrent` (here) runs many messages at once and
//! commits the smallest offset not yet done, handing a message the listener
//! fails back to the broker for a retry; the orderly worker is
//! [`super::orderly`].

use super::config::PushConfig;
use super::events;
use super::held::HeldCommits;
use super::ConsumeResult;
use crate::error::ClientError;
use crate::producer::now_ms;
use crate::session::{Backoff, Session};
use brook_proto::request::ConsumeTrace;
use brook_proto::request::{ConsumeMode, PullResult, QueueOffset, QueueRef};
use brook_proto::system::{PROP_RETRY_TOPIC, PROP_TRACE, RETRY_PREFIX};
use brook_proto::{ErrorCode, Request, Response, StoredMessage};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

type EachFn = Arc<dyn Fn(StoredMessage) -> BoxFuture<'static, ConsumeResult> + Send + Sync>;
type BatchFn = Arc<dyn Fn(Vec<StoredMessage>) -> BoxFuture<'static, ConsumeResult> + Send + Sync>;

/// The application's callback.
#[derive(Clone)]
pub(crate) enum Listener {
    /// Called per message.
    Each(EachFn),
    /// Called per pulled batch.
    Batch(BatchFn),
}

impl Listener {
    /// How a pull's messages are handed over: one by one, or all at once.
    pub(super) fn chunks(&self, messages: Vec<StoredMessage>) -> Vec<Vec<StoredMessage>> {
        match self {
            Listener::Each(_) => messages.into_iter().map(|m| vec![m]).collect(),
            Listener::Batch(_) if messages.is_empty() => Vec::new(),
            Listener::Batch(_) => vec![messages],
        }
    }

    async fn call(&self, messages: &[StoredMessage]) -> ConsumeResult {
        match self {
            Listener::Each(f) => {
                for msg in messages {
                    if f(msg.clone()).await == ConsumeResult::Later {
                        return ConsumeResult::Later;
                    }
                }
                ConsumeResult::Success
            }
            Listener::Batch(f) => f(messages.to_vec()).await,
        }
    }
}

/// What every worker of one consumer shares.
pub(crate) struct Ctx {
    /// The replica set this part of the consumer reads ("" for a broker
    /// named directly).
    pub(crate) broker: String,
    pub(crate) session: Arc<Session>,
    pub(crate) config: PushConfig,
    pub(crate) listener: Listener,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) assignment: Mutex<Vec<QueueRef>>,
    /// The group's assignment generation, from the latest heartbeat.
    pub(crate) generation: std::sync::atomic::AtomicU64,
    /// Told when this broker stops answering: the consumer asks for the
    /// routes again at once.
    pub(crate) route_stale: Arc<tokio::sync::Notify>,
    /// Commits a slave could not take (shared by every part).
    pub(crate) held: Arc<HeldCommits>,
}

/// Retries before dead-lettering when neither the consumer nor the broker
/// says otherwise (the broker's default `max_reconsume_times`).
pub(super) const DEFAULT_MAX_RECONSUME_TIMES: u32 = 16;

/// How long a stopping worker lets messages in the listener finish.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Ctx {
    pub(super) async fn call(&self, request: Request) -> Result<Response, ClientError> {
        self.session.get().await?.request(request).await
    }

    pub(super) async fn fetch(&self, queue: &QueueRef) -> Result<u64, ClientError> {
        let req = Request::FetchOffset {
            group: self.config.group.clone(),
            member: self.config.member.clone(),
            topic: queue.topic.clone(),
            queue: queue.queue,
        };
        match self.call(req).await? {
            Response::Offset(o) => Ok(o),
            other => Err(ClientError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// Commits under the generation the worker started in, so a commit
    /// from before an offset reset cannot undo it.
    pub(super) async fn commit(&self, queue: &QueueRef, offset: u64, generation: u64) -> Result<(), ClientError> {
        let req = Request::CommitOffsets {
            group: self.config.group.clone(),
            member: self.config.member.clone(),
            offsets: vec![QueueOffset { topic: queue.topic.clone(), queue: queue.queue, offset }],
            generation,
        };
        let outcome = self.call(req).await.map(|_| ());
        if matches!(&outcome, Err(e) if e.code() == Some(ErrorCode::NotMaster)) {
            self.held.hold(&self.broker, queue, offset);
        }
        outcome
    }

    /// Commits what a slave held back for this part's replica set (a part
    /// on a slave holds them again).
    pub(crate) async fn commit_held(&self) {
        let held = self.held.take(&self.broker);
        if held.is_empty() {
            return;
        }
        let offsets = held.iter().map(|(q, o)| QueueOffset { topic: q.topic.clone(), queue: q.queue, offset: *o });
        let req = Request::CommitOffsets {
            group: self.config.group.clone(),
            member: self.config.member.clone(),
            offsets: offsets.collect(),
            generation: 0,
        };
        if self.call(req).await.is_err() {
            for (queue, offset) in held {
                self.held.hold(&self.broker, &queue, offset);
            }
        }
    }

    pub(super) async fn lock(&self, queue: &QueueRef) -> Result<u64, ClientError> {
        let req = Request::LockQueue {
            group: self.config.group.clone(),
            member: self.config.member.clone(),
            topic: queue.topic.clone(),
            queue: queue.queue,
        };
        match self.call(req).await? {
            Response::Locked { ttl_ms } => Ok(ttl_ms),
            other => Err(ClientError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    pub(super) async fn unlock(&self, queue: &QueueRef) {
        let req = Request::UnlockQueue {
            group: self.config.group.clone(),
            member: self.config.member.clone(),
            topic: queue.topic.clone(),
            queue: queue.queue,
        };
        let _ = self.call(req).await;
    }

    /// Runs the listener, counting a panic or a run past `consume_timeout`
    /// as "later".
    pub(super) async fn consume(&self, messages: &[StoredMessage]) -> ConsumeResult {
        let (started, clock) = (Instant::now(), now_ms());
        let call = std::panic::AssertUnwindSafe(self.listener.call(messages)).catch_unwind();
        let result = match tokio::time::timeout(self.config.consume_timeout, call).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => ConsumeResult::Later,
        };
        self.trace(messages, clock, started.elapsed(), result).await;
        result
    }

    /// Reports traced messages (or all, with `trace` on) to the broker, in
    /// the background.
    pub(super) async fn trace(
        &self,
        messages: &[StoredMessage],
        delivered_at: i64,
        cost: Duration,
        result: ConsumeResult,
    ) {
        let traces: Vec<ConsumeTrace> = messages
            .iter()
            .filter(|m| self.config.trace || m.message.flag(PROP_TRACE))
            .map(|m| ConsumeTrace {
                msg_id: m.msg_id.clone(),
                topic: m.message.topic.clone(),
                delivered_at,
                result: if result == ConsumeResult::Success { "success" } else { "later" }.into(),
                cost_ms: cost.as_millis() as u64,
                reconsume_times: m.reconsume_times,
            })
            .collect();
        if traces.is_empty() {
            return;
        }
        if let Ok(conn) = self.session.get().await {
            let report = Request::ReportTrace { group: self.config.group.clone(), traces };
            tokio::spawn(async move { conn.request(report).await });
        }
    }

    /// Hands failed messages back to the broker: retried later through the
    /// group's retry topic, or dead-lettered. False if the broker did not
    /// take them all (or the group broadcasts, where retries stay local):
    /// the caller retries in place.
    pub(super) async fn hand_back(&self, messages: &[StoredMessage], to_dlq: bool) -> bool {
        if self.config.mode == ConsumeMode::Broadcasting {
            return false;
        }
        for msg in messages {
            let req = Request::SendBack { group: self.config.group.clone(), log_offset: msg.log_offset, to_dlq };
            if self.call(req).await.is_err() {
                return false;
            }
        }
        true
    }

    pub(super) async fn pull(
        &self,
        queue: &QueueRef,
        offset: u64,
        long_poll: Duration,
    ) -> Result<PullResult, ClientError> {
        let sub = self.config.subscriptions.iter().find(|s| s.topic == queue.topic);
        let (tags, sql) = (sub.and_then(|s| s.tags.clone()), sub.and_then(|s| s.sql.clone()));
        let mut found = self
            .session
            .get()
            .await?
            .pull_filtered(
                &queue.topic,
                queue.queue,
                offset,
                self.config.pull_batch,
                (tags.as_deref(), sql.as_deref()),
                long_poll.as_millis() as u64,
            )
            .await?;
        // A retry comes from the group's retry topic; the listener sees the
        // topic it was first sent to.
        for msg in &mut found.messages {
            if let Some(origin) = msg.property(PROP_RETRY_TOPIC).filter(|_| queue.topic.starts_with(RETRY_PREFIX)) {
                msg.message.topic = origin.to_string();
            }
        }
        Ok(found)
    }
}

/// Sleeps, or returns false at once if the worker is told to stop.
pub(super) async fn pause(stop: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(wait) => !*stop.borrow(),
        _ = stop.changed() => false,
    }
}

/// The committed offset to start from, retrying until it is known.
pub(super) async fn start_offset(ctx: &Ctx, queue: &QueueRef, stop: &mut watch::Receiver<bool>) -> Option<u64> {
    let mut attempt = 0;
    loop {
        match ctx.fetch(queue).await {
            Ok(offset) => return Some(offset),
            Err(_) => {
                if !pause(stop, Backoff::default().delay(attempt)).await {
                    return None;
                }
                attempt += 1;
            }
        }
    }
}

/// Where the worker goes on after a failed pull (reporting a jump). A jump
/// back below what the worker committed (from past the queue's end) is
/// committed at once, as RocketMQ's client stores a corrected offset: left
/// there, the group's offset would send a restarted consumer past every
/// message stored up to it. A failed commit is retried by the next.
pub(super) async fn after_pull_error(
    ctx: &Ctx,
    queue: &QueueRef,
    err: &ClientError,
    offset: u64,
    (committed, generation): (&mut u64, u64),
) -> u64 {
    let (to, event) = events::after_pull_error(err, offset, (&ctx.broker, queue));
    if let Some(event) = event {
        events::emit(ctx.config.on_event.as_ref(), &ctx.config.group, &event);
    }
    if to < *committed {
        *committed = if ctx.commit(queue, to, generation).await.is_ok() { to } else { to.saturating_sub(1) };
    }
    to
}

/// Runs the worker for `queue` until told to stop.
pub(crate) async fn run(ctx: Arc<Ctx>, queue: QueueRef, stop: watch::Receiver<bool>) {
    if ctx.config.orderly {
        super::orderly::orderly(ctx, queue, stop).await;
    } else {
        concurrent(ctx, queue, stop).await;
    }
}

async fn concurrent(ctx: Arc<Ctx>, queue: QueueRef, mut stop: watch::Receiver<bool>) {
    let generation = ctx.generation.load(std::sync::atomic::Ordering::Acquire);
    let Some(mut offset) = start_offset(&ctx, &queue, &mut stop).await else { return };
    let in_flight: Arc<Mutex<BTreeSet<u64>>> = Arc::default();
    let mut tasks = JoinSet::new();
    let mut committed = offset;
    let mut ticker = tokio::time::interval(ctx.config.commit_interval);
    let mut failures = 0;
    let low_water = |in_flight: &Mutex<BTreeSet<u64>>, next: u64| {
        in_flight.lock().ok().and_then(|s| s.first().copied()).unwrap_or(next).min(next)
    };
    'pulling: loop {
        let pull = ctx.pull(&queue, offset, ctx.config.long_poll);
        tokio::pin!(pull);
        let result = loop {
            tokio::select! {
                result = &mut pull => break result,
                _ = ticker.tick() => {
                    let upto = low_water(&in_flight, offset);
                    if upto > committed && ctx.commit(&queue, upto, generation).await.is_ok() {
                        committed = upto;
                    }
                }
                _ = stop.changed() => break 'pulling,
            }
        };
        while tasks.try_join_next().is_some() {}
        match result {
            Ok(found) => {
                failures = 0;
                let batches = ctx.listener.chunks(found.messages);
                for batch in batches {
                    let permit = tokio::select! {
                        permit = ctx.permits.clone().acquire_owned() => match permit {
                            Ok(p) => p,
                            Err(_) => break 'pulling,
                        },
                        _ = stop.changed() => break 'pulling,
                    };
                    let offsets: Vec<u64> = batch.iter().map(|m| m.queue_offset).collect();
                    if let Ok(mut set) = in_flight.lock() {
                        set.extend(offsets.iter().copied());
                    }
                    offset = offsets.last().map_or(offset, |o| o + 1);
                    let (ctx, in_flight, mut stop) = (ctx.clone(), in_flight.clone(), stop.clone());
                    tasks.spawn(async move {
                        while ctx.consume(&batch).await == ConsumeResult::Later && !ctx.hand_back(&batch, false).await {
                            // The broker could not take it back: retry here.
                            // Stopping: leave it uncommitted for the next
                            // owner rather than hold the stop up.
                            if !pause(&mut stop, ctx.config.suspend).await {
                                return;
                            }
                        }
                        if let Ok(mut set) = in_flight.lock() {
                            for o in offsets {
                                set.remove(&o);
                            }
                        }
                        drop(permit);
                    });
                }
                offset = offset.max(found.next_offset);
            }
            Err(e) => {
                offset = after_pull_error(&ctx, &queue, &e, offset, (&mut committed, generation)).await;
                if !pause(&mut stop, Backoff::default().delay(failures)).await {
                    break;
                }
                failures += 1;
            }
        }
    }
    // Revoked or shutting down: let the listener finish what it holds, then
    // commit the smallest offset not done.
    let finished = tokio::time::timeout(STOP_GRACE, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tasks.abort_all();
    }
    let upto = low_water(&in_flight, offset);
    if upto > committed {
        let _ = ctx.commit(&queue, upto, generation).await;
    }
}
