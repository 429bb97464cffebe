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

/// The measured window: sends stop at `deadline`; messages sent before
/// `counted_from` (ns since the epoch) are the warm-up, not counted.
#[derive(Clone, Copy)]
struct Window {
    deadline: Instant,
    counted_from: u64,
}

/// Every counted message's send and receive time (ns since the epoch).
type Flights = Arc<std::sync::Mutex<Vec<(u64, u64)>>>;

pub(crate) async fn run(
    broker: &Broker,
    admin: &Connection,
    common: &Common,
    pace: Pace,
    reader_connections: usize,
) -> Result<bool, String> {
    let targets = topic(admin, "bench-e2e", common.queues).await?;
    let duration = common.duration.unwrap_or(Duration::from_secs(10));
    let stats = Arc::new(Stats::new(0));
    let window = Window {
        deadline: Instant::now() + pace.warmup + duration,
        counted_from: load::now_ns() + pace.warmup.as_nanos() as u64,
    };
    let probe = pauses::Probe::start();
    // Every counted message's latency, and whether a host pause touched it.
    let flights: Flights = Arc::default();
    // Consumers first, then the producers.
    let (readers, read_conns) = start_readers(broker, &targets, reader_connections, window, &stats, &flights).await?;
    let acked = Arc::new(std::sync::Mutex::new(new_histogram()));
    let (writers, write_conns) = start_writers(broker, common, &targets, &pace, window, &stats, &acked).await?;
    let start = Instant::now() + pace.warmup;
    for task in writers.into_iter().chain(readers) {
        task.await.map_err(|e| e.to_string())?;
    }
    let acks = acked.lock().map(|h| h.clone()).unwrap_or_else(|_| new_histogram());
    let pauses = probe.finish();
    let flights = std::mem::take(&mut *flights.lock().map_err(|e| e.to_string())?);
    let mut latencies = new_histogram();
    for &(sent, received) in &flights {
        stats::record_ns(&mut latencies, received.saturating_sub(sent));
    }
    stats.merge(&latencies);
    let Pace { rate, tick, warmup } = pace;
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
            ("producers".into(), format!("{} over {write_conns} connections", common.producers.max(1))),
            ("readers".into(), format!("{} over {read_conns} connections", targets.len())),
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

/// One long-polling reader per queue, from the end, over the shared reader
/// connections; the tasks and how many connections they share.
async fn start_readers(
    broker: &Broker,
    targets: &[(String, u32)],
    reader_connections: usize,
    window: Window,
    stats: &Arc<Stats>,
    flights: &Flights,
) -> Result<(Vec<tokio::task::JoinHandle<()>>, usize), String> {
    let mut read_conns = Vec::new();
    for c in 0..reader_connections.clamp(1, targets.len().max(1)) {
        read_conns
            .push(Connection::connect_as(&broker.addr, &format!("e2e-read-{c}")).await.map_err(|e| e.to_string())?);
    }
    let mut readers = Vec::new();
    for (i, (topic, queue)) in targets.iter().cloned().enumerate() {
        let conn = read_conns[i % read_conns.len()].clone();
        let (stats, flights) = (stats.clone(), flights.clone());
        readers.push(tokio::spawn(async move {
            let mut flown = Vec::new();
            let mut offset = 0;
            while Instant::now() < window.deadline + Duration::from_secs(2) {
                let Ok(pulled) = conn.pull(&topic, queue, offset, 1024, 4 << 20, None, 500).await else { break };
                let now = load::now_ns();
                let (mut count, mut bytes) = (0, 0);
                for m in &pulled.messages {
                    let mut sent = [0u8; 8];
                    sent.copy_from_slice(&m.message.body[..8]);
                    let sent = u64::from_le_bytes(sent);
                    if sent >= window.counted_from {
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
    Ok((readers, read_conns.len()))
}

/// The producers: open loop at the fixed rate, each sending what is due by
/// its clock at every tick. Their acks are timed too (into `acked`), to tell
/// the store half of the latency from the delivery half. The tasks and how
/// many connections they share.
async fn start_writers(
    broker: &Broker,
    common: &Common,
    targets: &[(String, u32)],
    pace: &Pace,
    window: Window,
    stats: &Arc<Stats>,
    acked: &Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
) -> Result<(Vec<tokio::task::JoinHandle<()>>, usize), String> {
    let producers = common.producers.max(1);
    let per_producer = pace.rate as f64 / producers as f64;
    let conns = producer_connections(broker, common, "e2e-write").await?;
    let mut writers = Vec::new();
    for p in 0..producers {
        let writer = Writer {
            id: p,
            conn: conns[p % conns.len()].clone(),
            targets: targets.to_vec(),
            size: common.size,
            per_second: per_producer,
            pacer: pacer::Pacer::new(pace.tick).map_err(|e| e.to_string())?,
        };
        let (stats, acked) = (stats.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let hist = writer.run(window, &stats).await;
            if let Ok(mut all) = acked.lock() {
                let _ = all.add(&hist);
            }
        }));
    }
    Ok((writers, conns.len()))
}

/// One paced producer.
struct Writer {
    id: usize,
    conn: Connection,
    targets: Vec<(String, u32)>,
    size: usize,
    per_second: f64,
    pacer: pacer::Pacer,
}

impl Writer {
    /// Sends until the window closes; the send→ack latencies of its counted
    /// messages.
    async fn run(self, window: Window, stats: &Stats) -> hdrhistogram::Histogram<u64> {
        let Writer { id, conn, targets, size, per_second, pacer } = self;
        let began = Instant::now();
        let mut sent_count = 0u64;
        let mut n = id;
        let mut pending = futures::stream::FuturesUnordered::new();
        let mut hist = new_histogram();
        let mut settle = |(sent, result): (u64, Result<_, _>)| match result {
            Ok(_) if sent < window.counted_from => {}
            Ok(_) => stats::record_ns(&mut hist, load::now_ns().saturating_sub(sent)),
            Err(_) => {
                stats.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        };
        while Instant::now() < window.deadline {
            // Acks are taken as they come (not at the next tick), so that
            // their times are true.
            tokio::select! {
                ticked = pacer.tick() => if ticked.is_err() { break },
                Some(done) = futures::StreamExt::next(&mut pending), if !pending.is_empty() => {
                    settle(done);
                    continue;
                }
            }
            // Due by the clock, so a late tick catches up.
            let due = (began.elapsed().as_secs_f64() * per_second) as u64;
            while sent_count < due {
                sent_count += 1;
                let (topic, queue) = &targets[n % targets.len()];
                n += 1;
                let msg: Message = load::message(topic, size, format!("e{id}-{n}"));
                let sent = load::now_ns();
                let answer = conn.send(topic, *queue, vec![msg]);
                pending.push(async move { (sent, answer.await) });
            }
        }
        while let Some(done) = futures::StreamExt::next(&mut pending).await {
            settle(done);
        }
        hist
    }
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
