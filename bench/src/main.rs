//! `brook-bench`: drives a real `brookd` over TCP and reports msgs/s, MB/s
//! and latency percentiles, ending with one machine-readable line:
//! `RESULT scenario=… msgs_per_s=… mb_per_s=… p50_us=… p99_us=… p999_us=… errors=…`
//!
//! Scenarios: `produce`, `consume`, `e2e`, `queues`, `backlog`, `restart`,
//! `timers`, `cluster` (name server and brokers of its own), and `index`
//! and `loopback` (no broker). By default
//! it starts its own broker on a temporary data dir; `--addr` targets a
//! running one. See BENCHMARKS.md for the commands and numbers.

/// Many small, short-lived allocations (frames, envelopes, buffers) cross
/// threads here; mimalloc's per-thread free lists beat glibc malloc at it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod broker;
mod cpu;
mod disk;
mod load;
mod pacer;
mod pauses;
mod scenarios;
mod stats;
mod verify;

use broker::Broker;
use brook_client::Connection;
use clap::{Parser, Subcommand};
use load::Mode;
use scenarios::{
    backlog, cluster, consume, e2e, failover, index, loopback, produce, queues, replication, restart, timers, wake,
};
use std::time::Duration;

#[derive(Parser)]
#[command(name = "brook-bench", version, about = "Load-test a brook broker")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    common: Common,
}

#[derive(clap::Args, Clone)]
pub(crate) struct Common {
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
    /// Start a slave beside the broker (broker id 1, its own data dir)
    /// and wait until it is in sync before measuring; with
    /// `--broker-env BROOK_REPLICATION=sync` every send waits for it.
    #[arg(long, global = true)]
    slave: bool,
    /// Record every ack, read everything back and check it.
    #[arg(long, global = true)]
    verify: bool,
    /// Send as idempotent producers: an id per producer task and a
    /// sequence per queue on every send (the client's default).
    #[arg(long, global = true)]
    idempotent: bool,
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
    /// Name server and brokers of its own: sends through the name server
    /// against sends to the broker named directly (alternated), then the
    /// time from SIGKILL of one of `--brokers` to the producers' rate back
    /// at 2/3 of before.
    Cluster {
        /// Brokers in the recovery part.
        #[arg(long, default_value_t = 3)]
        brokers: usize,
        /// Direct/routed pairs in the routing part.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Load before the kill.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        kill_after: Duration,
    },
    /// No broker: a server process that only answers, driven like `produce
    /// --mode sync` (frames of a real send and answer). The ceiling this
    /// machine's loopback and scheduler put on sync producers.
    Loopback,
    /// Replication: how far a slave trails its master (async replication)
    /// under pipelined load, then how fast a slave started `--catchup-gib`
    /// behind catches up.
    Replication {
        /// Log to write before the catching-up slave starts, GiB.
        #[arg(long, default_value_t = 5)]
        catchup_gib: u64,
    },
    /// Failover: three controller voters and three brokers in controller
    /// mode on loopback addresses; the master SIGKILLed under load
    /// `--rounds` times. Prints the time from the kill to the first ack
    /// through the new master and to the consumers' first new message,
    /// and throughput before, during and after.
    Failover {
        /// Masters killed, one after another.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Load before each kill.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        kill_after: Duration,
    },
    /// The server process of `loopback` (started by it).
    #[command(hide = true)]
    LoopbackServer,
    /// No broker: two threads waking each other in turn, on one CPU and on
    /// two, and an empty system call. What this host charges for the
    /// thread hand-offs inside every request.
    Wake,
}

/// A run time: `10s`, `500ms`, `2m` (units as the broker's config); a bare
/// number is seconds, as this flag has always read it.
fn parse_duration(text: &str) -> Result<Duration, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map(Duration::from_secs).map_err(|_| format!("bad duration {text:?}"));
    }
    brook_proto::time::parse_duration_ms(text).map(Duration::from_millis)
}

/// The broker `common` names (`--addr`), or one this bench starts (with a
/// slave under `--slave`).
fn broker_under_test(common: &Common) -> Result<Broker, String> {
    if let Some(addr) = &common.addr {
        return Ok(Broker::external(addr));
    }
    let env: Vec<(String, String)> = common
        .broker_env
        .iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    if !common.slave {
        return Broker::start(&common.flush, &env);
    }
    let mut broker = Broker::start_master(&common.flush, &env)?;
    broker.start_slave()?;
    Ok(broker)
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
        Scenario::Cluster { brokers, rounds, kill_after } => {
            return cluster::run(&common, cluster::ClusterRun { brokers, rounds, kill_after }).await;
        }
        Scenario::Replication { catchup_gib } => return replication::run(&common, catchup_gib).await,
        Scenario::Failover { rounds, kill_after } => {
            return failover::run(&common, failover::FailoverRun { rounds, kill_after }).await;
        }
        Scenario::Loopback => {
            let total = common.messages.unwrap_or(0);
            let summary = loopback::run(common.producers, common.size, scenarios::budget(&common), total).await?;
            summary.print();
            return Ok(summary.errors == 0);
        }
        _ => {}
    }
    let broker = broker_under_test(&common)?;
    let admin = Connection::connect_as(&broker.addr, "brook-bench").await.map_err(|e| e.to_string())?;
    if broker.slave.is_some() {
        replication::wait_in_sync(&admin).await?;
    }
    match cli.scenario {
        Scenario::Produce => produce::run(&broker, &admin, &common).await,
        Scenario::Consume => consume::run(&broker, &admin, &common).await,
        Scenario::E2e { rate, reader_connections, tick_us, warmup_ms } => {
            let pace =
                e2e::Pace { rate, tick: Duration::from_micros(tick_us), warmup: Duration::from_millis(warmup_ms) };
            e2e::run(&broker, &admin, &common, pace, reader_connections).await
        }
        Scenario::Queues { count, warmup } => queues::run(&broker, &admin, &common, count, warmup).await,
        Scenario::Backlog { stored } => backlog::run(&broker, &admin, &common, stored).await,
        Scenario::Restart { log_gib } => restart::run(broker, &admin, &common, log_gib).await,
        Scenario::Index { .. }
        | Scenario::Loopback
        | Scenario::LoopbackServer
        | Scenario::Wake
        | Scenario::Cluster { .. }
        | Scenario::Replication { .. }
        | Scenario::Failover { .. } => Ok(true),
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
            scenarios::finish(&admin, &common, &[], summary).await
        }
    }
}
