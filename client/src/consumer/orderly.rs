//! The orderly worker: holds its queue's broker lock and consumes one
//! message at a time in offset order; a message the listener fails is
//! retried in place and dead-lettered past the limit.

use super::worker::{after_pull_error, pause, start_offset, Ctx, DEFAULT_MAX_RECONSUME_TIMES};
use super::ConsumeResult;
use crate::session::Backoff;
use brook_proto::request::QueueRef;
use brook_proto::{ErrorCode, StoredMessage};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Takes the queue's broker-side lock, waiting while another member holds
/// it (the previous owner holds it until it commits and unlocks, or its lock
/// expires); its time to live, or `None` once told to stop.
async fn lock_queue(ctx: &Ctx, queue: &QueueRef, stop: &mut watch::Receiver<bool>) -> Option<u64> {
    let mut attempt = 0;
    loop {
        match ctx.lock(queue).await {
            Ok(ttl) => return Some(ttl),
            Err(_) => {
                if !pause(stop, Duration::from_millis(50).saturating_mul(1 << attempt.min(4))).await {
                    return None;
                }
                attempt += 1;
            }
        }
    }
}

/// Hands `messages` to the listener in order: the next waits until this one
/// succeeds, or has failed past the retry limit and is dead-lettered so the
/// queue can move on. Returns the offset after the last one done.
async fn consume_in_order(
    ctx: &Ctx,
    messages: Vec<StoredMessage>,
    mut offset: u64,
    stop: &mut watch::Receiver<bool>,
) -> u64 {
    let max_retries = ctx.config.max_reconsume_times.unwrap_or(DEFAULT_MAX_RECONSUME_TIMES);
    for mut chunk in ctx.listener.chunks(messages) {
        let mut failures = 0;
        while ctx.consume(&chunk).await == ConsumeResult::Later {
            failures += 1;
            if failures > max_retries && ctx.hand_back(&chunk, true).await {
                break;
            }
            if !pause(stop, ctx.config.suspend).await {
                break;
            }
            for msg in &mut chunk {
                msg.reconsume_times = failures;
            }
        }
        if *stop.borrow() {
            break;
        }
        offset = chunk.last().map_or(offset, |m| m.queue_offset + 1);
    }
    offset
}

pub(super) async fn orderly(ctx: Arc<Ctx>, queue: QueueRef, mut stop: watch::Receiver<bool>) {
    'locking: loop {
        let Some(ttl) = lock_queue(&ctx, &queue, &mut stop).await else {
            return;
        };
        let renew_every = ctx.config.lock_renew.min(Duration::from_millis(ttl / 3)).max(Duration::from_millis(10));
        let mut renew_at = Instant::now() + renew_every;
        let generation = ctx.generation.load(std::sync::atomic::Ordering::Acquire);
        let Some(mut offset) = start_offset(&ctx, &queue, &mut stop).await else {
            ctx.unlock(&queue).await;
            return;
        };
        let mut committed = offset;
        let mut failures = 0;
        let lost_lock = loop {
            if *stop.borrow() {
                break false;
            }
            if Instant::now() >= renew_at {
                match ctx.lock(&queue).await {
                    Ok(_) => renew_at = Instant::now() + renew_every,
                    Err(e) if e.code() == Some(ErrorCode::NotQueueOwner) => break true,
                    Err(_) => {}
                }
            }
            let poll = ctx.config.long_poll.min(renew_at.saturating_duration_since(Instant::now()));
            let result = tokio::select! {
                result = ctx.pull(&queue, offset, poll) => result,
                _ = stop.changed() => break false,
            };
            match result {
                Ok(found) => {
                    failures = 0;
                    offset = consume_in_order(&ctx, found.messages, offset, &mut stop).await;
                    if !*stop.borrow() {
                        offset = offset.max(found.next_offset);
                    }
                    if offset > committed && ctx.commit(&queue, offset, generation).await.is_ok() {
                        committed = offset;
                    }
                }
                Err(e) => {
                    offset = after_pull_error(&ctx, &queue, &e, offset, (&mut committed, generation)).await;
                    if !pause(&mut stop, Backoff::default().delay(failures)).await {
                        break false;
                    }
                    failures += 1;
                }
            }
        };
        if offset > committed {
            let _ = ctx.commit(&queue, offset, generation).await;
        }
        if lost_lock {
            continue 'locking;
        }
        ctx.unlock(&queue).await;
        return;
    }
}
