//! `--verify`: every acknowledged message (key, queue, offset) is written to
//! a file, then the queues are read back and checked: nothing acknowledged
//! is missing, nothing is stored twice, and each producer's messages keep
//! their send order within a queue.

use crate::load::Acked;
use brook_client::Connection;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;

/// What the read-back found.
pub struct Verdict {
    /// Acknowledged messages checked.
    pub checked: usize,
    /// Problems, one line each (empty: all good).
    pub problems: Vec<String>,
}

/// Writes the ack log, reads every target queue back and checks it.
pub async fn verify(conn: &Connection, acks: &[Acked], log: &Path) -> std::io::Result<Verdict> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(log)?);
    for a in acks {
        writeln!(file, "{}\t{}\t{}\t{}", a.key, a.topic, a.queue, a.offset)?;
    }
    file.flush()?;
    let mut problems = Vec::new();
    let queues: HashSet<(String, u32)> = acks.iter().map(|a| (a.topic.clone(), a.queue)).collect();
    // (topic, queue, offset) -> key, as stored.
    let mut stored: HashMap<(String, u32, u64), String> = HashMap::new();
    let mut seen_keys: HashMap<String, (String, u32, u64)> = HashMap::new();
    for (topic, queue) in &queues {
        let mut offset = 0;
        loop {
            let pulled = match conn.pull(topic, *queue, offset, 1024, 8 << 20, None, 0).await {
                Ok(p) => p,
                Err(e) => {
                    problems.push(format!("read {topic}/{queue} at {offset}: {e}"));
                    break;
                }
            };
            if pulled.messages.is_empty() && pulled.next_offset >= pulled.max_offset {
                break;
            }
            for m in pulled.messages {
                let key = m.message.keys.first().cloned().unwrap_or_default();
                if let Some(first) = seen_keys.insert(key.clone(), (topic.clone(), *queue, m.queue_offset)) {
                    problems.push(format!("{key} stored twice: {first:?} and {topic}/{queue}@{}", m.queue_offset));
                }
                stored.insert((topic.clone(), *queue, m.queue_offset), key);
            }
            offset = pulled.next_offset;
        }
    }
    for a in acks {
        match stored.get(&(a.topic.clone(), a.queue, a.offset)) {
            Some(key) if *key == a.key => {}
            Some(key) => problems.push(format!("{}/{}@{} holds {key}, acked as {}", a.topic, a.queue, a.offset, a.key)),
            None => problems.push(format!("acked {} at {}/{}@{} is missing", a.key, a.topic, a.queue, a.offset)),
        }
    }
    // Per producer and queue, offsets grow with the send sequence.
    let mut last: HashMap<(String, String, u32), (u64, u64)> = HashMap::new();
    let mut sorted: Vec<&Acked> = acks.iter().collect();
    sorted.sort_by_key(|a| (a.topic.clone(), a.queue, a.offset));
    for a in sorted {
        let (producer, seq) = a.key.split_once('-').map_or((a.key.as_str(), 0), |(p, s)| (p, s.parse().unwrap_or(0)));
        let slot = (producer.to_string(), a.topic.clone(), a.queue);
        if let Some((prev_seq, prev_offset)) = last.get(&slot) {
            if seq < *prev_seq {
                problems.push(format!(
                    "order: {producer} seq {seq} at {}/{}@{} after seq {prev_seq} at @{prev_offset}",
                    a.topic, a.queue, a.offset
                ));
            }
        }
        last.insert(slot, (seq, a.offset));
    }
    problems.truncate(50);
    Ok(Verdict { checked: acks.len(), problems })
}
