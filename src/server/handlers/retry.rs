//! Retries and dead letters. A consumer hands back a message it failed; the
//! broker writes a copy to the group's retry topic, parked behind the next
//! back-off (delay level 3 + n as RocketMQ, or the group's own list), or —
//! past the group's `max_reconsume_times` — to the group's dead-letter
//! topic, where nothing consumes it. Each copy keeps the original topic,
//! queue and message id and counts its retries in properties. A dead
//! letter can be sent back to the topic it came from.

use crate::actors::consumer_group::GetRetryPolicy;
use crate::actors::scheduler::entries_from;
use crate::delay::Delay;
use crate::error::Error;
use crate::server::context::BrokerCore;
use crate::server::handlers::Reply;
use crate::store::record;
use brook_proto::names::validate_name;
use brook_proto::request::StoredAck;
use brook_proto::system::{
    dlq_topic, is_reserved_topic, retry_topic, PROP_ORIGIN_LOG_OFFSET, PROP_ORIGIN_QUEUE, PROP_RECONSUME_TIMES,
    PROP_RETRY_TOPIC,
};
use brook_proto::{MessageId, Response, WireError};

/// Handles a consumer's hand-back of the message at `log_offset`.
pub async fn send_back(core: &BrokerCore, group: &str, log_offset: u64, to_dlq: bool) -> Reply {
    validate_name("group", group).map_err(Error::InvalidName)?;
    let policy = core.groups.get(group)?.send(GetRetryPolicy).await.map_err(Error::from)?;
    let max = policy.max_reconsume_times.unwrap_or(core.config.max_reconsume_times);
    let rec = read_one(core, log_offset).await?;
    let queue_id = rec.head.queue_id;
    let mut msg = rec.message;
    let origin_topic = msg.properties.get(PROP_RETRY_TOPIC).cloned().unwrap_or_else(|| msg.topic.clone());
    if is_reserved_topic(&origin_topic) {
        return Err(Error::InvalidArgument(format!(
            "the record at {log_offset} is in {origin_topic:?}, not a message a consumer received"
        ))
        .into());
    }
    let times: u32 = msg.properties.get(PROP_RECONSUME_TIMES).and_then(|n| n.parse().ok()).unwrap_or(0);
    let origin_log = msg.properties.get(PROP_ORIGIN_LOG_OFFSET).cloned();
    let props = &mut msg.properties;
    props.insert(PROP_RETRY_TOPIC.into(), origin_topic.clone());
    props.entry(PROP_ORIGIN_QUEUE.into()).or_insert_with(|| queue_id.to_string());
    props.entry(PROP_ORIGIN_LOG_OFFSET.into()).or_insert_with(|| log_offset.to_string());
    props.insert(PROP_RECONSUME_TIMES.into(), (times + 1).to_string());
    if to_dlq || times >= max {
        let dlq = dlq_topic(group);
        validate_name("dead-letter topic", &dlq).map_err(Error::InvalidName)?;
        core.appender.ensure_topic(&dlq)?;
        msg.topic.clone_from(&dlq);
        let code = record::tag_hash(msg.tags.as_deref());
        core.appender.append(&dlq, 0, vec![(msg, code)]).await?;
        core.metrics.dead_lettered(group, &origin_topic);
        slog::info!(core.logger, "message dead-lettered";
            "group" => group, "topic" => &origin_topic, "log_offset" => log_offset, "reconsume_times" => times);
        return Ok(Response::Done);
    }
    let retry = retry_topic(group);
    validate_name("retry topic", &retry).map_err(Error::InvalidName)?;
    core.appender.ensure_topic(&retry)?;
    let now = crate::clock::now_ms();
    let delay = match policy.backoff_ms.as_slice() {
        [] => Delay::Level((3 + times).min(core.delays.levels_ms().len() as u32)),
        list => {
            let ms = list.get(times as usize).or(list.last()).copied().unwrap_or(0);
            Delay::At(now.saturating_add(ms as i64))
        }
    };
    msg.topic.clone_from(&retry);
    let traced = crate::server::handlers::trace::is_traced(&msg);
    let parked = core.delays.park(&mut msg, &retry, 0, delay, now);
    core.appender.append(parked.topic, parked.queue, vec![(msg, parked.due as u64)]).await?;
    if traced {
        let origin = props_origin(log_offset, &origin_log);
        let msg_id = MessageId { broker: core.advertised, log_offset: origin }.to_hex();
        let event = serde_json::json!({ "event": "retry", "msg_id": msg_id, "topic": origin_topic, "time": now,
            "group": group, "reconsume": times + 1, "due": parked.due });
        crate::server::handlers::trace::record(&core.appender, &core.logger, vec![(msg_id, event)]);
    }
    Ok(Response::Done)
}

/// The id-bearing log offset: the first copy's, if this is a copy.
fn props_origin(log_offset: u64, origin: &Option<String>) -> u64 {
    origin.as_deref().and_then(|o| o.parse().ok()).unwrap_or(log_offset)
}

async fn read_one(core: &BrokerCore, log_offset: u64) -> Result<record::DecodedRecord, WireError> {
    let read = core.appender.read(vec![(log_offset, None)]).await?.pop();
    read.unwrap_or_else(|| Err(Error::MessageNotFound(format!("nothing at log offset {log_offset}"))))
        .map_err(|e| Error::MessageNotFound(format!("no message at log offset {log_offset}: {e}")).into())
}

/// Sends the dead letter with id `msg_id` back to the topic and queue it
/// was first sent to, with its retry count reset.
pub async fn resend_dlq(core: &BrokerCore, group: &str, msg_id: &str) -> Reply {
    validate_name("group", group).map_err(Error::InvalidName)?;
    let id: MessageId = msg_id.parse().map_err(|e| Error::InvalidArgument(format!("message id {msg_id:?}: {e}")))?;
    let dlq = dlq_topic(group);
    if core.topics.get(&dlq).is_none() {
        return Err(Error::MessageNotFound(format!("group {group:?} has no dead letters")).into());
    }
    // Dead-letter queues are small and rarely read: a scan is enough.
    let (entries, _) = entries_from(&core.registry, &dlq, 0).await?;
    let at: Vec<(u64, Option<u32>)> = entries.iter().map(|(_, e)| (e.log_offset, Some(e.size))).collect();
    let mut found = None;
    for ((_, entry), rec) in entries.iter().zip(core.appender.read(at).await?) {
        let Ok(rec) = rec else { continue };
        let origin =
            rec.message.properties.get(PROP_ORIGIN_LOG_OFFSET).and_then(|o| o.parse().ok()).unwrap_or(entry.log_offset);
        if origin == id.log_offset || entry.log_offset == id.log_offset {
            found = Some(rec);
        }
    }
    let Some(rec) = found else {
        return Err(Error::MessageNotFound(format!("{msg_id} is not in {dlq}")).into());
    };
    let mut msg = rec.message;
    let topic = msg.properties.remove(PROP_RETRY_TOPIC).unwrap_or_default();
    let queue: u32 = msg.properties.remove(PROP_ORIGIN_QUEUE).and_then(|q| q.parse().ok()).unwrap_or(0);
    msg.properties.remove(PROP_RECONSUME_TIMES);
    let queues = core.topics.get(&topic).map(|t| t.queues).ok_or_else(|| Error::TopicNotFound(topic.clone()))?;
    let queue = if queue < queues { queue } else { 0 };
    msg.topic.clone_from(&topic);
    let code = record::tag_hash(msg.tags.as_deref());
    let stored = core.appender.append(&topic, queue, vec![(msg, code)]).await?;
    slog::info!(core.logger, "dead letter resent"; "group" => group, "msg_id" => msg_id, "topic" => &topic);
    // The resent copy keeps the dead letter's id: the answer names its log
    // offset, not the copy's.
    Ok(Response::Sent(
        stored
            .into_iter()
            .map(|s| StoredAck { log_offset: id.log_offset, queue, queue_offset: s.queue_offset, deliver_at: None })
            .collect(),
    ))
}
