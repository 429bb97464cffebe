//! How `brookctl` prints what it got: readable lines, or one JSON object
//! per line with `--json`.

use base64::Engine;
use brook_client::{GroupInfo, StoredMessage};
use brook_proto::time::now_ms;
use serde_json::json;

pub(crate) fn print_ack(json: bool, ack: &brook_client::SendAck) {
    if json {
        let mut obj = json!({ "id": ack.msg_id, "queue": ack.queue, "offset": ack.queue_offset });
        if let Some(at) = ack.deliver_at {
            obj["deliver_at"] = json!(at);
        }
        println!("{obj}");
    } else {
        let due = ack.deliver_at.map(|at| format!(" deliver_at={at}")).unwrap_or_default();
        println!("sent id={} queue={} offset={}{due}", ack.msg_id, ack.queue, ack.queue_offset);
    }
}

pub(crate) fn print_message(json: bool, m: &StoredMessage, result: &str) {
    let body = std::str::from_utf8(&m.message.body);
    if json {
        let mut obj = json!({
            "id": m.msg_id,
            "topic": m.message.topic,
            "queue": m.queue,
            "offset": m.queue_offset,
            "log_offset": m.log_offset,
            "key": m.message.keys.first(),
            "keys": m.message.keys,
            "tags": m.message.tags,
            "properties": m.message.properties,
            "born_ts": m.message.born_ts,
            "store_ts": m.store_ts,
            "recv_ts": now_ms(),
            "reconsume": m.reconsume_times,
            "result": result,
        });
        match body {
            Ok(text) => obj["body"] = json!(text),
            Err(_) => obj["body_b64"] = json!(base64::engine::general_purpose::STANDARD.encode(&m.message.body)),
        }
        println!("{obj}");
    } else {
        let text = body.map_or_else(|_| format!("<{} bytes>", m.message.body.len()), str::to_string);
        let retry = if m.reconsume_times > 0 { format!(" retry {}", m.reconsume_times) } else { String::new() };
        let later = if result == "later" { " (later)" } else { "" };
        println!("[{} q{} @{}{retry}] {}{later}", m.msg_id, m.queue, m.queue_offset, text);
    }
}

/// A found message: JSON with every field, or a readable block.
pub(crate) fn print_found(json: bool, m: &StoredMessage) {
    if json {
        print_message(true, m, "found");
        return;
    }
    let body = std::str::from_utf8(&m.message.body)
        .map_or_else(|_| format!("<{} bytes>", m.message.body.len()), str::to_string);
    println!("id          {}", m.msg_id);
    println!("topic       {} queue {} offset {}", m.message.topic, m.queue, m.queue_offset);
    println!("log offset  {}", m.log_offset);
    println!("born / stored  {} / {}", m.message.born_ts, m.store_ts);
    println!("tags        {}", m.message.tags.as_deref().unwrap_or("-"));
    println!("keys        {}", m.message.keys.join(" "));
    for (k, v) in &m.message.properties {
        println!("property    {k} = {v}");
    }
    println!("body        {body}");
    println!();
}

/// A group's members, assignment, offsets and lag.
pub(crate) fn print_group(json: bool, info: &GroupInfo) {
    if json {
        let members: Vec<_> = info
            .members
            .iter()
            .map(|m| {
                let queues: Vec<String> = m.queues.iter().map(|q| format!("{}:{}", q.topic, q.queue)).collect();
                json!({ "member": m.member, "client": m.client, "idle_ms": m.idle_ms, "queues": queues })
            })
            .collect();
        let offsets: Vec<_> = info
            .offsets
            .iter()
            .map(|o| {
                json!({ "topic": o.topic, "queue": o.queue, "member": o.member,
                "committed": o.committed, "max_offset": o.max_offset, "lag": o.lag,
                "skipped_by_retention": o.skipped_by_retention })
            })
            .collect();
        println!(
            "{}",
            json!({ "group": info.group, "mode": format!("{:?}", info.mode), "generation": info.generation,
                "members": members, "offsets": offsets, "dlq_messages": info.dlq_messages,
                "skipped_by_retention": info.skipped_by_retention, "skipped_since_ms": info.skipped_since_ms })
        );
    } else {
        println!(
            "group {} ({:?}, generation {}, {} dead letters)",
            info.group, info.mode, info.generation, info.dlq_messages
        );
        if let Some(since) = info.skipped_since_ms {
            println!("skipped by retention: {} since {}", info.skipped_by_retention, when(since));
        }
        println!("members:");
        for m in &info.members {
            let queues: Vec<String> = m.queues.iter().map(|q| format!("{}:{}", q.topic, q.queue)).collect();
            println!("  {} (client {}, idle {} ms): {}", m.member, m.client, m.idle_ms, queues.join(" "));
        }
        println!("topic\tqueue\tmember\tcommitted\tmax_offset\tlag\tskipped_by_retention");
        for o in &info.offsets {
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                o.topic,
                o.queue,
                o.member.as_deref().unwrap_or("-"),
                o.committed,
                o.max_offset,
                o.lag,
                o.skipped_by_retention
            );
        }
    }
}

/// A time as RFC 3339 (UTC), or the raw number if it is out of range.
pub(crate) fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339())
}
