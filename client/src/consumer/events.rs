//! What a push consumer tells its user besides messages: things worth a log
//! line, such as messages retention deleted before they were read. A hook
//! set with [`PushConfig::on_event`](crate::PushConfig::on_event) gets
//! them; without one they go to standard error, so no skip is silent.

use crate::error::ClientError;
use brook_proto::request::QueueRef;
use brook_proto::ErrorCode;
use std::fmt;
use std::sync::Arc;

/// Something a push consumer noticed that its user may want to log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerEvent {
    /// Retention deleted messages of `queue` before this consumer read
    /// them: it was at `from` and goes on from `to`, the queue's first
    /// offset now (`to - from` messages skipped).
    SkippedByRetention {
        /// The replica set holding the queue ("" for a broker named
        /// directly).
        broker: String,
        /// The queue.
        queue: QueueRef,
        /// Where the consumer was.
        from: u64,
        /// Where it goes on.
        to: u64,
    },
    /// `queue` ends at `to`, before this consumer's offset `from`: the
    /// queue is shorter than where it was read to (a slave that was behind
    /// became master, say). The consumer goes on from the queue's end, so
    /// the next messages stored there are not skipped.
    BeyondQueueEnd {
        /// The replica set holding the queue ("" for a broker named
        /// directly).
        broker: String,
        /// The queue.
        queue: QueueRef,
        /// Where the consumer was.
        from: u64,
        /// The queue's end, where it goes on.
        to: u64,
    },
}

impl fmt::Display for ConsumerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsumerEvent::SkippedByRetention { broker, queue, from, to } => {
                let at = if broker.is_empty() { String::new() } else { format!(" on {broker}") };
                write!(
                    f,
                    "retention deleted {} messages of {}:{}{at} before they were consumed (offsets {from}..{to})",
                    to - from,
                    queue.topic,
                    queue.queue
                )
            }
            ConsumerEvent::BeyondQueueEnd { broker, queue, from, to } => {
                let at = if broker.is_empty() { String::new() } else { format!(" on {broker}") };
                write!(
                    f,
                    "{}:{}{at} ends at offset {to}, before this consumer's {from}: going on from its end",
                    queue.topic, queue.queue
                )
            }
        }
    }
}

/// A user's event hook.
#[derive(Clone)]
pub struct EventHook(pub(crate) Arc<dyn Fn(&ConsumerEvent) + Send + Sync>);

impl fmt::Debug for EventHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventHook")
    }
}

/// Where a queue worker goes on after a pull at `offset` failed with `err`,
/// and the event saying so if it moved: below the retained range, to the
/// queue's first offset (retention deleted the rest); beyond the queue's
/// end, back to the end — waiting there for the queue to reach the offset
/// would skip every message stored in between.
pub(crate) fn after_pull_error(
    err: &ClientError,
    offset: u64,
    (broker, queue): (&str, &QueueRef),
) -> (u64, Option<ConsumerEvent>) {
    let ClientError::Broker(e) = err else { return (offset, None) };
    let to = e.detail.unwrap_or(offset);
    let (broker, queue) = (broker.to_string(), queue.clone());
    let event = match e.code {
        ErrorCode::OffsetBelowRetained if to > offset => {
            ConsumerEvent::SkippedByRetention { broker, queue, from: offset, to }
        }
        ErrorCode::OffsetBeyondEnd if to < offset => ConsumerEvent::BeyondQueueEnd { broker, queue, from: offset, to },
        _ => return (offset, None),
    };
    (to, Some(event))
}

/// Hands `event` to the hook, or to standard error without one.
pub(crate) fn emit(hook: Option<&EventHook>, group: &str, event: &ConsumerEvent) {
    match hook {
        Some(EventHook(hook)) => hook(event),
        None => eprintln!("brook consumer group {group}: {event}"),
    }
}
