//! The cluster keys (`cluster`, `broker_name`, `namesrv_addrs`,
//! `advertised_addr`, `register_interval_ms`): checks and the name-server
//! list.

use super::{Config, REGISTER_INTERVAL_MS};
use crate::error::{Error, Result};
use brook_proto::names::validate_name;

impl Config {
    /// The cluster keys' part of [`Config::sanitize`].
    pub(super) fn sanitize_cluster(&mut self, warnings: &mut Vec<String>) -> Result<()> {
        validate_name("cluster", &self.cluster).map_err(Error::Config)?;
        validate_name("broker", &self.broker_name).map_err(Error::Config)?;
        if !self.advertised_addr.is_empty() {
            self.advertised_addr
                .parse::<std::net::SocketAddr>()
                .map_err(|e| Error::Config(format!("advertised_addr {:?}: {e}", self.advertised_addr)))?;
        }
        for addr in self.namesrv() {
            addr.parse::<std::net::SocketAddr>().map_err(|e| Error::Config(format!("namesrv_addrs: {addr:?}: {e}")))?;
        }
        let clamped = self.register_interval_ms.clamp(*REGISTER_INTERVAL_MS.start(), *REGISTER_INTERVAL_MS.end());
        if clamped != self.register_interval_ms {
            warnings.push(format!("register_interval_ms {} clamped to {clamped}", self.register_interval_ms));
            self.register_interval_ms = clamped;
        }
        Ok(())
    }

    /// The name servers to register with (none: standalone).
    pub fn namesrv(&self) -> Vec<String> {
        self.namesrv_addrs.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect()
    }
}
