//! Topic requests: create (or grow), delete, list and describe.

use crate::actors::queue::{Destroy, Range};
use crate::actors::queue_registry::QueueRegistry;
use crate::error::Error;
use crate::server::context::BrokerCore;
use crate::server::handlers::topic_queues;
use crate::server::handlers::Reply;
use crate::store::topics::TopicTable;
use crate::store::StorePaths;
use brook_proto::names::validate_name;
use brook_proto::request::{QueueStats, TopicInfo};
use brook_proto::Response;

/// Creates a topic, or changes its queue count.
pub fn create(core: &BrokerCore, name: &str, queues: u32) -> Reply {
    // A slave's topics are its master's (they arrive through the log).
    if let Some(e) = core.replication.not_master() {
        return Err(e.into());
    }
    core.topics.create(name, queues)?;
    slog::info!(core.logger, "topic created or updated"; "topic" => name, "queues" => queues);
    Ok(Response::Topic(TopicInfo { name: name.to_string(), queues, queue_stats: Vec::new() }))
}

/// Deletes a topic: its queue actors stop and its consume queues go.
pub async fn delete(core: &BrokerCore, name: &str) -> Reply {
    validate_name("topic", name).map_err(Error::InvalidName)?;
    if let Some(e) = core.replication.not_master() {
        return Err(e.into());
    }
    if !remove(&core.topics, &core.registry, &core.paths, name).await? {
        return Err(Error::TopicNotFound(name.to_string()).into());
    }
    slog::info!(core.logger, "topic deleted"; "topic" => name);
    Ok(Response::Done)
}

/// Removes topic `name` (a slave too, when its master's log says so);
/// whether it existed.
pub async fn remove(
    topics: &TopicTable,
    registry: &QueueRegistry,
    paths: &StorePaths,
    name: &str,
) -> crate::error::Result<bool> {
    if !topics.delete(name)? {
        return Ok(false);
    }
    for addr in registry.remove_topic(name) {
        let _ = addr.send(Destroy).await;
    }
    let dir = paths.consumequeue().join(name);
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    Ok(true)
}

/// Every topic with its queue count.
pub fn list(core: &BrokerCore) -> Reply {
    Ok(Response::Topics(
        core.topics
            .list()
            .into_iter()
            .map(|(name, c)| TopicInfo { name, queues: c.queues, queue_stats: Vec::new() })
            .collect(),
    ))
}

/// A topic with each queue's offset range.
pub async fn describe(core: &BrokerCore, name: &str) -> Reply {
    let queues = topic_queues(core, name)?;
    let mut stats = Vec::with_capacity(queues as usize);
    for queue in 0..queues {
        let (min_offset, max_offset) = core.registry.queue(name, queue).send(Range).await.map_err(Error::from)??;
        stats.push(QueueStats { queue, min_offset, max_offset });
    }
    Ok(Response::Topic(TopicInfo { name: name.to_string(), queues, queue_stats: stats }))
}
