//! `consume`: fill a backlog, then drain it with `--producers` consumers.

use crate::broker::Broker;
use crate::load::{Budget, Mode};
use crate::scenarios::{finish, produce_load, topic};
use crate::stats::{self, new_histogram, Stats};
use crate::Common;
use brook_client::Connection;
use std::sync::Arc;
use std::time::Instant;

pub(crate) async fn run(broker: &Broker, admin: &Connection, common: &Common) -> Result<bool, String> {
    let targets = topic(admin, "bench-consume", common.queues).await?;
    let fill = Common { mode: Mode::Batch, inflight: 4, ..common.clone() };
    let total = common.messages.unwrap_or(1_000_000);
    let (_, filled) = produce_load(broker, &fill, targets.clone(), Budget::new(Some(total), None), "fill").await?;
    eprintln!("filled {} messages in {:.1} s", filled.messages, filled.elapsed.as_secs_f64());
    let stats = Arc::new(Stats::new(filled.messages));
    let start = Instant::now();
    let mut tasks = Vec::new();
    let consumers = common.producers.max(1);
    for c in 0..consumers {
        let mine: Vec<(String, u32)> = targets.iter().skip(c).step_by(consumers).cloned().collect();
        let conn = Connection::connect_as(&broker.addr, &format!("drain-{c}")).await.map_err(|e| e.to_string())?;
        let stats = stats.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = new_histogram();
            for (topic, queue) in mine {
                let mut offset = 0;
                loop {
                    let t = Instant::now();
                    let Ok(pulled) = conn.pull(&topic, queue, offset, 1024, 4 << 20, None, 0).await else {
                        stats.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        break;
                    };
                    stats::record(&mut hist, t);
                    let bytes: usize = pulled.messages.iter().map(|m| m.message.body.len()).sum();
                    stats.done(pulled.messages.len() as u64, bytes as u64);
                    if pulled.next_offset >= pulled.max_offset {
                        break;
                    }
                    offset = pulled.next_offset;
                }
            }
            stats.merge(&hist);
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    let summary =
        stats.summary("consume", start.elapsed(), "per pull", vec![("consumers".into(), consumers.to_string())]);
    finish(admin, common, &[], summary).await
}
