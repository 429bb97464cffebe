//! Clusters and routes, as name servers keep them: a broker's registration
//! ([`BrokerRegistration`]), a topic's route ([`TopicRoute`]: which brokers
//! hold its queues, at which addresses) and the cluster's members
//! ([`ClusterBroker`]). Shaped after RocketMQ's `TopicRouteData`,
//! `BrokerData` and `QueueData`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Queues may be read (`perm` bit, as RocketMQ's `PermName.PERM_READ`).
pub const PERM_READ: u8 = 4;
/// Queues may be written.
pub const PERM_WRITE: u8 = 2;
/// Read and write.
pub const PERM_READ_WRITE: u8 = PERM_READ | PERM_WRITE;

/// The broker id of a replica set's master.
pub const MASTER_ID: u64 = 0;

/// A broker's part in replication, as its status, its registrations and
/// the cluster list show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// `master` or `slave`.
    pub role: String,
    /// `async` or `sync` (the master's `replication`).
    pub mode: String,
    /// The current master epoch (as this broker knows it).
    pub epoch: u32,
    /// One past its last log byte.
    pub end: u64,
    /// The high watermark: what every in-sync replica holds (a slave: as
    /// its master last said).
    pub confirmed: u64,
    /// A slave: bytes it is behind its master's end (as last heard).
    pub lag_bytes: u64,
    /// Where its replication listener is (a master), or its master's (a
    /// slave).
    pub ha_addr: String,
    /// A slave: whether it is connected to its master now.
    pub connected: bool,
    /// A master: its slaves.
    pub slaves: Vec<SlaveStatus>,
}

/// One slave as its master sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaveStatus {
    /// Its broker id.
    pub broker_id: u64,
    /// Where it connected from.
    pub addr: String,
    /// One past the last byte it confirmed (written, or synced under sync
    /// flush).
    pub acked: u64,
    /// Bytes it is behind the master.
    pub lag_bytes: u64,
    /// In the in-sync set.
    pub in_sync: bool,
    /// Connected now.
    pub connected: bool,
}

/// One topic as a broker registers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConf {
    /// Topic name.
    pub name: String,
    /// Queues producers may write.
    pub write_queues: u32,
    /// Queues consumers may read.
    pub read_queues: u32,
    /// [`PERM_READ`] | [`PERM_WRITE`].
    pub perm: u8,
}

/// What a broker tells every name server, at start, periodically and when
/// a topic changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    /// Cluster name.
    pub cluster: String,
    /// Replica set name (`broker-a`).
    pub broker_name: String,
    /// 0: master; 1 and up: slaves.
    pub broker_id: u64,
    /// Where clients reach it.
    pub addr: String,
    /// Its brookd version.
    pub version: String,
    /// Every topic it holds (system topics left out).
    pub topics: Vec<TopicConf>,
    /// Messages stored per second, lately.
    pub msgs_in_per_s: f64,
    /// Messages delivered per second, lately.
    pub msgs_out_per_s: f64,
    /// Its replication.
    pub replica: ReplicaStatus,
}

/// A replica set in a route: its addresses by broker id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerData {
    /// Cluster name.
    pub cluster: String,
    /// Replica set name.
    pub broker_name: String,
    /// Address by broker id ([`MASTER_ID`] is the master).
    pub addrs: BTreeMap<u64, String>,
}

impl BrokerData {
    /// The master's address, if the master is registered.
    pub fn master(&self) -> Option<&str> {
        self.addrs.get(&MASTER_ID).map(String::as_str)
    }
}

/// One replica set's queues of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueData {
    /// Replica set name.
    pub broker_name: String,
    /// Queues producers may write.
    pub write_queues: u32,
    /// Queues consumers may read.
    pub read_queues: u32,
    /// [`PERM_READ`] | [`PERM_WRITE`].
    pub perm: u8,
}

/// Where a topic lives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRoute {
    /// Topic name.
    pub topic: String,
    /// The replica sets holding it, by name.
    pub brokers: Vec<BrokerData>,
    /// Their queues, by replica set name.
    pub queues: Vec<QueueData>,
}

impl TopicRoute {
    /// The replica set `name`, if the route has it.
    pub fn broker(&self, name: &str) -> Option<&BrokerData> {
        self.brokers.iter().find(|b| b.broker_name == name)
    }
}

/// A broker as `GetClusterInfo` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterBroker {
    /// Cluster name.
    pub cluster: String,
    /// Replica set name.
    pub broker_name: String,
    /// Broker id (0: master).
    pub broker_id: u64,
    /// Its address.
    pub addr: String,
    /// Its brookd version.
    pub version: String,
    /// Topics it registered.
    pub topics: u32,
    /// Messages stored per second, as last registered.
    pub msgs_in_per_s: f64,
    /// Messages delivered per second, as last registered.
    pub msgs_out_per_s: f64,
    /// Milliseconds since its last registration.
    pub last_seen_ms: u64,
    /// Its replication, as last registered.
    pub replica: ReplicaStatus,
}
