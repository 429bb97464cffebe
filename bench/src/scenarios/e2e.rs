//! `e2e`: produce at a fixed rate and measure send-to-receive latency, with
//! the host's pauses noted beside the slow messages.

use crate::broker::Broker;
use crate::load;
use crate::pacer;
use crate::pauses;
use crate::scenarios::{finish, producer_connections, topic};
use crate::stats::{self, new_histogram, Stats};
use crate::Common;
use brook_client::{Connection, Message};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How `e2e` sends: `rate` messages a second in all, every `tick`, after
/// `warmup` of the same load that is not counted.
pub(crate) struct Pace {
    pub(crate) rate: u64,
    pub(crate) tick: Duration,
    pub(crate) warmup: Duration,
}

pub(crate) async fn run(
    broker: &Broker,
    admin: &Connection,
    common: &Common,
    Pace { rate, tick, warmup }: Pace,
    reader_connections: usize,
) -> Result<bool, String> {
    let targets = topic(admin, "bench-e2e", common.queues).await?;
    let duration = common.duration.unwrap_or(Duration::from_secs(10));
    let stats = Arc::new(Stats::new(0));
    let deadline = Instant::now() + warmup + duration;
    // Messages sent before this (ns since the epoch) are not counted.
    let counted_from = load::now_ns() + warmup.as_nanos() as u64;
    let probe = pauses::Probe::start();
    // Every counted message's send and receive time: its latency, and
    // whether a host pause touched it.
    let flights = Arc::new(std::sync::Mutex::new(Vec::<(u64, u64)>::new()));
    // Consumers first: one long-polling task per queue, from the end, over
    // the shared reader connections.
    let mut read_conns = Vec::new();
    for c in 0..reader_connections.clamp(1, targets.len().max(1)) {
        read_conns
            .push(Connection::connect_as(&broker.addr, &format!("e2e-read-{c}")).await.map_err(|e| e.to_string())?);
    }
    let mut readers = Vec::new();
    for (i, (topic, queue)) in targets.clone().into_iter().enumerate() {
        let conn = read_conns[i % read_conns.len()].clone();
        let (stats, flights) = (stats.clone(), flights.clone());
        readers.push(tokio::spawn(async move {
            let mut flown = Vec::new();
            let mut offset = 0;
            while Instant::now() < deadline + Duration::from_secs(2) {
                let Ok(pulled) = conn.pull(&topic, queue, offset, 1024, 4 << 20, None, 500).await else { break };
                let now = load::now_ns();
                let (mut count, mut bytes) = (0, 0);
                for m in &pulled.messages {
                    let mut sent = [0u8; 8];
                    sent.copy_from_slice(&m.message.body[..8]);
                    let sent = u64::from_le_bytes(sent);
                    if sent >= counted_from {
                        flown.push((sent, now));
                        (count, bytes) = (count + 1, bytes + m.message.body.len() as u64);
                    }
                }
                stats.done(count, bytes);
                offset = pulled.next_offset;
            }
            if let Ok(mut all) = flights.lock() {
                all.append(&mut flown);
            }
        }));
    }
    // Producers: open loop at the fixed rate, each sending what is due by
    // its clock at every tick. Their acks are timed too, to tell the store
    // half of the latency from the delivery half.
    let producers = common.producers.max(1);
    let per_producer = rate as f64 / producers as f64;
    let acked = Arc::new(std::sync::Mutex::new(new_histogram()));
    let conns = producer_connections(broker, common, "e2e-write").await?;
    let mut writers = Vec::new();
    for p in 0..producers {
        let conn = conns[p % conns.len()].clone();
        let (targets, size, stats, acked) = (targets.clone(), common.size, stats.clone(), acked.clone());
        let pacer = pacer::Pacer::new(tick).map_err(|e| e.to_string())?;
        writers.push(tokio::spawn(async move {
            let began = Instant::now();
            let mut sent_count = 0u64;
            let mut n = p;
            let mut pending = futures::stream::FuturesUnordered::new();
            let mut hist = new_histogram();
            let mut settle = |(sent, result): (u64, Result<_, _>)| match result {
                Ok(_) if sent < counted_from => {}
                Ok(_) => stats::record_ns(&mut hist, load::now_ns().saturating_sub(sent)),
                Err(_) => {
                    stats.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            };
            while Instant::now() < deadline {
                // Acks are taken as they come (not at the next tick), so
                // that their times are true.
                tokio::select! {
                    ticked = pacer.tick() => if ticked.is_err() { break },
                    Some(done) = futures::StreamExt::next(&mut pending), if !pending.is_empty() => {
                        settle(done);
                        continue;
                    }
                }
                // Due by the clock, so a late tick catches up.
                let due = (began.elapsed().as_secs_f64() * per_producer) as u64;
                while sent_count < due {
                    sent_count += 1;
                    let (topic, queue) = &targets[n % targets.len()];
                    n += 1;
                    let msg: Message = load::message(topic, size, format!("e{p}-{n}"));
                    let sent = load::now_ns();
                    let answer = conn.send(topic, *queue, vec![msg]);
                    pending.push(async move { (sent, answer.await) });
                }
            }
            while let Some(done) = futures::StreamExt::next(&mut pending).await {
                settle(done);
            }
            if let Ok(mut all) = acked.lock() {
                let _ = all.add(&hist);
            }
        }));
    }
    let start = Instant::now() + warmup;
    for w in writers {
        w.await.map_err(|e| e.to_string())?;
    }
    for r in readers {
        r.await.map_err(|e| e.to_string())?;
    }
    let acks = acked.lock().map(|h| h.clone()).unwrap_or_else(|_| new_histogram());
    let pauses = probe.finish();
    let flights = std::mem::take(&mut *flights.lock().map_err(|e| e.to_string())?);
    let mut latencies = new_histogram();
    for &(sent, received) in &flights {
        stats::record_ns(&mut latencies, received.saturating_sub(sent));
    }
    stats.merge(&latencies);
    let summary = stats.summary(
        "e2e",
        start.elapsed().min(duration),
        "send→receive",
        vec![
            (
                "target rate".into(),
                format!(
                    "{rate} msgs/s, paced every {} µs, after {} ms not counted",
                    tick.as_micros(),
                    warmup.as_millis()
                ),
            ),
            ("producers".into(), format!("{producers} over {} connections", conns.len())),
            ("readers".into(), format!("{} over {} connections", targets.len(), read_conns.len())),
            (
                "send→ack".into(),
                format!("p50 {} µs  p99 {} µs", acks.value_at_quantile(0.5), acks.value_at_quantile(0.99)),
            ),
            pauses.note(),
            slow_in_pauses(&flights, &pauses),
        ],
    );
    finish(admin, common, &[], summary).await
}

/// Latency an e2e message may take before it counts as slow (the p99 bar).
pub(crate) const SLOW: Duration = Duration::from_millis(5);

/// A summary line: how many messages took longer than [`SLOW`], what share
/// of them was in flight while a CPU of the host paused (against the share
/// of all messages, the rate by chance), and the latency of the messages
/// no pause touched.
pub(crate) fn slow_in_pauses(flights: &[(u64, u64)], pauses: &pauses::Pauses) -> (String, String) {
    let slow_ns = SLOW.as_nanos() as u64;
    let (mut slow, mut slow_paused, mut paused) = (0u64, 0u64, 0u64);
    let mut untouched = new_histogram();
    for &(sent, received) in flights {
        let during = pauses.during(sent, received);
        let is_slow = received.saturating_sub(sent) > slow_ns;
        paused += u64::from(during);
        slow += u64::from(is_slow);
        slow_paused += u64::from(is_slow && during);
        if !during {
            stats::record_ns(&mut untouched, received.saturating_sub(sent));
        }
    }
    let share = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 * 100.0 / of as f64 };
    let q = |p: f64| if untouched.is_empty() { 0 } else { untouched.value_at_quantile(p) };
    (
        format!("over {} ms", SLOW.as_millis()),
        format!(
            "{slow} messages, {:.1} % of them in flight during a host pause (of all messages {:.1} %); \
             the {} no pause touched: p50 {} µs  p99 {} µs",
            share(slow_paused, slow),
            share(paused, flights.len() as u64),
            flights.len() as u64 - paused,
            q(0.5),
            q(0.99),
        ),
    )
}
