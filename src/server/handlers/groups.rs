//! Consumer-group requests: each goes to its group's actor.

use crate::actors::consumer_group::{Beat, Commit, Describe, Fetch, Leave, Lock, Reset, Unlock};
use crate::actors::queue::{OffsetAtTime, Range};
use crate::error::Error;
use crate::ha::meta::{self, MetaEvent};
use crate::server::context::{BrokerCore, ConnInfo};
use crate::server::handlers::Reply;
use brook_proto::names::validate_name;
use brook_proto::request::{ConsumeMode, Heartbeat, QueueOffset, QueueRef, ResetTo, Subscription};
use brook_proto::system::retry_topic;
use brook_proto::{Response, WireError};
use std::sync::atomic::Ordering;

/// A member's heartbeat: joins or stays, answered with its queues. A
/// clustering member also consumes its group's retry topic (created here,
/// as RocketMQ does), so retries reach whichever member is alive.
pub async fn heartbeat(core: &BrokerCore, conn: &ConnInfo, mut heartbeat: Heartbeat) -> Reply {
    let group = core.groups.get(&heartbeat.group)?;
    if heartbeat.mode == ConsumeMode::Clustering {
        let retry = retry_topic(&heartbeat.group);
        validate_name("retry topic", &retry)
            .map_err(|e| Error::InvalidName(format!("group name too long for its retry topic: {e}")))?;
        core.appender.ensure_topic(&retry)?;
        if !heartbeat.subscriptions.iter().any(|s| s.topic == retry) {
            heartbeat.subscriptions.push(Subscription { topic: retry, tags: None, sql: None });
        }
    }
    conn.in_group.store(true, Ordering::Relaxed);
    let (generation, queues) =
        group.send(Beat { heartbeat, client: conn.client.clone() }).await.map_err(Error::from)??;
    Ok(Response::Assignment { generation, queues })
}

/// Every group known.
pub fn list(core: &BrokerCore) -> Reply {
    Ok(Response::Groups(core.groups.known()))
}

/// A member leaves.
pub async fn leave(core: &BrokerCore, group: &str, member: String) -> Reply {
    core.groups.get(group)?.send(Leave { member }).await.map_err(Error::from)?;
    Ok(Response::Done)
}

/// A member commits offsets.
pub async fn commit(
    core: &BrokerCore,
    group: &str,
    member: String,
    offsets: Vec<QueueOffset>,
    generation: u64,
) -> Reply {
    // Offsets are the master's; a slave's consumers hold theirs until it
    // is back.
    if let Some(e) = core.replication.not_master() {
        return Err(e.into());
    }
    let commit = Commit { member: member.clone(), offsets, generation };
    let moved = core.groups.get(group)?.send(commit).await.map_err(Error::from)??;
    // What the commit moved, where it now is, travels in the log; a commit
    // that moved nothing writes nothing.
    if !moved.is_empty() {
        let event = MetaEvent::Offsets { group: group.to_string(), offsets: moved, commit_by: Some(member) };
        meta::record(&core.appender, &event).await?;
    }
    Ok(Response::Done)
}

/// Moves a group's offsets on a topic (backtrack) and tells its members.
pub async fn reset(core: &BrokerCore, group: &str, topic: &str, to: ResetTo) -> Reply {
    validate_name("topic", topic).map_err(Error::InvalidName)?;
    let queues = core.topics.get(topic).map(|t| t.queues).ok_or_else(|| Error::TopicNotFound(topic.to_string()))?;
    let mut targets = Vec::with_capacity(queues as usize);
    match to {
        ResetTo::Offsets(pairs) => {
            for (queue, offset) in pairs {
                if queue >= queues {
                    return Err(Error::QueueOutOfRange { topic: topic.to_string(), queue, queues }.into());
                }
                let (min, max) = core.registry.queue(topic, queue).send(Range).await.map_err(Error::from)??;
                targets.push(QueueOffset { topic: topic.to_string(), queue, offset: offset.clamp(min, max) });
            }
        }
        to => {
            for queue in 0..queues {
                let addr = core.registry.queue(topic, queue);
                let offset = match to {
                    ResetTo::Time(ts) => addr.send(OffsetAtTime { ts }).await.map_err(Error::from)??,
                    ResetTo::Latest => addr.send(Range).await.map_err(Error::from)??.1,
                    _ => addr.send(Range).await.map_err(Error::from)??.0,
                };
                targets.push(QueueOffset { topic: topic.to_string(), queue, offset });
            }
        }
    }
    if let Some(e) = core.replication.not_master() {
        return Err(e.into());
    }
    core.groups
        .get(group)?
        .send(Reset { topic: topic.to_string(), offsets: targets.clone() })
        .await
        .map_err(Error::from)?;
    let event = MetaEvent::Offsets { group: group.to_string(), offsets: targets.clone(), commit_by: None };
    meta::record(&core.appender, &event).await?;
    slog::info!(core.logger, "group offsets reset"; "group" => group, "topic" => topic);
    Ok(Response::QueueOffsets(targets))
}

/// Where a member starts on a queue.
pub async fn fetch(core: &BrokerCore, group: &str, member: String, queue: QueueRef) -> Reply {
    let offset = core.groups.get(group)?.send(Fetch { member, queue }).await.map_err(Error::from)??;
    Ok(Response::Offset(offset))
}

/// Takes or renews an orderly lock.
pub async fn lock(core: &BrokerCore, group: &str, member: String, queue: QueueRef) -> Reply {
    let ttl_ms = core.groups.get(group)?.send(Lock { member, queue }).await.map_err(Error::from)??;
    Ok(Response::Locked { ttl_ms })
}

/// Releases an orderly lock.
pub async fn unlock(core: &BrokerCore, group: &str, member: String, queue: QueueRef) -> Reply {
    core.groups.get(group)?.send(Unlock { member, queue }).await.map_err(Error::from)?;
    Ok(Response::Done)
}

/// Describes a group.
pub async fn describe(core: &BrokerCore, group: &str) -> Reply {
    if !core.groups.known().iter().any(|g| g == group) {
        return Err(WireError::new(brook_proto::ErrorCode::GroupNotFound, format!("group {group:?} not found")));
    }
    let info = core.groups.get(group)?.send(Describe).await.map_err(Error::from)??;
    Ok(Response::Group(info))
}
