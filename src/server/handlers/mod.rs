//! Request handlers, one file per area, one `async fn` per request kind.
//! Each checks its input before anything reaches an actor, so invalid input
//! changes nothing, and maps every error to its wire code on the way out.
//!
//! - [`broker`]: the broker's own status.
//! - [`topics`]: create, delete, list, describe.
//! - [`send`]: sends, gathered per connection and stored in arrival order.
//! - [`pull`]: pulls and the reading of their records.
//! - [`groups`]: consumer-group membership, offsets, locks.
//! - [`query`]: messages by id, key and time; property-filter cache.
//! - [`retry`]: hand-backs to the retry topic, dead letters, resends.
//! - [`txn`]: producer groups and transaction outcomes.
//! - [`trace`]: message trace records.

pub mod broker;
pub mod groups;
pub mod pull;
pub mod query;
pub mod retry;
pub mod send;
pub mod topics;
pub mod trace;
pub mod txn;

use crate::error::Error;
use crate::server::context::BrokerCore;
use brook_proto::names::validate_name;
use brook_proto::{Response, WireError};

/// What a request is answered with: a response or why not.
pub type Reply = Result<Response, WireError>;

/// The topic's queue count, or the error a request naming it gets.
pub(crate) fn topic_queues(core: &BrokerCore, topic: &str) -> Result<u32, WireError> {
    validate_name("topic", topic).map_err(Error::InvalidName)?;
    core.topics.get(topic).map(|c| c.queues).ok_or_else(|| Error::TopicNotFound(topic.to_string()).into())
}

/// Refuses a queue id past the topic's queues.
pub(crate) fn check_queue(topic: &str, queue: u32, queues: u32) -> Result<(), WireError> {
    if queue >= queues {
        return Err(Error::QueueOutOfRange { topic: topic.to_string(), queue, queues }.into());
    }
    Ok(())
}
