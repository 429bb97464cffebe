//! A broker in controller mode (`controller_mode = true`): the controller
//! in the name servers decides its role. At start ([`join`]) it gets its
//! persistent id (kept in `controller-id`) and learns whether it is master
//! and in which epoch; then it heartbeats ([`Heartbeats`]) and follows what
//! the controller says. A role change — elected master, deposed, or a
//! new master to follow — restarts the process in place (same pid, same
//! arguments), so becoming master runs the start every master runs:
//! recovery cuts a partial record at the log's end and rebuilds what
//! derives from the log before anything is served, and the new epoch is
//! taken before the first write. A master also proposes its in-sync set's
//! changes here; the controller commits them with epoch checks.

use crate::cluster::namesrv::NameServers;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ha::Replication;
use crate::store::StorePaths;
use brook_proto::controller::{BrokerBeat, ControllerRequest, ControllerResponse, ReplicaSetView};
use brook_proto::ErrorCode;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a broker that has an id waits for the controller at start
/// before it starts as a slave (it never starts as master on its own).
const JOIN_PATIENCE: Duration = Duration::from_secs(10);
/// Pause between attempts to reach the controller.
const RETRY: Duration = Duration::from_millis(300);
/// While it follows no master, a slave heartbeats this much more often:
/// it learns of its own election sooner.
const EAGER: u32 = 5;

/// This broker's place, as the controller gave it at start.
#[derive(Debug, Clone)]
pub struct Joined {
    /// Its persistent id (≥ 1).
    pub broker_id: u64,
    /// Master of this epoch, or a slave (none).
    pub master_epoch: Option<u32>,
    /// Its replica set then (none: the controller was out of reach).
    pub set: Option<ReplicaSetView>,
}

impl Joined {
    /// The id it registers with name servers and replicates under: 0 as
    /// master (clients write to id 0), its own as a slave.
    pub fn role_id(&self) -> u64 {
        if self.master_epoch.is_some() {
            brook_proto::route::MASTER_ID
        } else {
            self.broker_id
        }
    }
}

fn read_id(paths: &StorePaths) -> Result<Option<u64>> {
    match std::fs::read_to_string(paths.controller_id()) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Error::Config(format!("{} does not hold a broker id", paths.controller_id().display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read the controller id", e)),
    }
}

/// The beat a broker of `config` listening at `bound` sends, before its
/// fields are filled.
fn beat_of(config: &Config, id: Option<u64>, bound: std::net::SocketAddr) -> BrokerBeat {
    BrokerBeat {
        cluster: config.cluster.clone(),
        broker_name: config.broker_name.clone(),
        broker_id: id,
        addr: crate::cluster::advertised(config, bound).to_string(),
        ..BrokerBeat::default()
    }
}

/// Asks the controller for this broker's id and role (its log at `epoch`,
/// ending at `end`). Runs before the broker starts; blocks until the
/// controller answers, or — for a broker that already has an id — until
/// [`JOIN_PATIENCE`] has passed, when it starts as a slave.
pub fn join(config: &Config, paths: &StorePaths, (epoch, end): (u32, u64), logger: &slog::Logger) -> Result<Joined> {
    let known = read_id(paths)?;
    let names = NameServers::new(&config.namesrv(), &format!("broker-{}", config.broker_name), local_ip(config));
    // Not listening yet: the configured address stands for the bound one.
    let bound = config.listen.parse().unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let beat = BrokerBeat { epoch, end, ..beat_of(config, known, bound) };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("start the controller client", e))?;
    let started = Instant::now();
    let answer = runtime.block_on(async {
        let mut last = String::new();
        loop {
            match names.controller(ControllerRequest::Register(beat.clone())).await {
                Ok(ControllerResponse::Assigned { broker_id, set }) => return Ok(Some((broker_id, set))),
                Ok(other) => return Err(Error::Busy(format!("unexpected controller answer {other:?}"))),
                Err(e) if e.code() == Some(ErrorCode::InvalidArgument) => {
                    return Err(Error::Config(format!("the controller refused this broker: {e}")))
                }
                Err(e) => {
                    if e.to_string() != last {
                        slog::warn!(logger, "waiting for the controller"; "error" => %e);
                        last = e.to_string();
                    }
                }
            }
            if known.is_some() && started.elapsed() > JOIN_PATIENCE {
                return Ok(None);
            }
            tokio::time::sleep(RETRY).await;
        }
    })?;
    let Some((broker_id, set)) = answer else {
        let broker_id = known.unwrap_or_default();
        slog::warn!(logger, "the controller is out of reach: starting as a slave"; "broker_id" => broker_id);
        return Ok(Joined { broker_id, master_epoch: None, set: None });
    };
    if known != Some(broker_id) {
        crate::store::write_atomically(&paths.controller_id(), broker_id.to_string().as_bytes())
            .map_err(|e| Error::io("write the controller id", e))?;
    }
    // Master only of an epoch past its own log's: one that already served
    // the controller's epoch (no new election could be held) waits as a
    // slave for one.
    let master_epoch = (set.master == Some(broker_id) && set.master_epoch > epoch).then_some(set.master_epoch);
    slog::info!(logger, "joined the controller"; "broker_id" => broker_id, "master" => ?set.master,
        "master_epoch" => set.master_epoch, "role" => if master_epoch.is_some() { "master" } else { "slave" });
    Ok(Joined { broker_id, master_epoch, set: Some(set) })
}

/// The address a broker's connections leave from: its own listen address.
pub fn local_ip(config: &Config) -> Option<std::net::IpAddr> {
    config.listen.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified())
}

/// A broker's heartbeats to the controller, and what it does with the
/// answers.
pub struct Heartbeats {
    /// Replication state (role, epoch, in-sync set).
    pub repl: Arc<Replication>,
    /// Where the controller is reached.
    pub names: Arc<NameServers>,
    /// Who this broker is.
    pub beat: BrokerBeat,
    /// `controller_heartbeat_ms`.
    pub interval: Duration,
    /// Logger.
    pub logger: slog::Logger,
}

impl Heartbeats {
    /// Heartbeats until `stop` (or until a role change restarts the
    /// process).
    pub async fn run(self, stop: CancellationToken) {
        let mut last_error = String::new();
        loop {
            let pause = if self.repl.is_slave() && !self.repl.upstream_epoch().0 {
                self.interval / EAGER
            } else {
                self.interval
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => return,
            }
            let beat = BrokerBeat {
                epoch: self.repl.epoch(),
                end: self.repl.end(),
                ha_addr: self.repl.ha_addr.lock().clone(),
                ..self.beat.clone()
            };
            match self.names.controller(ControllerRequest::Heartbeat(beat)).await {
                Ok(ControllerResponse::Set(view)) => {
                    last_error.clear();
                    self.follow(view).await;
                }
                Ok(other) => slog::warn!(self.logger, "unexpected controller answer"; "answer" => ?other),
                Err(e) => {
                    if e.to_string() != last_error {
                        slog::warn!(self.logger, "controller heartbeat failed"; "error" => %e);
                        last_error = e.to_string();
                    }
                }
            }
        }
    }

    /// Acts on the controller's view of this broker's replica set.
    async fn follow(&self, view: ReplicaSetView) {
        let me = self.beat.broker_id.unwrap_or_default();
        if !self.repl.is_slave() {
            if view.master != Some(me) || view.master_epoch != self.repl.epoch() {
                restart(&self.logger, "the controller elected another master", &view);
            }
            let slaves: BTreeSet<u64> = view.in_sync.iter().copied().filter(|id| *id != me).collect();
            self.repl.set_committed(slaves, view.in_sync_epoch);
            if let Some((mut wanted, in_sync_epoch)) = self.repl.in_sync_proposal() {
                wanted.insert(me);
                self.propose(view.master_epoch, in_sync_epoch, wanted).await;
            }
            return;
        }
        if view.master == Some(me) && view.master_epoch > self.repl.epoch() {
            restart(&self.logger, "elected master", &view);
        }
        let (connected, following) = self.repl.upstream_epoch();
        if connected && following < view.master_epoch {
            restart(&self.logger, "following a master the controller replaced", &view);
        }
        self.repl.set_controller_master(
            (view.master.is_some() && !view.master_ha_addr.is_empty())
                .then(|| (view.master_ha_addr.clone(), view.master_epoch)),
        );
    }

    async fn propose(&self, master_epoch: u32, in_sync_epoch: u32, wanted: BTreeSet<u64>) {
        let request = ControllerRequest::AlterInSync {
            broker_name: self.beat.broker_name.clone(),
            master_id: self.beat.broker_id.unwrap_or_default(),
            master_epoch,
            in_sync_epoch,
            in_sync: wanted.iter().copied().collect(),
        };
        match self.names.controller(request).await {
            Ok(ControllerResponse::Set(view)) => {
                let me = self.beat.broker_id.unwrap_or_default();
                slog::info!(self.logger, "in-sync set committed"; "in_sync" => ?view.in_sync, "epoch" => view.in_sync_epoch);
                self.repl
                    .set_committed(view.in_sync.iter().copied().filter(|id| *id != me).collect(), view.in_sync_epoch);
            }
            Ok(other) => slog::warn!(self.logger, "unexpected controller answer"; "answer" => ?other),
            Err(e) => slog::warn!(self.logger, "in-sync change not committed"; "wanted" => ?wanted, "error" => %e),
        }
    }
}

/// Restarts the process to take the role the controller gave.
fn restart(logger: &slog::Logger, why: &str, view: &ReplicaSetView) -> ! {
    slog::warn!(logger, "role change: restarting"; "why" => why, "master" => ?view.master,
        "master_epoch" => view.master_epoch);
    let err = crate::ha::restart_process("take the role the controller gave");
    slog::crit!(logger, "cannot restart for a role change"; "error" => %err);
    std::thread::sleep(Duration::from_millis(100));
    std::process::exit(1)
}

/// The beat of a running broker listening at `bound`.
pub fn running_beat(config: &Config, broker_id: u64, bound: std::net::SocketAddr) -> BrokerBeat {
    beat_of(config, Some(broker_id), bound)
}
