//! `cluster`: what routing through name servers costs, and how fast sends
//! recover when a broker dies. Both parts drive the client's `Producer`
//! (pipelined, `--inflight` sends in flight per producer), not raw frames,
//! since the routing lives in the client.
//!
//! 1. One name server and one broker: `--rounds` pairs of runs, each
//!    `--duration` long, one producing to the broker named directly and one
//!    through the name server, alternating which goes first. Prints both
//!    rates and their ratio per pair, and the median ratio.
//! 2. One name server and `--brokers` brokers: routed load, one broker
//!    SIGKILLed after `--kill-after`; acks are counted per 100 ms, and the
//!    recovery time is from the kill to the end of the first of three
//!    windows in a row at ≥ 2/3 of the rate before it (an upper bound).

use crate::broker::{Broker, NameServer};
use crate::load::message;
use crate::stats::{new_histogram, record};
use crate::Common;
use brook_client::{Connection, Endpoint, Producer};
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Width of one throughput window in part two.
const WINDOW: Duration = Duration::from_millis(100);

/// What the scenario is asked to do.
pub(crate) struct ClusterRun {
    /// Brokers in part two.
    pub brokers: usize,
    /// Pairs of runs in part one.
    pub rounds: usize,
    /// Load before the kill in part two.
    pub kill_after: Duration,
}

/// One load run's outcome.
struct Ran {
    acks: u64,
    errors: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
    /// Acks per [`WINDOW`] since the start.
    timeline: Vec<u64>,
}

impl Ran {
    fn rate(&self) -> f64 {
        self.acks as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn quantile(&self, q: f64) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.value_at_quantile(q)
        }
    }
}

pub(crate) async fn run(common: &Common, plan: ClusterRun) -> Result<bool, String> {
    let duration = common.duration.unwrap_or(Duration::from_secs(5));
    let routing_ok = routing_cost(common, plan.rounds, duration).await?;
    let recovery_ok = recovery(common, plan.brokers.max(2), plan.kill_after, duration).await?;
    Ok(routing_ok && recovery_ok)
}

/// A broker of a cluster this bench starts: named, registered with `names`.
fn cluster_broker(common: &Common, names: &str, name: &str, ip: usize) -> Result<Broker, String> {
    let env = [
        ("BROOK_LISTEN".to_string(), format!("127.0.0.{ip}:0")),
        ("BROOK_BROKER_NAME".to_string(), name.to_string()),
        ("BROOK_NAMESRV_ADDRS".to_string(), names.to_string()),
    ];
    Broker::start(&common.flush, &env)
}

async fn create_topic(broker: &Broker, queues: u32) -> Result<(), String> {
    let admin = Connection::connect_as(&broker.addr, "brook-bench").await.map_err(|e| e.to_string())?;
    admin.create_topic(TOPIC, queues).await.map_err(|e| e.to_string())?;
    Ok(())
}

const TOPIC: &str = "bench";

/// Waits until the name server routes the topic to `sets` replica sets.
async fn wait_routed(names: &str, sets: usize) -> Result<(), String> {
    let router =
        brook_client::Router::connect(Endpoint::namesrv_list(names), "brook-bench").await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(route) = router.route(TOPIC).await {
            if route.brokers.iter().filter(|b| b.master().is_some()).count() >= sets {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("the name server did not route {TOPIC} to {sets} brokers in 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn routing_cost(common: &Common, rounds: usize, duration: Duration) -> Result<bool, String> {
    let ns = NameServer::start("127.0.0.1:0")?;
    let broker = cluster_broker(common, &ns.addr, "broker-a", 1)?;
    create_topic(&broker, common.queues).await?;
    wait_routed(&ns.addr, 1).await?;
    let direct = Endpoint::Broker(broker.addr.clone());
    let routed = Endpoint::namesrv([ns.addr.clone()]);
    println!("part 1: sends to one broker named directly vs through a name server");
    println!("round  direct msgs/s  p50 µs  routed msgs/s  p50 µs  routed/direct");
    let mut ratios = Vec::new();
    let mut errors = 0;
    for round in 0..rounds.max(1) {
        // Alternate which goes first: the second run of a pair meets a
        // bigger log and a warmer cache.
        let (d, r) = if round % 2 == 0 {
            let d = load(common, direct.clone(), duration, None).await?;
            (d, load(common, routed.clone(), duration, None).await?)
        } else {
            let r = load(common, routed.clone(), duration, None).await?;
            (load(common, direct.clone(), duration, None).await?, r)
        };
        let ratio = r.rate() / d.rate().max(1e-9);
        println!(
            "{round:>5}  {:>13.0}  {:>6}  {:>13.0}  {:>6}  {ratio:>13.3}",
            d.rate(),
            d.quantile(0.5),
            r.rate(),
            r.quantile(0.5)
        );
        errors += d.errors + r.errors;
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    let mid = ratios.len() / 2;
    let median = if ratios.len() % 2 == 0 { (ratios[mid - 1] + ratios[mid]) / 2.0 } else { ratios[mid] };
    println!(
        "RESULT scenario=cluster-routing producers={} inflight={} routed_over_direct={median:.3} errors={errors}",
        common.producers, common.inflight
    );
    Ok(errors == 0)
}

async fn recovery(common: &Common, brokers: usize, kill_after: Duration, duration: Duration) -> Result<bool, String> {
    let ns = NameServer::start("127.0.0.1:0")?;
    let mut started = Vec::new();
    for i in 0..brokers {
        let broker = cluster_broker(common, &ns.addr, &format!("broker-{}", i + 1), 11 + i)?;
        create_topic(&broker, common.queues).await?;
        started.push(broker);
    }
    wait_routed(&ns.addr, brokers).await?;
    let started = Arc::new(Mutex::new(started));
    let killer = {
        let started = started.clone();
        tokio::spawn(async move {
            tokio::time::sleep(kill_after).await;
            let at = Instant::now();
            if let Ok(mut brokers) = started.lock() {
                brokers[1].kill();
            }
            at
        })
    };
    let run_start = Instant::now();
    let ran = load(common, Endpoint::namesrv([ns.addr.clone()]), kill_after + duration, Some(run_start)).await?;
    let killed_at = killer.await.map_err(|e| e.to_string())?;
    let kill_window = (killed_at - run_start).as_millis() as usize / WINDOW.as_millis() as usize;
    // Before: the second before the kill (the first windows are warm-up).
    let before: Vec<u64> = ran.timeline[kill_window.saturating_sub(10)..kill_window].to_vec();
    let before_rate = before.iter().sum::<u64>() as f64 / before.len().max(1) as f64;
    let bar = before_rate * 2.0 / 3.0;
    let back = (kill_window..ran.timeline.len().saturating_sub(2))
        .find(|&w| ran.timeline[w..w + 3].iter().all(|&n| n as f64 >= bar));
    let per_s = |n: f64| n * (1000.0 / WINDOW.as_millis() as f64);
    println!("part 2: {brokers} brokers through a name server, broker-2 SIGKILLed after {kill_after:?}");
    println!(
        "acks per 100 ms around the kill: {:?}",
        &ran.timeline[kill_window.saturating_sub(5)..(kill_window + 20).min(ran.timeline.len())]
    );
    // Up to the end of the first good window: an upper bound.
    let recovery_ms = back.map(|w| {
        let window_end = run_start + WINDOW * (w as u32 + 1);
        window_end.saturating_duration_since(killed_at).as_millis()
    });
    let after = &ran.timeline[kill_window..(kill_window + 10).min(ran.timeline.len())];
    let lowest = after.iter().min().copied().unwrap_or(0);
    println!(
        "before {:.0} msgs/s; lowest 100 ms in the second after the kill {:.0} msgs/s; back at ≥ 2/3 {}; {} send errors reached the callers",
        per_s(before_rate),
        per_s(lowest as f64),
        recovery_ms.map_or("never".to_string(), |ms| format!("{ms} ms after the kill")),
        ran.errors
    );
    println!(
        "RESULT scenario=cluster-recovery brokers={brokers} before_msgs_per_s={:.0} recovery_ms={} errors={}",
        per_s(before_rate),
        recovery_ms.map_or(-1, |ms| ms as i64),
        ran.errors
    );
    Ok(recovery_ms.is_some())
}

/// `--producers` producers on `endpoint`, each keeping `--inflight` sends
/// in flight, for `duration`. With `timeline_from`, acks are also counted
/// per window since then.
async fn load(
    common: &Common,
    endpoint: Endpoint,
    duration: Duration,
    timeline_from: Option<Instant>,
) -> Result<Ran, String> {
    let windows = (duration.as_millis() / WINDOW.as_millis()) as usize + 20;
    let timeline: Arc<Vec<AtomicU64>> = Arc::new((0..windows).map(|_| AtomicU64::new(0)).collect());
    let mut producers = Vec::new();
    for _ in 0..common.producers.max(1) {
        producers.push(Producer::connect(endpoint.clone()).await.map_err(|e| e.to_string())?);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for producer in producers {
        let (timeline, size, inflight) = (timeline.clone(), common.size, common.inflight.max(1));
        tasks.push(tokio::spawn(async move {
            let (mut acks, mut errors, mut hist) = (0u64, 0u64, new_histogram());
            let mut flight = FuturesUnordered::new();
            let mut n = 0u64;
            loop {
                while flight.len() < inflight && Instant::now() < deadline {
                    let sent = Instant::now();
                    let send = producer.send(message(TOPIC, size, format!("k{n}")));
                    n += 1;
                    flight.push(async move { (send.await, sent) });
                }
                let Some((result, sent)) = flight.next().await else { break };
                match result {
                    Ok(_) => {
                        acks += 1;
                        record(&mut hist, sent);
                        if let Some(from) = timeline_from {
                            let w = (Instant::now() - from).as_millis() as usize / WINDOW.as_millis() as usize;
                            if let Some(slot) = timeline.get(w) {
                                slot.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (acks, errors, hist)
        }));
    }
    let mut ran = Ran { acks: 0, errors: 0, elapsed: Duration::ZERO, hist: new_histogram(), timeline: Vec::new() };
    for task in tasks {
        let (acks, errors, hist) = task.await.map_err(|e| e.to_string())?;
        ran.acks += acks;
        ran.errors += errors;
        let _ = ran.hist.add(&hist);
    }
    ran.elapsed = start.elapsed();
    ran.timeline = timeline.iter().map(|n| n.load(Ordering::Relaxed)).collect();
    Ok(ran)
}
