//! The name server's configuration: embedded defaults, then an optional
//! TOML file, then `BROOK_NAMESRV_*` environment variables (e.g.
//! `BROOK_NAMESRV_LISTEN`), then the command line.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Everything `brook-namesrv` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NamesrvConfig {
    /// Address to listen on. Default: `127.0.0.1:9876` (RocketMQ's).
    pub listen: String,
    /// A broker not heard from for this long is dropped from routes.
    /// Default: 120,000 (RocketMQ's 2 minutes).
    pub broker_expiry_ms: u64,
    /// How often expired brokers are looked for. Default: 5,000.
    pub scan_interval_ms: u64,
    /// Largest frame accepted. Default: 16 MiB.
    pub max_frame_bytes: usize,
    /// Run a controller voter in this name server. Default: false.
    pub controller: bool,
    /// This voter's id (in `controller_peers`).
    pub controller_id: u64,
    /// Every voter: `1=127.0.0.1:9880,2=127.0.0.1:9881,3=127.0.0.1:9882`
    /// (Raft traffic goes between these addresses).
    pub controller_peers: String,
    /// Where the controller keeps its Raft log and snapshots. Default:
    /// `./brook-controller`.
    pub data_dir: std::path::PathBuf,
    /// A broker not heard from for this long is gone (a silent master is
    /// replaced). Default: 3,000.
    pub controller_broker_expiry_ms: u64,
    /// Elect a master from outside the in-sync set when no in-sync member
    /// is alive (acknowledged messages may be lost). Default: false.
    pub enable_unclean_election: bool,
}

impl Default for NamesrvConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9876".into(),
            broker_expiry_ms: 120_000,
            scan_interval_ms: 5_000,
            max_frame_bytes: brook_proto::DEFAULT_MAX_FRAME_BYTES,
            controller: false,
            controller_id: 0,
            controller_peers: String::new(),
            data_dir: "brook-controller".into(),
            controller_broker_expiry_ms: 3_000,
            enable_unclean_election: false,
        }
    }
}

impl NamesrvConfig {
    /// Defaults, then `file`, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, String> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("BROOK_NAMESRV").prefix_separator("_").separator("__").try_parsing(true),
        );
        let config: Self = builder.build().and_then(|c| c.try_deserialize()).map_err(|e| e.to_string())?;
        if config.broker_expiry_ms == 0 || config.scan_interval_ms == 0 {
            return Err("broker_expiry_ms and scan_interval_ms must be positive".into());
        }
        if config.controller_broker_expiry_ms == 0 {
            return Err("controller_broker_expiry_ms must be positive".into());
        }
        Ok(config)
    }

    /// The controller's voters by id, checked: this voter among them.
    pub fn peers(&self) -> Result<std::collections::BTreeMap<u64, String>, String> {
        let mut peers = std::collections::BTreeMap::new();
        for part in self.controller_peers.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, addr) =
                part.split_once('=').ok_or_else(|| format!("controller peer {part:?} is not ID=HOST:PORT"))?;
            let id: u64 = id.trim().parse().map_err(|_| format!("controller peer id {id:?} is not a number"))?;
            addr.trim()
                .parse::<std::net::SocketAddr>()
                .map_err(|e| format!("controller peer address {addr:?} is not host:port: {e}"))?;
            if id == 0 || peers.insert(id, addr.trim().to_string()).is_some() {
                return Err(format!("controller peer id {id} is zero or given twice"));
            }
        }
        if !peers.contains_key(&self.controller_id) {
            return Err(format!(
                "--controller-id {} is not one of --controller-peers {:?}",
                self.controller_id, self.controller_peers
            ));
        }
        Ok(peers)
    }
}
