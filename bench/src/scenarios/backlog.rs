//! `backlog`: sync-send latency over an empty broker, then with `--stored`
//! messages behind it and a slow reader of their cold start.

use crate::broker::Broker;
use crate::load::{Budget, Mode};
use crate::scenarios::{finish, produce_load, topic};
use crate::stats::Summary;
use crate::Common;
use brook_client::Connection;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) async fn run(broker: &Broker, admin: &Connection, common: &Common, stored: u64) -> Result<bool, String> {
    let window = common.duration.unwrap_or(Duration::from_secs(10));
    let probe = Common { mode: Mode::Sync, ..common.clone() };
    let targets = topic(admin, "bench-backlog", common.queues).await?;
    let deadline = || Budget::new(None, Some(Instant::now() + window));
    let (_, empty) = produce_load(broker, &probe, targets.clone(), deadline(), "backlog-empty").await?;
    let fill = Common { mode: Mode::Batch, batch: 256, inflight: 4, ..common.clone() };
    let (_, filled) = produce_load(broker, &fill, targets.clone(), Budget::new(Some(stored), None), "fill").await?;
    eprintln!("stored {} messages in {:.1} s", filled.messages, filled.elapsed.as_secs_f64());
    // A slow reader of the cold start of every queue.
    let reader_conn = Connection::connect_as(&broker.addr, "backlog-reader").await.map_err(|e| e.to_string())?;
    let reading = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = reading.clone();
    let cold = targets.clone();
    let reader = tokio::spawn(async move {
        let mut offsets = vec![0u64; cold.len()];
        let mut read = 0u64;
        let mut failed = None;
        while flag.load(std::sync::atomic::Ordering::Relaxed) {
            for (i, (topic, queue)) in cold.iter().enumerate() {
                match reader_conn.pull(topic, *queue, offsets[i], 256, 1 << 20, None, 0).await {
                    Ok(p) => {
                        offsets[i] = p.next_offset;
                        read += p.messages.len() as u64;
                    }
                    Err(e) => {
                        failed.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (read, failed)
    });
    let (_, loaded) = produce_load(broker, &probe, targets, deadline(), "backlog").await?;
    reading.store(false, std::sync::atomic::Ordering::Relaxed);
    let (read, failed) = reader.await.map_err(|e| e.to_string())?;
    let p99 = |s: &Summary| if s.hist.is_empty() { 0 } else { s.hist.value_at_quantile(0.99) };
    let mut summary = loaded;
    summary.notes.push(("empty p99".into(), format!("{} µs", p99(&empty))));
    summary.notes.push((
        "backlog p99".into(),
        format!("{} µs ({:.2}x)", p99(&summary), p99(&summary) as f64 / p99(&empty).max(1) as f64),
    ));
    summary.notes.push(("cold reads".into(), format!("{read} messages read during the run")));
    if let Some(failed) = failed {
        summary.notes.push(("cold read error".into(), failed));
    }
    finish(admin, common, &[], summary).await
}
