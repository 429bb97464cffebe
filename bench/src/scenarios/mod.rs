//! The scenarios `brook-bench` runs, one file each, and what they share:
//! the bench topic, producer connections, the produce load and the final
//! summary (with `--verify`, every acknowledged message read back).

pub(crate) mod backlog;
pub(crate) mod cluster;
pub(crate) mod consume;
pub(crate) mod e2e;
pub(crate) mod failover;
pub(crate) mod index;
pub(crate) mod loopback;
pub(crate) mod produce;
pub(crate) mod queues;
pub(crate) mod replication;
pub(crate) mod restart;
pub(crate) mod timers;
pub(crate) mod wake;

use crate::broker::Broker;
use crate::cpu::{self, CpuClock};
use crate::load::{self, Acked, Budget, Load, Mode};
use crate::stats::{Stats, Summary};
use crate::verify;
use crate::Common;
use brook_client::Connection;
use std::sync::Arc;
use std::time::Instant;

pub(crate) fn budget(common: &Common) -> Arc<Budget> {
    let messages = match (common.messages, common.duration) {
        (None, None) => Some(200_000),
        (m, _) => m,
    };
    Budget::new(messages, common.duration.map(|d| Instant::now() + d))
}

pub(crate) async fn topic(admin: &Connection, name: &str, queues: u32) -> Result<Vec<(String, u32)>, String> {
    admin.create_topic(name, queues).await.map_err(|e| e.to_string())?;
    Ok((0..queues).map(|q| (name.to_string(), q)).collect())
}

/// The connections `common.producers` producers share: `--connections` of
/// them (at most one per producer), by default one per producer. Producer
/// `p` uses connection `p % len`.
pub(crate) async fn producer_connections(
    broker: &Broker,
    common: &Common,
    name: &str,
) -> Result<Vec<Connection>, String> {
    let producers = common.producers.max(1);
    let mut conns = Vec::new();
    for c in 0..common.connections.unwrap_or(producers).clamp(1, producers) {
        conns.push(Connection::connect_as(&broker.addr, &format!("{name}-{c}")).await.map_err(|e| e.to_string())?);
    }
    Ok(conns)
}

/// Runs `common.producers` producers over `targets`; returns acks and the
/// summary.
pub(crate) async fn produce_load(
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
        idempotent: common.idempotent,
    };
    let producers = common.producers.max(1);
    let conns = producer_connections(broker, common, "bench").await?;
    let mut tasks = Vec::new();
    for id in 0..producers {
        let conn = conns[id % conns.len()].clone();
        tasks.push(tokio::spawn(load::run(id, conn, load.clone(), budget.clone(), stats.clone())));
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
            ("idempotent".into(), common.idempotent.to_string()),
        ],
    );
    summary.notes.extend(cpu::per_message(&clocks, summary.messages));
    Ok((acks, summary))
}

pub(crate) async fn finish(
    admin: &Connection,
    common: &Common,
    acks: &[Acked],
    mut summary: Summary,
) -> Result<bool, String> {
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
