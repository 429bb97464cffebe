//! `brook-bench`: drives a real `brookd` over TCP and reports msgs/s, MB/s
//! and latency percentiles, ending with one machine-readable line:
//! `RESULT scenario=… msgs_per_s=… mb_per_s=… p50_us=… p99_us=… p999_us=… errors=…`
//!
//! Scenarios: `produce`, `consume`, `e2e`, `queues`, `backlog`, `restart`,
//! `timers`, and `index` and `loopback` (no broker). By default
//! it starts its own broker on a temporary data dir; `--addr` targets a
//! running one. See BENCHMARKS.md for the commands and numbers.

/// Many small, short-lived allocations (frames, envelopes, buffers) cross
/// threads here; mimalloc's per-thread free lists beat glibc malloc at it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod broker;
mod cpu;
mod index;
mod loopback;
mod pacer;
mod pauses;
mod produce;
mod stats;
mod timers;
mod verify;
mod wake;

use broker::Broker;
use brook_client::{Connection, Message};
use clap::{Parser, Subcommand};
use cpu::CpuClock;
use produce::{Acked, Budget, Load, Mode};
use stats::{new_histogram, Stats, Summary};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "brook-bench", version, about = "Load-test a brook broker")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// Producer tasks (by default each on a connection of its own).
    #[arg(long, global = true, default_value_t = 4)]
    producers: usize,
    /// Connections the producers share, round-robin (as RocketMQ's
    /// benchmark runs its threads over one client); default: one per producer.
    #[arg(long, global = true)]
    connections: Option<usize>,
    /// Body bytes.
    #[arg(long, global = true, default_value_t = 128)]
    size: usize,
    /// Messages in all (default when no --duration: 200000).
    #[arg(long, global = true)]
    messages: Option<u64>,
    /// Run time, e.g. 10s, 500ms, 2m.
    #[arg(long, global = true, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// sync | pipelined | batch.
    #[arg(long, global = true, value_enum, default_value = "pipelined")]
    mode: Mode,
    /// Requests in flight per connection (pipelined, batch).
    #[arg(long, global = true, default_value_t = 64)]
    inflight: usize,
    /// Messages per request (batch mode).
    #[arg(long, global = true, default_value_t = 128)]
    batch: usize,
    /// Queues of the bench topic.
    #[arg(long, global = true, default_value_t = 8)]
    queues: u32,
    /// Flush mode of the broker this bench starts.
    #[arg(long, global = true, default_value = "async")]
    flush: String,
    /// Use a running broker instead of starting one.
    #[arg(long, global = true)]
    addr: Option<String>,
    /// Record every ack, read everything back and check it.
    #[arg(long, global = true)]
    verify: bool,
    /// Extra environment for the broker this bench starts (KEY=VALUE,
    /// repeatable), e.g. BROOK_SERVER__WORKERS=1.
    #[arg(long = "broker-env", global = true)]
    broker_env: Vec<String>,
}

#[derive(Subcommand)]
enum Scenario {
    /// Produce as fast as the mode allows.
    Produce,
    /// Fill a backlog, then drain it with --producers consumers.
    Consume,
    /// Produce at a fixed rate and measure send-to-receive latency.
    E2e {
        /// Messages per second, all producers together.
        #[arg(long, default_value_t = 50_000)]
        rate: u64,
        /// Connections the queues' readers share (one long-polling reader
        /// per queue). The default, 1, is one consumer instance: the
        /// client's consumer pulls all its queues over one connection, as
        /// RocketMQ's and Kafka's do. `--queues` gives one each.
        #[arg(long, default_value_t = 1)]
        reader_connections: usize,
        /// Pacing tick in µs: every producer sends what is due at each
        /// tick, so the default sends rate / 1000 messages at once every
        /// millisecond; finer ticks send the same rate in smaller bursts.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=1_000_000))]
        tick_us: u64,
        /// Milliseconds of load before the measured `--duration`, whose
        /// messages are delivered but not counted: a fresh broker creates
        /// the queues' first files and reaches its steady state meanwhile
        /// (the OpenMessaging benchmark warms up the same way).
        #[arg(long, default_value_t = 0)]
        warmup_ms: u64,
    },
    /// Spread pipelined load over many queues (topics of up to 1,000).
    Queues {
        /// Queues in all.
        #[arg(long, default_value_t = 50_000)]
        count: u32,
        /// Seconds of warm-up before measuring: one message to every queue,
        /// then a pause long enough for each queue's files to be created
        /// (a new queue's first write creates its directory and file; with
        /// tens of thousands of queues that is a one-off cost, not the
        /// steady state). 0 skips it.
        #[arg(long, default_value_t = 11)]
        warmup: u64,
    },
    /// Measure write latency on an empty broker, then again with M messages
    /// stored while a slow consumer reads the cold start of the backlog.
    Backlog {
        /// Messages to store first.
        #[arg(long, default_value_t = 20_000_000)]
        stored: u64,
    },
    /// Fill the broker with exact-time messages due at random times over
    /// `--spread`, keep `--rate` plain sends going, and measure how late
    /// the timers due in the first `--duration` (default: all) fire.
    Timers {
        /// Timers in all.
        #[arg(long, default_value_t = 1_000_000)]
        pending: u64,
        /// Span the due times are spread over.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        spread: Duration,
        /// From the start to the first due time (the fill must fit in it).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        lead: Duration,
        /// Plain sends per second meanwhile.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
    },
    /// The key index alone (no broker): insert cost and lookup latency as
    /// it grows to --messages keys (default 10,000,000).
    Index {
        /// Hash slots per index file.
        #[arg(long, default_value_t = 1_000_000)]
        slots: u32,
        /// Keys per index file.
        #[arg(long, default_value_t = 2_000_000)]
        entries: u32,
    },
    /// Fill the log to a size, SIGKILL the broker, and time until it serves
    /// again on the same data dir.
    Restart {
        /// Commit-log size to reach first, in GiB.
        #[arg(long, default_value_t = 5)]
        log_gib: u64,
    },
    /// No broker: a server process that only answers, driven like `produce
    /// --mode sync` (frames of a real send and answer). The ceiling this
    /// machine's loopback and scheduler put on sync producers.
    Loopback,
    /// The server process of `loopback` (started by it).
    #[command(hide = true)]
    LoopbackServer,
    /// No broker: two threads waking each other in turn, on one CPU and on
    /// two, and an empty system call. What this host charges for the
    /// thread hand-offs inside every request.
    Wake,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (num, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {text:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration unit in {text:?} (ms, s, m)")),
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(ok) => std::process::exit(if ok { 0 } else { 1 }),
        Err(e) => {
            eprintln!("brook-bench: {e}");
            std::process::exit(2);
        }
    }
}

async fn run(cli: Cli) -> Result<bool, String> {
    let common = cli.common.clone();
    if let Scenario::Index { slots, entries } = cli.scenario {
        let total = common.messages.unwrap_or(10_000_000);
        let summary = index::run(total, brook::store::index::IndexShape { slots, capacity: entries })?;
        summary.print();
        return Ok(true);
    }
    match cli.scenario {
        Scenario::LoopbackServer => return loopback::serve(common.size).await,
        Scenario::Wake => {
            let summary = wake::run(common.messages.unwrap_or(wake::DEFAULT_ROUND_TRIPS))?;
            summary.print();
            return Ok(true);
        }
        Scenario::Loopback => {
            let total = common.messages.unwrap_or(0);
            let summary = loopback::run(common.producers, common.size, budget(&common), total).await?;
            summary.print();
            return Ok(summary.errors == 0);
        }
        _ => {}
    }
    let broker = match &common.addr {
        Some(addr) => Broker::external(addr),
        None => {
            let env: Vec<(String, String)> = common
                .broker_env
                .iter()
                .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect();
            Broker::start(&common.flush, &env)?
        }
    };
    let admin = Connection::connect_as(&broker.addr, "brook-bench").await.map_err(|e| e.to_string())?;
    match cli.scenario {
        Scenario::Produce => produce_scenario(&broker, &admin, &common).await,
        Scenario::Consume => consume_scenario(&broker, &admin, &common).await,
        Scenario::E2e { rate, reader_connections, tick_us, warmup_ms } => {
            let pace = Pace { rate, tick: Duration::from_micros(tick_us), warmup: Duration::from_millis(warmup_ms) };
            e2e_scenario(&broker, &admin, &common, pace, reader_connections).await
        }
        Scenario::Queues { count, warmup } => queues_scenario(&broker, &admin, &common, count, warmup).await,
        Scenario::Backlog { stored } => backlog_scenario(&broker, &admin, &common, stored).await,
        Scenario::Restart { log_gib } => restart_scenario(broker, &admin, &common, log_gib).await,
        Scenario::Index { .. } | Scenario::Loopback | Scenario::LoopbackServer | Scenario::Wake => Ok(true),
        Scenario::Timers { pending, spread, lead, rate } => {
            let load = timers::TimerLoad {
                pending,
                spread,
                lead,
                window: common.duration.unwrap_or(spread).min(spread),
                rate,
                producers: common.producers,
                size: common.size,
                queues: common.queues,
            };
            let summary = timers::run(&broker, &admin, load).await?;
            finish(&admin, &common, &[], summary).await
        }
    }
}

fn budget(common: &Common) -> Arc<Budget> {
    let messages = match (common.messages, common.duration) {
        (None, None) => Some(200_000),
        (m, _) => m,
    };
    Budget::new(messages, common.duration.map(|d| Instant::now() + d))
}

async fn topic(admin: &Connection, name: &str, queues: u32) -> Result<Vec<(String, u32)>, String> {
    admin.create_topic(name, queues).await.map_err(|e| e.to_string())?;
    Ok((0..queues).map(|q| (name.to_string(), q)).collect())
}

/// The connections `common.producers` producers share: `--connections` of
/// them (at most one per producer), by default one per producer. Producer
/// `p` uses connection `p % len`.
async fn producer_connections(broker: &Broker, common: &Common, name: &str) -> Result<Vec<Connection>, String> {
    let producers = common.producers.max(1);
    let mut conns = Vec::new();
    for c in 0..common.connections.unwrap_or(producers).clamp(1, producers) {
        conns.push(Connection::connect_as(&broker.addr, &format!("{name}-{c}")).await.map_err(|e| e.to_string())?);
    }
    Ok(conns)
}

/// Runs `common.producers` producers over `targets`; returns acks and the
/// summary.
async fn produce_load(
    broker: &Broker,
    common: &Common,
    targets: Vec<(String, u32)>,
    budget: Arc<Budget>,
    scenario: &str,
) -> Result<(Vec<Acked>, Summary), String> {
    let stats = Arc::new(Stats::new(common.messages.unwrap_or(0)));
    let load = Load {
        targets: Arc::new(targets),
        size: common.size,
        mode: common.mode,
        inflight: common.inflight,
        batch: common.batch,
        keep_acks: common.verify,
    };
    let producers = common.producers.max(1);
    let conns = producer_connections(broker, common, "bench").await?;
    let mut tasks = Vec::new();
    for id in 0..producers {
        let conn = conns[id % conns.len()].clone();
        tasks.push(tokio::spawn(produce::run(id, conn, load.clone(), budget.clone(), stats.clone())));
    }
    let clocks = [("broker", broker.pid().and_then(CpuClock::of)), ("harness", CpuClock::of_self())];
    let start = Instant::now();
    let mut acks = Vec::new();
    for task in tasks {
        acks.extend(task.await.map_err(|e| e.to_string())?);
    }
    let elapsed = start.elapsed();
    let mut summary = stats.summary(
        scenario,
        elapsed,
        match common.mode {
            Mode::Batch => "per request",
            _ => "send→ack",
        },
        vec![
            (
                "mode".into(),
                format!(
                    "{:?} producers={} connections={} inflight={} batch={}",
                    common.mode,
                    producers,
                    conns.len(),
                    common.inflight,
                    common.batch
                ),
            ),
            ("size".into(), format!("{} B", common.size)),
            ("flush".into(), common.flush.clone()),
        ],
    );
    summary.notes.extend(cpu::per_message(&clocks, summary.messages));
    Ok((acks, summary))
}

async fn finish(admin: &Connection, common: &Common, acks: &[Acked], mut summary: Summary) -> Result<bool, String> {
    let mut ok = summary.errors == 0;
    if common.verify {
        let log = std::env::temp_dir().join(format!("brook-bench-acks-{}.tsv", std::process::id()));
        let verdict = verify::verify(admin, acks, &log).await.map_err(|e| e.to_string())?;
        let status = if verdict.problems.is_empty() {
            format!("ok: {} acknowledged messages all present once, in order (log {})", verdict.checked, log.display())
        } else {
            ok = false;
            for p in &verdict.problems {
                eprintln!("verify: {p}");
            }
            format!("FAILED: {} problems (log {})", verdict.problems.len(), log.display())
        };
        summary.notes.push(("verify".into(), status));
    }
    summary.print();
    Ok(ok)
}

async fn produce_scenario(broker: &Broker, admin: &Connection, common: &Common) -> Result<bool, String> {
    let targets = topic(admin, "bench", common.queues).await?;
    let (acks, mut summary) = produce_load(broker, common, targets, budget(common), "produce").await?;
    if let Some(rss) = broker.rss_bytes() {
        summary.notes.push(("broker rss".into(), format!("{} MiB", rss >> 20)));
    }
    finish(admin, common, &acks, summary).await
}

async fn consume_scenario(broker: &Broker, admin: &Connection, common: &Common) -> Result<bool, String> {
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

/// How `e2e` sends: `rate` messages a second in all, every `tick`, after
/// `warmup` of the same load that is not counted.
struct Pace {
    rate: u64,
    tick: Duration,
    warmup: Duration,
}

async fn e2e_scenario(
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
    let counted_from = produce::now_ns() + warmup.as_nanos() as u64;
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
                let now = produce::now_ns();
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
                Ok(_) => stats::record_ns(&mut hist, produce::now_ns().saturating_sub(sent)),
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
                    let msg: Message = produce::message(topic, size, format!("e{p}-{n}"));
                    let sent = produce::now_ns();
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
const SLOW: Duration = Duration::from_millis(5);

/// A summary line: how many messages took longer than [`SLOW`], what share
/// of them was in flight while a CPU of the host paused (against the share
/// of all messages, the rate by chance), and the latency of the messages
/// no pause touched.
fn slow_in_pauses(flights: &[(u64, u64)], pauses: &pauses::Pauses) -> (String, String) {
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

async fn queues_scenario(
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
async fn warm_up(broker: &Broker, targets: &[(String, u32)], size: usize) -> Result<u64, String> {
    let conn = Connection::connect_as(&broker.addr, "warmup").await.map_err(|e| e.to_string())?;
    let mut sent = 0;
    for chunk in targets.chunks(256) {
        let sends = chunk.iter().map(|(topic, queue)| {
            let msg = produce::message(topic, size, format!("warm-{topic}-{queue}"));
            conn.send(topic, *queue, vec![msg])
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|e| e.to_string())?;
            sent += 1;
        }
    }
    Ok(sent)
}

async fn restart_scenario(
    mut broker: Broker,
    admin: &Connection,
    common: &Common,
    log_gib: u64,
) -> Result<bool, String> {
    let targets = topic(admin, "bench-restart", common.queues).await?;
    let fill = Common { mode: Mode::Batch, batch: 256, inflight: 4, size: common.size.max(1024), ..common.clone() };
    let goal = log_gib << 30;
    let (mut stored, mut body_bytes) = (0, 0);
    broker.log_bytes().ok_or("--addr brokers cannot be restarted")?;
    while body_bytes < goal {
        let (_, filled) =
            produce_load(&broker, &fill, targets.clone(), Budget::new(Some(200_000), None), "fill").await?;
        stored += filled.messages;
        body_bytes += filled.bytes;
    }
    let log = broker.log_bytes().unwrap_or(0);
    eprintln!(
        "stored {stored} messages ({:.2} GiB of bodies, {:.2} GiB of segment files); SIGKILL",
        body_bytes as f64 / f64::from(1u32 << 30),
        log as f64 / f64::from(1u32 << 30)
    );
    let listening = broker.kill_and_restart()?;
    let started = Instant::now();
    let conn = Connection::connect_as(&broker.addr, "restart-probe").await.map_err(|e| e.to_string())?;
    conn.describe_topic("bench-restart").await.map_err(|e| e.to_string())?;
    let serving = listening + started.elapsed();
    let mut hist = new_histogram();
    let _ = hist.record(serving.as_micros() as u64);
    let summary = Summary {
        scenario: "restart".into(),
        messages: 0,
        bytes: 0,
        errors: 0,
        elapsed: serving,
        hist,
        latency_of: "kill→serving",
        notes: vec![
            (
                "log".into(),
                format!(
                    "{:.2} GiB of bodies in {:.2} GiB of segments",
                    body_bytes as f64 / f64::from(1u32 << 30),
                    log as f64 / f64::from(1u32 << 30)
                ),
            ),
            (
                "serving again".into(),
                format!("{:.3} s after SIGKILL (listening at {:.3} s)", serving.as_secs_f64(), listening.as_secs_f64()),
            ),
        ],
    };
    summary.print();
    Ok(true)
}

async fn backlog_scenario(broker: &Broker, admin: &Connection, common: &Common, stored: u64) -> Result<bool, String> {
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
