//! Finding messages: by id (the id decodes to a log offset — no index), by
//! key (the key index), and by time (a binary search per queue); and the
//! parsed-once cache of property filters.

use crate::actors::indexer::Lookup;
use crate::actors::queue::OffsetAtTime;
use crate::error::Error;
use crate::filter::sql::{self, Expr};
use crate::server::context::BrokerCore;
use crate::server::handlers::Reply;
use brook_proto::names::validate_name;
use brook_proto::request::QueueOffset;
use brook_proto::{MessageId, Response, WireError};
use std::sync::Arc;

/// Most messages one key query returns.
pub const MAX_KEY_RESULTS: u32 = 1024;
/// Parsed filters kept; the cache is emptied when it grows past this.
const SQL_CACHE: usize = 10_000;
/// Index times are taken when a message is acknowledged, a moment after it
/// was stored: the index is searched this much wider, then the stored time
/// decides.
const TS_SLACK_MS: i64 = 5_000;

/// A property filter, parsed once per distinct expression.
pub fn sql_filter(core: &BrokerCore, text: &str) -> Result<Arc<Expr>, WireError> {
    if let Some(expr) = core.sql_cache.get(text) {
        return Ok(expr.clone());
    }
    let expr = Arc::new(sql::parse(text).map_err(|e| Error::InvalidArgument(e.to_string()))?);
    if core.sql_cache.len() >= SQL_CACHE {
        core.sql_cache.clear();
    }
    core.sql_cache.insert(text.to_string(), expr.clone());
    Ok(expr)
}

/// A message by id.
pub async fn get_message(core: &BrokerCore, msg_id: &str) -> Reply {
    let id: MessageId = msg_id.parse().map_err(|e| Error::InvalidArgument(format!("message id {msg_id:?}: {e}")))?;
    let rec = core
        .appender
        .read(vec![(id.log_offset, None)])
        .await?
        .pop()
        .unwrap_or_else(|| Err(Error::MessageNotFound(msg_id.to_string())))
        .map_err(|e| Error::MessageNotFound(format!("{msg_id}: {e}")))?;
    let queue_offset = rec.head.queue_offset;
    Ok(Response::Message(Box::new(rec.to_stored_message(core.advertised, id.log_offset, queue_offset))))
}

/// Messages of `topic` with `key`, newest first.
pub async fn by_key(core: &BrokerCore, topic: &str, key: &str, (begin, end): (i64, i64), max: u32) -> Reply {
    validate_name("topic", topic).map_err(Error::InvalidName)?;
    if key.is_empty() || max == 0 || max > MAX_KEY_RESULTS || begin > end {
        return Err(Error::InvalidArgument(format!(
            "a key query needs a key, 1..={MAX_KEY_RESULTS} results and begin <= end"
        ))
        .into());
    }
    let indexer = core.registry.indexer().ok_or_else(|| Error::Busy("no key index".into()))?;
    let lookup = Lookup {
        topic: topic.to_string(),
        key: key.to_string(),
        begin_ts: begin.saturating_sub(TS_SLACK_MS),
        end_ts: end.saturating_add(TS_SLACK_MS),
        // Collisions and slack are filtered out below: ask for more.
        max: (max as usize).saturating_mul(2).saturating_add(16),
    };
    let offsets = indexer.send(lookup).await.map_err(Error::from)??;
    let records = core.appender.read(offsets.iter().map(|o| (*o, None)).collect()).await?;
    let mut out = Vec::new();
    for (offset, rec) in offsets.into_iter().zip(records) {
        // Retention may have taken it; a hash collision names another key.
        let Ok(rec) = rec else { continue };
        if rec.message.topic != topic
            || !rec.message.keys.iter().any(|k| k == key)
            || rec.head.store_ts < begin
            || rec.head.store_ts > end
        {
            continue;
        }
        let queue_offset = rec.head.queue_offset;
        out.push(rec.to_stored_message(core.advertised, offset, queue_offset));
        if out.len() >= max as usize {
            break;
        }
    }
    out.sort_by_key(|m| std::cmp::Reverse((m.store_ts, m.log_offset)));
    Ok(Response::Messages(out))
}

/// Per queue, the first offset stored at or after `time_ms`.
pub async fn offsets_at_time(core: &BrokerCore, topic: &str, time_ms: i64) -> Reply {
    validate_name("topic", topic).map_err(Error::InvalidName)?;
    let queues = core.topics.get(topic).map(|t| t.queues).ok_or_else(|| Error::TopicNotFound(topic.to_string()))?;
    let mut out = Vec::with_capacity(queues as usize);
    for queue in 0..queues {
        let offset =
            core.registry.queue(topic, queue).send(OffsetAtTime { ts: time_ms }).await.map_err(Error::from)??;
        out.push(QueueOffset { topic: topic.to_string(), queue, offset });
    }
    Ok(Response::QueueOffsets(out))
}
