//! The `timers` scenario: fill the broker with exact-time messages due at
//! random times over a span (a million over ten minutes by default), keep a
//! steady plain send load running, and measure how late each timer is
//! delivered (its delivered copy's store time minus its due time).

use crate::broker::Broker;
use crate::load::{self, now_ns};
use crate::stats::{new_histogram, Stats, Summary};
use brook_client::{Connection, Message};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the scenario is told.
pub struct TimerLoad {
    /// Timers in all.
    pub pending: u64,
    /// Span their due times are spread over.
    pub spread: Duration,
    /// From the start of the fill to the first due time.
    pub lead: Duration,
    /// How long deliveries are measured (from the first due time).
    pub window: Duration,
    /// Plain sends per second during the run.
    pub rate: u64,
    /// Fill connections.
    pub producers: usize,
    /// Body bytes.
    pub size: usize,
    /// Queues of the target topic.
    pub queues: u32,
}

fn now_ms() -> i64 {
    (now_ns() / 1_000_000) as i64
}

/// A small xorshift: due times in random order, reproducibly.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn fill(broker: &Broker, load: &TimerLoad, first_due: i64) -> Result<(u64, u64), String> {
    let spread_ms = load.spread.as_millis().max(1) as u64;
    let per_producer = load.pending.div_ceil(load.producers.max(1) as u64);
    let mut tasks = Vec::new();
    for p in 0..load.producers.max(1) {
        let conn =
            Connection::connect_as(&broker.addr, &format!("timers-fill-{p}")).await.map_err(|e| e.to_string())?;
        let (size, queues) = (load.size.max(8), load.queues);
        let count = per_producer.min(load.pending.saturating_sub(per_producer * p as u64));
        tasks.push(tokio::spawn(async move {
            let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (p as u64 + 1);
            let (mut sent, mut errors) = (0u64, 0u64);
            let mut in_flight = futures::stream::FuturesUnordered::new();
            while sent < count || !in_flight.is_empty() {
                while sent < count && in_flight.len() < 4 {
                    let n = (count - sent).min(128);
                    let batch: Vec<Message> = (0..n)
                        .map(|_| {
                            let due = first_due + (next(&mut rng) % spread_ms) as i64;
                            let mut body = vec![b't'; size];
                            body[..8].copy_from_slice(&due.to_le_bytes());
                            Message::new("bench-timers", body).with_deliver_at(due)
                        })
                        .collect();
                    let queue = (sent / 128) as u32 % queues;
                    let conn = conn.clone();
                    in_flight.push(async move { (n, conn.send("bench-timers", queue, batch).await.is_ok()) });
                    sent += n;
                }
                if let Some((n, ok)) = futures::StreamExt::next(&mut in_flight).await {
                    if !ok {
                        errors += n;
                    }
                }
            }
            (count, errors)
        }));
    }
    let (mut sent, mut errors) = (0, 0);
    for t in tasks {
        let (s, e) = t.await.map_err(|e| e.to_string())?;
        sent += s;
        errors += e;
    }
    Ok((sent, errors))
}

/// Readers: one per queue, recording store time minus due time (and, into
/// `recv_late`, receive time minus due time) of timers due before
/// `measure_until`.
async fn start_readers(
    broker: &Broker,
    queues: u32,
    measure_until: i64,
    stats: &Arc<Stats>,
    stop: &Arc<AtomicBool>,
    recv_late: &Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let mut readers = Vec::new();
    for queue in 0..queues {
        let conn =
            Connection::connect_as(&broker.addr, &format!("timers-read-{queue}")).await.map_err(|e| e.to_string())?;
        let (stats, stop, recv_late) = (stats.clone(), stop.clone(), recv_late.clone());
        readers.push(tokio::spawn(async move {
            let (mut hist, mut recv) = (new_histogram(), new_histogram());
            let mut offset = 0;
            while !stop.load(Ordering::Relaxed) {
                let Ok(page) = conn.pull("bench-timers", queue, offset, 1024, 4 << 20, None, 200).await else { break };
                let now = now_ms();
                let mut counted = 0;
                for m in &page.messages {
                    let due = i64::from_le_bytes(m.message.body[..8].try_into().unwrap_or_default());
                    if due >= measure_until {
                        continue;
                    }
                    counted += 1;
                    let _ = hist.record(((m.store_ts - due).max(0) as u64 * 1000).max(1));
                    let _ = recv.record(((now - due).max(0) as u64 * 1000).max(1));
                }
                stats.done(counted, 0);
                offset = page.next_offset;
            }
            stats.merge(&hist);
            if let Ok(mut r) = recv_late.lock() {
                let _ = r.add(&recv);
            }
        }));
    }
    Ok(readers)
}

/// The steady load beside the timers: plain sends at a fixed rate, 1 ms
/// ticks, counted into `sent`.
async fn start_steady(
    broker: &Broker,
    load: &TimerLoad,
    stop: &Arc<AtomicBool>,
    sent: &Arc<AtomicU64>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let conn = Connection::connect_as(&broker.addr, "timers-steady").await.map_err(|e| e.to_string())?;
    let (stop, sent, rate, queues, size) = (stop.clone(), sent.clone(), load.rate, load.queues, load.size);
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut owed = 0.0;
        let mut n = 0u64;
        let mut pending = futures::stream::FuturesUnordered::new();
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            owed += rate as f64 / 1000.0;
            while owed >= 1.0 && pending.len() < 4096 {
                owed -= 1.0;
                n += 1;
                let (conn, msg) = (conn.clone(), load::message("bench-steady", size, format!("s{n}")));
                pending.push(async move { conn.send("bench-steady", (n % u64::from(queues)) as u32, vec![msg]).await });
            }
            while let Some(Some(r)) = futures::FutureExt::now_or_never(futures::StreamExt::next(&mut pending)) {
                if r.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }))
}

/// Runs the scenario.
pub async fn run(broker: &Broker, admin: &Connection, load: TimerLoad) -> Result<Summary, String> {
    admin.create_topic("bench-timers", load.queues).await.map_err(|e| e.to_string())?;
    admin.create_topic("bench-steady", load.queues).await.map_err(|e| e.to_string())?;
    let start = now_ms();
    let first_due = start + load.lead.as_millis() as i64;
    let measure_until = first_due + load.window.as_millis() as i64;
    let fill_started = Instant::now();
    let (filled, fill_errors) = fill(broker, &load, first_due).await?;
    let fill_secs = fill_started.elapsed().as_secs_f64();
    eprintln!("{filled} timers sent in {fill_secs:.1} s; first due {} s after the start", load.lead.as_secs());
    if now_ms() > first_due {
        return Err(format!("the fill took longer than --lead ({} s); raise it", load.lead.as_secs()));
    }
    let stats = Arc::new(Stats::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let recv_late = Arc::new(std::sync::Mutex::new(new_histogram()));
    let readers = start_readers(broker, load.queues, measure_until, &stats, &stop, &recv_late).await?;
    // The steady load: plain sends at a fixed rate, 1 ms ticks.
    let steady_sent = Arc::new(AtomicU64::new(0));
    let steady = start_steady(broker, &load, &stop, &steady_sent).await?;
    let end = measure_until + 2_000;
    tokio::time::sleep(Duration::from_millis((end - now_ms()).max(0) as u64)).await;
    let rss = broker.rss_bytes();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.map_err(|e| e.to_string())?;
    }
    let _ = steady.await;
    stats.bar.finish_and_clear();
    let delivered = stats.messages.load(Ordering::Relaxed);
    let recv = recv_late.lock().map(|h| h.clone()).unwrap_or_else(|_| new_histogram());
    let q = |h: &hdrhistogram::Histogram<u64>, p: f64| if h.is_empty() { 0 } else { h.value_at_quantile(p) / 1000 };
    let mut notes = vec![
        (
            "timers".into(),
            format!("{filled} due over {} s, first after {} s", load.spread.as_secs(), load.lead.as_secs()),
        ),
        ("fill".into(), format!("{fill_secs:.1} s ({:.0} timers/s)", filled as f64 / fill_secs.max(1e-9))),
        ("measured".into(), format!("{delivered} timers due in the first {} s", load.window.as_secs())),
        (
            "steady load".into(),
            format!("{} plain sends ({} msgs/s asked)", steady_sent.load(Ordering::Relaxed), load.rate),
        ),
        (
            "receive lateness".into(),
            format!("p50 {} ms  p99 {} ms  p999 {} ms", q(&recv, 0.5), q(&recv, 0.99), q(&recv, 0.999)),
        ),
    ];
    if let Some(rss) = rss {
        notes.push(("broker rss".into(), format!("{} MiB", rss >> 20)));
    }
    Ok(Summary {
        scenario: "timers".into(),
        messages: delivered,
        bytes: 0,
        errors: fill_errors,
        elapsed: load.window,
        hist: stats.histogram(),
        latency_of: "due→stored",
        fields: Vec::new(),
        notes,
    })
}
