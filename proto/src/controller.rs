//! What brokers and tools say to the controller (the Raft group inside the
//! name servers that elects masters), through any name server's client
//! port: a name server that does not lead forwards to the one that does.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A request for the controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControllerRequest {
    /// A broker starting: asks for its persistent id (none yet: a new
    /// broker) and learns its role. A starting broker that was master
    /// triggers an election (it may have lost its tail).
    Register(BrokerBeat),
    /// A broker's heartbeat, every `controller_heartbeat_ms`; answered with
    /// its replica set as the controller sees it.
    Heartbeat(BrokerBeat),
    /// A master asks to change its replica set's in-sync set; refused
    /// unless it is the master of `master_epoch` and `in_sync_epoch` is
    /// current.
    AlterInSync {
        /// The replica set.
        broker_name: String,
        /// The asking master's id.
        master_id: u64,
        /// Its epoch.
        master_epoch: u32,
        /// The in-sync set's epoch it changes.
        in_sync_epoch: u32,
        /// The new set, the master included.
        in_sync: Vec<u64>,
    },
    /// Asks for a new master (planned maintenance): `broker_id`, or the
    /// best live in-sync member but the current master.
    Elect {
        /// The replica set.
        broker_name: String,
        /// The member wanted.
        broker_id: Option<u64>,
    },
    /// The controller's members and every replica set.
    Info,
}

/// What a broker tells the controller of itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BrokerBeat {
    /// Its cluster.
    pub cluster: String,
    /// Its replica set.
    pub broker_name: String,
    /// Its persistent id (none: a new broker asking for one).
    pub broker_id: Option<u64>,
    /// Its client address.
    pub addr: String,
    /// Its replication listener's address (empty until it listens).
    pub ha_addr: String,
    /// The last epoch in its log.
    pub epoch: u32,
    /// Its log end.
    pub end: u64,
}

/// One replica set as the controller sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicaSetView {
    /// Its cluster.
    pub cluster: String,
    /// Its name.
    pub broker_name: String,
    /// Members by persistent id: their client addresses.
    pub members: BTreeMap<u64, String>,
    /// The master's id, if it has one.
    pub master: Option<u64>,
    /// The master's epoch (0: never had a master).
    pub master_epoch: u32,
    /// The master's replication address, as it last said.
    pub master_ha_addr: String,
    /// The in-sync set, the master included.
    pub in_sync: Vec<u64>,
    /// The in-sync set's epoch.
    pub in_sync_epoch: u32,
    /// Members heard from within `controller_broker_expiry_ms`.
    pub alive: Vec<u64>,
}

/// A controller voter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControllerMember {
    /// Its Raft id.
    pub id: u64,
    /// Its Raft peer address.
    pub peer_addr: String,
}

/// The controller as a whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControllerInfo {
    /// The voter that answered.
    pub answered_by: u64,
    /// The current leader, if one is known.
    pub leader: Option<u64>,
    /// Its voters.
    pub members: Vec<ControllerMember>,
    /// Every replica set.
    pub sets: Vec<ReplicaSetView>,
}

/// The controller's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControllerResponse {
    /// A broker's id and its replica set.
    Assigned {
        /// The broker's persistent id.
        broker_id: u64,
        /// Its replica set.
        set: ReplicaSetView,
    },
    /// A replica set.
    Set(ReplicaSetView),
    /// The whole controller.
    Info(ControllerInfo),
}
