//! The broker's cluster tasks: registration with the name servers and the
//! refresh of the cluster-wide queue lists, started once the broker listens
//! and stopped (after unregistering) when it stops.

use crate::broker::Running;
use crate::cluster::namesrv::NameServers;
use crate::cluster::registrar::Registrar;
use crate::cluster::Identity;
use crate::config::Config;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the queue lists of the topics groups read are asked anew: a
/// broker leaving or joining rebalances the groups within this.
const VIEW_REFRESH: Duration = Duration::from_secs(3);

/// The name servers `config` names, if any.
pub(super) fn name_servers(config: &Config) -> Option<Arc<NameServers>> {
    let addrs = config.namesrv();
    let local = crate::ha::controller::local_ip(config);
    (!addrs.is_empty()).then(|| Arc::new(NameServers::new(&addrs, &format!("broker-{}", config.broker_name), local)))
}

/// The running registration.
pub struct ClusterTasks {
    registrar: Arc<Registrar>,
    stop: watch::Sender<bool>,
}

impl ClusterTasks {
    /// Stops registering and unregisters.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.registrar.unregister().await;
    }
}

/// Starts registering `identity` (with name servers configured).
pub(super) fn start(
    running: &Running,
    config: &Config,
    identity: Identity,
    logger: &slog::Logger,
) -> Option<ClusterTasks> {
    let names = running.names.clone()?;
    slog::info!(logger, "registering with the name servers"; "namesrv" => names.addrs().join(","),
        "cluster" => &identity.cluster, "broker_name" => &identity.broker_name, "broker_id" => identity.broker_id,
        "addr" => %identity.addr);
    let registrar = Arc::new(Registrar {
        names,
        identity,
        topics: running.topics.clone(),
        traffic: running.traffic.clone(),
        replication: running.replication.clone(),
        interval: Duration::from_millis(config.register_interval_ms),
        logger: logger.clone(),
    });
    let (stop, stopping) = watch::channel(false);
    actix::spawn(registrar.clone().run(stopping.clone()));
    actix::spawn(running.view.clone().refresh(VIEW_REFRESH, stopping));
    Some(ClusterTasks { registrar, stop })
}
