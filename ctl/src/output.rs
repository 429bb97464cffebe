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

/// A group's members, assignment, offsets and lag, merged over the
/// brokers that answered (`broker` "" for one broker named directly; with
/// names, queues read `broker/topic:queue` and offsets carry a broker).
pub(crate) fn print_group(json: bool, parts: &[(String, GroupInfo)]) {
    let Some((_, first)) = parts.first() else { return };
    let label = |broker: &str, q: &brook_client::QueueRef| {
        if broker.is_empty() {
            format!("{}:{}", q.topic, q.queue)
        } else {
            format!("{broker}/{}:{}", q.topic, q.queue)
        }
    };
    // Member → (client, idle, queues on every broker).
    let mut members: std::collections::BTreeMap<&str, (&str, u64, Vec<String>)> = Default::default();
    for (broker, info) in parts {
        for m in &info.members {
            let entry = members.entry(&m.member).or_insert((&m.client, m.idle_ms, Vec::new()));
            entry.1 = entry.1.min(m.idle_ms);
            entry.2.extend(m.queues.iter().map(|q| label(broker, q)));
        }
    }
    let generation = parts.iter().map(|(_, i)| i.generation).max().unwrap_or(0);
    let dlq: u64 = parts.iter().map(|(_, i)| i.dlq_messages).sum();
    let skipped: u64 = parts.iter().map(|(_, i)| i.skipped_by_retention).sum();
    let since = parts.iter().filter_map(|(_, i)| i.skipped_since_ms).min();
    if json {
        let members: Vec<_> = members
            .iter()
            .map(|(m, (client, idle, queues))| json!({ "member": m, "client": client, "idle_ms": idle, "queues": queues }))
            .collect();
        let offsets: Vec<_> = parts
            .iter()
            .flat_map(|(broker, info)| info.offsets.iter().map(move |o| (broker, o)))
            .map(|(broker, o)| {
                let mut obj = json!({ "topic": o.topic, "queue": o.queue, "member": o.member,
                "committed": o.committed, "max_offset": o.max_offset, "lag": o.lag,
                "skipped_by_retention": o.skipped_by_retention });
                if !broker.is_empty() {
                    obj["broker"] = json!(broker);
                }
                obj
            })
            .collect();
        println!(
            "{}",
            json!({ "group": first.group, "mode": format!("{:?}", first.mode), "generation": generation,
                "members": members, "offsets": offsets, "dlq_messages": dlq,
                "skipped_by_retention": skipped, "skipped_since_ms": since })
        );
        return;
    }
    println!("group {} ({:?}, generation {generation}, {dlq} dead letters)", first.group, first.mode);
    if let Some(since) = since {
        println!("skipped by retention: {skipped} since {}", when(since));
    }
    println!("members:");
    for (m, (client, idle, queues)) in &members {
        println!("  {m} (client {client}, idle {idle} ms): {}", queues.join(" "));
    }
    let column = if parts.iter().any(|(b, _)| !b.is_empty()) { "broker\t" } else { "" };
    println!("{column}topic\tqueue\tmember\tcommitted\tmax_offset\tlag\tskipped_by_retention");
    for (broker, info) in parts {
        for o in &info.offsets {
            let row = format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                o.topic,
                o.queue,
                o.member.as_deref().unwrap_or("-"),
                o.committed,
                o.max_offset,
                o.lag,
                o.skipped_by_retention
            );
            println!("{}", crate::target::tagged(broker, row));
        }
    }
}

/// A time as RFC 3339 (UTC), or the raw number if it is out of range.
pub(crate) fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_rfc3339())
}
