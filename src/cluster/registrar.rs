//! The registrar: registers the broker and its topics with every name
//! server at start, every `register_interval_ms`, and at once when a topic
//! changes; unregisters at shutdown. A name server that does not answer is
//! logged once until it answers again.

use crate::cluster::namesrv::NameServers;
use crate::cluster::traffic::Traffic;
use crate::cluster::Identity;
use crate::store::topics::TopicTable;
use brook_proto::route::{BrokerRegistration, TopicConf, PERM_READ_WRITE};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Registers one broker with its name servers.
pub struct Registrar {
    /// The name servers.
    pub names: Arc<NameServers>,
    /// Who registers.
    pub identity: Identity,
    /// What it holds.
    pub topics: Arc<TopicTable>,
    /// Its rates, reported with each registration.
    pub traffic: Arc<Traffic>,
    /// Replication (registered for slaves to find their master).
    pub replication: Arc<crate::ha::Replication>,
    /// Registration period.
    pub interval: Duration,
    /// Logger.
    pub logger: slog::Logger,
}

impl Registrar {
    /// The registration as of now.
    pub fn registration(&self) -> BrokerRegistration {
        let (msgs_in_per_s, msgs_out_per_s) = self.traffic.rates();
        BrokerRegistration {
            cluster: self.identity.cluster.clone(),
            broker_name: self.identity.broker_name.clone(),
            broker_id: self.identity.broker_id,
            addr: self.identity.addr.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            topics: self
                .topics
                .list()
                .into_iter()
                .map(|(name, config)| TopicConf {
                    name,
                    write_queues: config.queues,
                    read_queues: config.queues,
                    perm: PERM_READ_WRITE,
                })
                .collect(),
            msgs_in_per_s,
            msgs_out_per_s,
            replica: self.replication.status(),
        }
    }

    /// Registers now and then until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut changes = self.topics.changes();
        let mut failing: HashSet<String> = HashSet::new();
        loop {
            self.register_once(&mut failing).await;
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // Topics created together register together.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ = stop.changed() => return,
            }
        }
    }

    async fn register_once(&self, failing: &mut HashSet<String>) {
        let registration = self.registration();
        for (addr, outcome) in self.names.register(&registration).await {
            match outcome {
                Ok(()) => {
                    if failing.remove(&addr) {
                        slog::info!(self.logger, "registered with the name server again"; "namesrv" => addr);
                    }
                }
                Err(e) => {
                    if failing.insert(addr.clone()) {
                        slog::warn!(self.logger, "cannot register with a name server; retried every period";
                            "namesrv" => addr, "error" => %e);
                    }
                }
            }
        }
    }

    /// Tells every name server this broker is stopping (at most a few
    /// seconds: a stop does not wait for an absent name server).
    pub async fn unregister(&self) {
        let id = &self.identity;
        let done = self.names.unregister(&id.cluster, &id.broker_name, id.broker_id);
        let _ = tokio::time::timeout(Duration::from_secs(3), done).await;
    }
}
