//! The broker's replication tasks, started once it listens: a master's
//! listener for its slaves and the in-sync set's expiry, or a slave's
//! follower of its master.

use crate::actors::queue_registry::QueueRegistry;
use crate::actors::writer::{ReplicaGateConfig, WriterActor, WriterStats};
use crate::broker::{OpenedStore, Running};
use crate::config::Config;
use crate::error::Result;
use crate::ha::apply::Applier;
use crate::ha::controller::{self, Heartbeats};
use crate::ha::master::{self, Source};
use crate::ha::meta::{self, MetaTargets};
use crate::ha::slave::{hello_of, Follower};
use crate::ha::Replication;
use crate::store::epochs::EpochFile;
use actix::Addr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often slaves that stopped catching up are looked for.
const EXPIRY_CHECK: Duration = Duration::from_millis(250);

/// The broker's replication state over an opened store, its epoch taken
/// ([`crate::ha::take_epoch`]); under `sync` the writer holds groups back
/// for it.
pub(super) fn open(
    config: &Config,
    store: &OpenedStore,
    (writer, stats): (&Addr<WriterActor>, &Arc<WriterStats>),
    epochs: (EpochFile, u32),
    logger: &slog::Logger,
) -> Result<Arc<Replication>> {
    let replication = Replication::open(
        config,
        &store.paths,
        (writer.clone(), stats.clone()),
        (epochs, store.joined.as_ref()),
        logger,
    )?;
    if replication.is_sync() {
        writer.do_send(ReplicaGateConfig { replicated_to: replication.replicated_to() });
    }
    Ok(replication)
}

/// A slave's: its queues take no writes but replication's, which the
/// returned applier makes readable (none on a master).
pub(super) fn applier(
    config: &Config,
    store: &OpenedStore,
    registry: &Arc<QueueRegistry>,
    replication: &Replication,
) -> Option<Arc<parking_lot::Mutex<Applier>>> {
    if !replication.is_slave() {
        return None;
    }
    registry.refuse_writes(format!("{}/{}", config.broker_name, config.broker_id));
    let applier =
        Applier::new(registry.clone(), store.topics.clone(), store.segments.clone(), store.recovered.write_pos);
    Some(Arc::new(parking_lot::Mutex::new(applier)))
}

/// Starts replication on `runtime` until `stop`.
pub(super) async fn start(
    running: &Running,
    config: &Config,
    client: SocketAddr,
    runtime: &tokio::runtime::Handle,
    stop: CancellationToken,
    logger: &slog::Logger,
) -> Result<()> {
    let repl = running.replication.clone();
    let logger = logger.new(slog::o!("part" => "replication"));
    if let (Some(joined), Some(names)) = (&running.joined, &running.names) {
        let heartbeats = Heartbeats {
            repl: repl.clone(),
            names: names.clone(),
            beat: controller::running_beat(config, joined.broker_id, client),
            interval: Duration::from_millis(config.controller_heartbeat_ms),
            logger: logger.new(slog::o!("part" => "controller")),
        };
        runtime.spawn(heartbeats.run(stop.clone()));
    }
    if let Some(applier) = &running.applier {
        let master_addr = Some(config.master_ha_addr.trim().to_string()).filter(|a| !a.is_empty());
        let follower = Follower {
            repl,
            writer: running.registry.writer().clone(),
            stats: running.writer_stats.clone(),
            applier: applier.clone(),
            meta: MetaTargets {
                topics: running.topics.clone(),
                registry: running.registry.clone(),
                groups: running.groups.clone(),
                paths: running.paths.clone(),
                delay_progress: running
                    .system
                    .files
                    .progress
                    .iter()
                    .take(running.system.schedulers.len())
                    .cloned()
                    .collect(),
            },
            paths: running.paths.clone(),
            hello: hello_of(config),
            master_addr,
            names: running.names.clone(),
            local_ip: Some(client.ip()).filter(|ip| !ip.is_unspecified()),
            logger,
        };
        // On the writer's thread: a received frame reaches the writer, and
        // its write comes back to be acknowledged, without a hop.
        running.writer_arbiter().unwrap_or_else(actix::Arbiter::current).spawn(follower.run(stop));
        return Ok(());
    }
    runtime.spawn(meta::watch_topics(running.topics.clone(), running.appender.clone(), logger.clone()));
    let source = Source {
        repl: repl.clone(),
        segments: running.reader.segments().clone(),
        reader: running.reader.clone(),
        stats: running.writer_stats.clone(),
        cluster: config.cluster.clone(),
        broker_name: config.broker_name.clone(),
        refused: Arc::default(),
        logger,
    };
    let serve_on = running.writer_arbiter().unwrap_or_else(actix::Arbiter::current);
    let bound = master::listen(config.ha_listen_addr(client), source, (runtime, serve_on), stop.clone()).await?;
    // Slaves find it through the name servers: named as clients name the
    // broker (its advertised host), at the bound port.
    let host = crate::cluster::advertised(config, client).ip();
    *repl.ha_addr.lock() =
        SocketAddr::new(if bound.ip().is_unspecified() { host } else { bound.ip() }, bound.port()).to_string();
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(EXPIRY_CHECK);
        loop {
            tokio::select! {
                _ = tick.tick() => repl.expire_laggards(),
                () = stop.cancelled() => return,
            }
        }
    });
    Ok(())
}
