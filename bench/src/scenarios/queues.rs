//! `queues`: pipelined load spread over many queues (topics of up to
//! 1,000 each), after an optional warm-up that touches every queue.

use crate::broker::Broker;
use crate::load;
use crate::scenarios::{budget, finish, produce_load, topic};
use crate::Common;
use brook_client::Connection;
use std::time::{Duration, Instant};

pub(crate) async fn run(
    broker: &Broker,
    admin: &Connection,
    common: &Common,
    count: u32,
    warmup: u64,
) -> Result<bool, String> {
    let mut targets = Vec::with_capacity(count as usize);
    let mut left = count;
    let mut t = 0;
    while left > 0 {
        let n = left.min(1000);
        targets.extend(topic(admin, &format!("bench-q{t}"), n).await?);
        left -= n;
        t += 1;
    }
    let mut notes = Vec::new();
    if warmup > 0 {
        let started = Instant::now();
        let warmed = warm_up(broker, &targets, common.size).await?;
        tokio::time::sleep(Duration::from_secs(warmup)).await;
        notes.push((
            "warm-up".into(),
            format!(
                "{warmed} messages, one per queue, then {warmup} s ({:.1} s in all)",
                started.elapsed().as_secs_f64()
            ),
        ));
    }
    let (acks, mut summary) = produce_load(broker, common, targets, budget(common), "queues").await?;
    summary.notes.push(("queues".into(), count.to_string()));
    summary.notes.extend(notes);
    if let Some(rss) = broker.rss_bytes() {
        summary.notes.push(("broker rss".into(), format!("{} MiB", rss >> 20)));
    }
    finish(admin, common, &acks, summary).await
}

/// One message to every target, 256 in flight.
pub(crate) async fn warm_up(broker: &Broker, targets: &[(String, u32)], size: usize) -> Result<u64, String> {
    let conn = Connection::connect_as(&broker.addr, "warmup").await.map_err(|e| e.to_string())?;
    let mut sent = 0;
    for chunk in targets.chunks(256) {
        let sends = chunk.iter().map(|(topic, queue)| {
            let msg = load::message(topic, size, format!("warm-{topic}-{queue}"));
            conn.send(topic, *queue, vec![msg])
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|e| e.to_string())?;
            sent += 1;
        }
    }
    Ok(sent)
}
