//! The replication keys (`replication`, `min_insync_replicas`,
//! `replication_timeout_ms`, `ha_listen`, `master_ha_addr`,
//! `ha_max_catchup_lag_ms`, `controller_mode`, `controller_heartbeat_ms`): checks and the replication listener's address.

use super::Config;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// How a master acknowledges sends to its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicationMode {
    /// Acks as the master stores; slaves follow.
    Async,
    /// Acks once every in-sync replica holds the record.
    Sync,
}

impl Config {
    /// The replication keys' part of [`Config::sanitize`].
    pub(super) fn sanitize_replication(&mut self) -> Result<()> {
        if self.min_insync_replicas == 0 {
            return Err(Error::Config("min_insync_replicas must be at least 1 (the master)".into()));
        }
        if self.replication_timeout_ms == 0 {
            return Err(Error::Config("replication_timeout_ms must be positive".into()));
        }
        if self.ha_max_catchup_lag_ms == 0 {
            return Err(Error::Config("ha_max_catchup_lag_ms must be positive".into()));
        }
        if self.controller_heartbeat_ms == 0 {
            return Err(Error::Config("controller_heartbeat_ms must be positive".into()));
        }
        if self.controller_mode && self.namesrv().is_empty() {
            return Err(Error::Config(
                "controller_mode needs name servers (namesrv_addrs): the controller runs in them".into(),
            ));
        }
        for (key, value) in [("ha_listen", &self.ha_listen), ("master_ha_addr", &self.master_ha_addr)] {
            let value = value.trim();
            if !value.is_empty() {
                value.parse::<SocketAddr>().map_err(|e| Error::Config(format!("{key} {value:?}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Whether this broker is a slave (`broker_id` ≥ 1).
    pub fn is_slave(&self) -> bool {
        self.broker_id != brook_proto::route::MASTER_ID
    }

    /// Where the master's replication listener binds, given the client
    /// listener's bound address: `ha_listen`, or the client port + 1 (an
    /// ephemeral client port gets an ephemeral one).
    pub fn ha_listen_addr(&self, client: SocketAddr) -> SocketAddr {
        if let Ok(addr) = self.ha_listen.trim().parse() {
            return addr;
        }
        let configured: Option<SocketAddr> = self.listen.parse().ok();
        let port = match configured.map(|a| a.port()) {
            Some(0) | None => 0,
            Some(_) => client.port().wrapping_add(1),
        };
        SocketAddr::new(client.ip(), port)
    }
}
