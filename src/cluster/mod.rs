//! The broker in a cluster (RocketMQ's multi-master deployment): who it is
//! ([`Identity`]), its registrations with the name servers
//! ([`registrar`]), the name servers themselves ([`namesrv`]), and the
//! cluster-wide queue lists its consumer groups allocate over ([`view`]).
//! With no name servers configured the broker is standalone and none of
//! this runs.

pub mod namesrv;
pub mod registrar;
pub mod traffic;
pub mod view;

use crate::config::Config;
use std::net::SocketAddr;

/// Who this broker is in its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Cluster name.
    pub cluster: String,
    /// Replica set name.
    pub broker_name: String,
    /// Id in the replica set (0: master).
    pub broker_id: u64,
    /// Where clients reach it.
    pub addr: SocketAddr,
}

impl Identity {
    /// The identity `config` gives a broker bound at `bound`.
    pub fn of(config: &Config, bound: SocketAddr) -> Self {
        Self {
            cluster: config.cluster.clone(),
            broker_name: config.broker_name.clone(),
            broker_id: config.broker_id,
            addr: advertised(config, bound),
        }
    }
}

/// The address message ids and routes name: `advertised_addr`, or the
/// bound address (loopback for a wildcard bind).
pub fn advertised(config: &Config, bound: SocketAddr) -> SocketAddr {
    if let Ok(addr) = config.advertised_addr.parse() {
        return addr;
    }
    if bound.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), bound.port())
    } else {
        bound
    }
}
