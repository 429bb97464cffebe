//! The push consumer: a member of a consumer group. A coordinator task sends
//! heartbeats (every `heartbeat_interval`, and at once when the broker says
//! the assignment changed), receives the member's queues, and runs one worker
//! per queue. Workers pull with long polling — no fixed polling interval
//! anywhere — hand messages to the listener and commit offsets to the
//! broker:
//!
//! - concurrent mode: up to `max_in_flight` messages at once; the committed
//!   offset is the smallest one not yet done;
//! - orderly mode: one message of a queue at a time, in offset order, while
//!   holding the queue's lock on the broker (taken before consuming, renewed,
//!   released after the last commit), so during a rebalance two members
//!   never consume one queue at once.
//!
//! A message the listener answers "later" for (or does not finish within
//! `consume_timeout`) is handed back to the broker, which delivers it again
//! through the group's retry topic after a back-off, and parks it in the
//! group's dead-letter topic after `max_reconsume_times`. Orderly consumers
//! retry in place after `suspend` instead, then dead-letter it and move on.
//! Broadcasting consumers retry locally after `suspend`.

use super::config::PushConfig;
use super::worker::{self, Ctx, Listener};
use super::ConsumeResult;
use crate::error::ClientError;
use crate::session::{Backoff, Session};
use brook_proto::request::{Heartbeat, QueueRef, RetryPolicy};
use brook_proto::{Request, Response, StoredMessage};
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch, Semaphore};
use tokio::task::JoinHandle;

/// A running push consumer.
pub struct PushConsumer {
    shutdown: watch::Sender<bool>,
    coordinator: JoinHandle<()>,
    ctx: Arc<Ctx>,
}

impl PushConsumer {
    /// Joins the group and calls `listener` for each message.
    pub async fn start<F, Fut>(addr: &str, config: PushConfig, listener: F) -> Result<PushConsumer, ClientError>
    where
        F: Fn(StoredMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ConsumeResult> + Send + 'static,
    {
        let each: Arc<dyn Fn(StoredMessage) -> BoxFuture<'static, ConsumeResult> + Send + Sync> =
            Arc::new(move |m| listener(m).boxed());
        Self::start_with(addr, config, Listener::Each(each)).await
    }

    /// Joins the group and calls `listener` with each pulled batch (one
    /// queue's messages in offset order); the answer covers the batch.
    pub async fn start_batch<F, Fut>(addr: &str, config: PushConfig, listener: F) -> Result<PushConsumer, ClientError>
    where
        F: Fn(Vec<StoredMessage>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ConsumeResult> + Send + 'static,
    {
        let batch: Arc<dyn Fn(Vec<StoredMessage>) -> BoxFuture<'static, ConsumeResult> + Send + Sync> =
            Arc::new(move |m| listener(m).boxed());
        Self::start_with(addr, config, Listener::Batch(batch)).await
    }

    async fn start_with(addr: &str, config: PushConfig, listener: Listener) -> Result<PushConsumer, ClientError> {
        if config.subscriptions.is_empty() {
            return Err(ClientError::InvalidArgument("subscribe to at least one topic".into()));
        }
        let session = Session::connect(addr, &config.member).await?;
        let ctx = Arc::new(Ctx {
            permits: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            session,
            config,
            listener,
            assignment: Mutex::new(Vec::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
        });
        // A subscription the broker refuses (a malformed filter, say) fails
        // here, with the broker's reason, instead of in every heartbeat.
        let mut notices = None;
        if let Err(e) = heartbeat(&ctx, &mut notices).await {
            if !e.is_retriable() {
                return Err(e);
            }
        }
        let (shutdown, stop) = watch::channel(false);
        let coordinator = tokio::spawn(coordinate(ctx.clone(), stop));
        Ok(PushConsumer { shutdown, coordinator, ctx })
    }

    /// The queues this member consumes now.
    pub fn assignment(&self) -> Vec<QueueRef> {
        self.ctx.assignment.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// The member id.
    pub fn member(&self) -> &str {
        &self.ctx.config.member
    }

    /// Leaves gracefully: stops pulling, lets messages in the listener
    /// finish, commits, releases locks and leaves the group.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.coordinator.await;
    }

    /// Stops dead, as a crash would: no commit, no unlock, no leave; the
    /// connection simply closes.
    pub async fn kill(self) {
        self.coordinator.abort();
        let _ = self.coordinator.await;
        self.ctx.session.close();
    }
}

/// A queue worker. Dropping it (the coordinator was aborted: a kill)
/// aborts the task too, so nothing keeps consuming.
struct Running {
    stop: watch::Sender<bool>,
    handle: Option<JoinHandle<()>>,
}

impl Running {
    /// Signals the worker and hands back its task to await.
    fn stop(mut self) -> Option<JoinHandle<()>> {
        let _ = self.stop.send(true);
        self.handle.take()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

async fn coordinate(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let mut workers: HashMap<QueueRef, Running> = HashMap::new();
    let mut notices: Option<(usize, broadcast::Receiver<Request>)> = None;
    let mut failures = 0u32;
    let mut reset: Option<String> = None;
    loop {
        if let Some(topic) = reset.take() {
            // Offsets moved under the workers of this topic: stop them (their
            // last commits are stale and ignored) and start again below.
            let queues: Vec<QueueRef> = workers.keys().filter(|q| q.topic == topic).cloned().collect();
            let stopping: Vec<JoinHandle<()>> =
                queues.iter().filter_map(|q| workers.remove(q)).filter_map(Running::stop).collect();
            for handle in stopping {
                let _ = handle.await;
            }
        }
        match heartbeat(&ctx, &mut notices).await {
            Ok(queues) => {
                failures = 0;
                reconcile(&ctx, &mut workers, queues).await;
            }
            Err(_) => failures = failures.saturating_add(1),
        }
        let wait = if failures == 0 { ctx.config.heartbeat_interval } else { Backoff::default().delay(failures) };
        let changed = async {
            match notices.as_mut() {
                Some((_, rx)) => loop {
                    match rx.recv().await {
                        Ok(Request::AssignmentChanged { group }) if group == ctx.config.group => return None,
                        Ok(Request::OffsetsReset { group, topic }) if group == ctx.config.group => return Some(topic),
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            topic = changed => reset = topic,
            _ = stop.changed() => break,
        }
    }
    let stopping: Vec<JoinHandle<()>> = workers.drain().filter_map(|(_, running)| running.stop()).collect();
    for handle in stopping {
        let _ = handle.await;
    }
    if let Ok(conn) = ctx.session.get().await {
        let leave = Request::LeaveGroup { group: ctx.config.group.clone(), member: ctx.config.member.clone() };
        let _ = conn.request(leave).await;
    }
}

async fn heartbeat(
    ctx: &Ctx,
    notices: &mut Option<(usize, broadcast::Receiver<Request>)>,
) -> Result<Vec<QueueRef>, ClientError> {
    let conn = ctx.session.get().await?;
    if notices.as_ref().map(|(id, _)| *id) != Some(conn.id()) {
        *notices = Some((conn.id(), conn.notices()));
    }
    let config = &ctx.config;
    let beat = Heartbeat {
        group: config.group.clone(),
        member: config.member.clone(),
        subscriptions: config.subscriptions.clone(),
        mode: config.mode,
        start: config.start,
        orderly: config.orderly,
        session_timeout_ms: config.session_timeout.as_millis() as u64,
        retry: RetryPolicy {
            max_reconsume_times: config.max_reconsume_times,
            backoff_ms: config.retry_backoff.iter().map(|d| d.as_millis() as u64).collect(),
        },
    };
    match conn.request(Request::Heartbeat(beat)).await? {
        Response::Assignment { queues, generation } => {
            ctx.generation.store(generation, std::sync::atomic::Ordering::Release);
            Ok(queues)
        }
        other => Err(ClientError::Protocol(format!("unexpected answer {other:?}"))),
    }
}

/// Stops workers of revoked queues and starts workers for new ones. A
/// queue's old worker is always finished before a new one starts.
async fn reconcile(ctx: &Arc<Ctx>, workers: &mut HashMap<QueueRef, Running>, queues: Vec<QueueRef>) {
    if let Ok(mut assignment) = ctx.assignment.lock() {
        assignment.clone_from(&queues);
    }
    let revoked: Vec<QueueRef> = workers.keys().filter(|q| !queues.contains(q)).cloned().collect();
    let stopping: Vec<JoinHandle<()>> =
        revoked.iter().filter_map(|q| workers.remove(q)).filter_map(Running::stop).collect();
    // Revoked queues are committed (and unlocked) before anything new
    // starts, which keeps re-delivery after a rebalance to the head.
    for handle in stopping {
        let _ = handle.await;
    }
    for queue in queues {
        if workers.contains_key(&queue) {
            continue;
        }
        let (stop, rx) = watch::channel(false);
        let handle = tokio::spawn(worker::run(ctx.clone(), queue.clone(), rx));
        workers.insert(queue, Running { stop, handle: Some(handle) });
    }
}
