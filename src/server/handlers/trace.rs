//! Message traces: for each traced message (sent with `TRACE_ON`, by a
//! producer or consumer with tracing on, or every message when the broker's
//! `trace` is set) the broker writes one record per event to
//! `RMQ_SYS_TRACE_TOPIC`, keyed by the message id, so the key index finds a
//! message's whole timeline: sent, stored, delivered, consumed, and any
//! retry. Records are JSON; writing them never delays the traced request.

use crate::actors::appender::Appender;
use crate::server::context::{BrokerCore, ConnInfo};
use crate::store::record;
use brook_proto::request::ConsumeTrace;
use brook_proto::system::{PROP_TRACE, TRACE_TOPIC};
use brook_proto::{Message, Response, WireError};
use serde_json::{json, Value};

/// Whether a message is traced.
pub fn is_traced(msg: &Message) -> bool {
    msg.flag(PROP_TRACE)
}

/// Writes trace events in the background.
pub fn record(appender: &Appender, logger: &slog::Logger, events: Vec<(String, Value)>) {
    if events.is_empty() {
        return;
    }
    let items: Vec<(Message, u64)> = events
        .into_iter()
        .map(|(msg_id, event)| {
            let msg = Message::new(TRACE_TOPIC, event.to_string().into_bytes()).with_key(msg_id);
            (msg, record::tag_hash(None))
        })
        .collect();
    let (appender, logger) = (appender.clone(), logger.clone());
    tokio::spawn(async move {
        if let Err(e) = appender.append(TRACE_TOPIC, 0, items).await {
            slog::warn!(logger, "trace records not written"; "error" => %e);
        }
    });
}

/// One sent message's `sent` and `stored` events.
pub struct SentTrace<'a> {
    /// Message id.
    pub msg_id: String,
    /// Topic.
    pub topic: &'a str,
    /// Queue and offset (for a delayed or half message: where it waits).
    pub queue: u32,
    /// Queue offset.
    pub offset: u64,
    /// When the broker received the send.
    pub received_at: i64,
    /// How long storing took, ms.
    pub cost_ms: i64,
}

/// The `sent` and `stored` events of traced messages.
pub fn sent(core: &BrokerCore, conn: &ConnInfo, sent: Vec<SentTrace<'_>>) {
    let mut events = Vec::with_capacity(sent.len() * 2);
    for s in sent {
        events.push((
            s.msg_id.clone(),
            json!({ "event": "sent", "msg_id": s.msg_id, "topic": s.topic, "time": s.received_at,
                "producer": conn.client.client_id, "host": conn.peer.to_string(), "cost_ms": s.cost_ms,
                "result": "success" }),
        ));
        events.push((
            s.msg_id.clone(),
            json!({ "event": "stored", "msg_id": s.msg_id, "topic": s.topic, "time": s.received_at + s.cost_ms,
                "queue": s.queue, "offset": s.offset }),
        ));
    }
    record(&core.appender, &core.logger, events);
}

/// A consumer's report: `delivered` and `consumed` events.
pub fn report(
    core: &BrokerCore,
    conn: &ConnInfo,
    group: &str,
    traces: Vec<ConsumeTrace>,
) -> Result<Response, WireError> {
    let mut events = Vec::with_capacity(traces.len() * 2);
    for t in traces {
        events.push((
            t.msg_id.clone(),
            json!({ "event": "delivered", "msg_id": t.msg_id, "topic": t.topic, "time": t.delivered_at,
                "group": group, "client": conn.client.client_id }),
        ));
        events.push((
            t.msg_id.clone(),
            json!({ "event": "consumed", "msg_id": t.msg_id, "topic": t.topic,
                "time": t.delivered_at + t.cost_ms as i64, "group": group, "client": conn.client.client_id,
                "result": t.result, "cost_ms": t.cost_ms, "reconsume": t.reconsume_times }),
        ));
    }
    record(&core.appender, &core.logger, events);
    Ok(Response::Done)
}
