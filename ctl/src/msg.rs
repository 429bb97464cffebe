//! `brookctl msg`: find messages by id, key and time; a message's trace.

use crate::output::print_found;
use crate::parse_time;
use crate::target::{tagged, Target};
use brook_client::{ClientError, Connection, ErrorCode, StoredMessage};
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand)]
pub(crate) enum MsgCommand {
    /// A message by id.
    Get {
        /// Message id.
        id: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Messages of a topic with a key, newest first.
    ByKey {
        /// Topic.
        topic: String,
        /// Key.
        key: String,
        /// Stored at or after (ms since the epoch or RFC 3339).
        #[arg(long, value_parser = parse_time)]
        from: Option<i64>,
        /// Stored at or before (ms since the epoch or RFC 3339).
        #[arg(long, value_parser = parse_time)]
        to: Option<i64>,
        /// Most messages.
        #[arg(long, default_value_t = 64)]
        max: u32,
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
    },
    /// The trace timeline of a message (sent with tracing on).
    Trace {
        /// Message id.
        id: String,
        /// One JSON object per event.
        #[arg(long)]
        json: bool,
    },
    /// Per queue, the first offset stored at or after a time.
    At {
        /// Topic.
        topic: String,
        /// Time (ms since the epoch or RFC 3339).
        #[arg(long, value_parser = parse_time)]
        time: i64,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(target: &Target, command: MsgCommand) -> Result<(), ClientError> {
    let masters = target.masters().await?;
    match command {
        MsgCommand::Get { id, json } => print_found(json, &target.storing(&id).await?.get_message(&id).await?),
        MsgCommand::ByKey { topic, key, from, to, max, json } => {
            let (from, to) = (from.unwrap_or(0), to.unwrap_or(i64::MAX));
            let mut found = by_key(&masters, &topic, &key, (from, to), max).await?;
            found.truncate(max as usize);
            for m in &found {
                print_found(json, m);
            }
        }
        MsgCommand::Trace { id, json } => {
            let records = by_key(&masters, brook_proto::system::TRACE_TOPIC, &id, (0, i64::MAX), 1024).await?;
            let rank = |e: &str| ["sent", "stored", "delivered", "consumed", "retry"].iter().position(|x| *x == e);
            let mut events: Vec<serde_json::Value> =
                records.iter().filter_map(|r| serde_json::from_slice(&r.message.body).ok()).collect();
            events.sort_by_key(|e| (e["time"].as_i64().unwrap_or(0), rank(e["event"].as_str().unwrap_or(""))));
            if events.is_empty() {
                return Err(ClientError::InvalidArgument(format!("no trace for {id} (was it sent with tracing on?)")));
            }
            for e in &events {
                if json {
                    println!("{e}");
                } else {
                    let mut detail: Vec<String> = e
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(k, _)| !["event", "time", "msg_id"].contains(&k.as_str()))
                        .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_string)))
                        .collect();
                    detail.sort();
                    println!("{}\t{:<9}\t{}", e["time"], e["event"].as_str().unwrap_or("?"), detail.join(" "));
                }
            }
        }
        MsgCommand::At { topic, time, json } => {
            for (broker, conn) in &masters {
                let offsets = match conn.offsets_at_time(&topic, time).await {
                    Ok(offsets) => offsets,
                    Err(e) if target.is_cluster() && e.code() == Some(ErrorCode::TopicNotFound) => continue,
                    Err(e) => return Err(e),
                };
                for o in offsets {
                    if json {
                        let mut obj = json!({ "topic": o.topic, "queue": o.queue, "offset": o.offset });
                        if !broker.is_empty() {
                            obj["broker"] = json!(broker);
                        }
                        println!("{obj}");
                    } else {
                        println!("{}", tagged(broker, format!("{}\t{}\t{}", o.topic, o.queue, o.offset)));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Messages with `key` on every broker holding `topic`, newest first.
async fn by_key(
    masters: &[(String, Connection)],
    topic: &str,
    key: &str,
    (from, to): (i64, i64),
    max: u32,
) -> Result<Vec<StoredMessage>, ClientError> {
    let mut found = Vec::new();
    for (_, conn) in masters {
        match conn.query_by_key(topic, key, from, to, max).await {
            Ok(part) => found.extend(part),
            Err(e) if masters.len() > 1 && e.code() == Some(ErrorCode::TopicNotFound) => {}
            Err(e) => return Err(e),
        }
    }
    found.sort_by_key(|m| std::cmp::Reverse(m.store_ts));
    Ok(found)
}
