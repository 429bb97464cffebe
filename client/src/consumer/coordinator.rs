//! One broker's part of a push consumer: a coordinator task heartbeats to
//! that broker (every `heartbeat_interval`, and at once when the broker says
//! the assignment changed), receives the member's queues there, and runs one
//! worker per queue.

use super::worker::{self, Ctx};
use crate::error::ClientError;
use crate::session::Backoff;
use brook_proto::request::{Heartbeat, QueueRef, RetryPolicy};
use brook_proto::{Request, Response};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

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

pub(super) async fn coordinate(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
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
            Err(e) => {
                if e.code().is_none() {
                    ctx.route_stale.notify_one();
                }
                failures = failures.saturating_add(1);
            }
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

pub(super) async fn heartbeat(
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
