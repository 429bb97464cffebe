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
}

impl Default for NamesrvConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9876".into(),
            broker_expiry_ms: 120_000,
            scan_interval_ms: 5_000,
            max_frame_bytes: brook_proto::DEFAULT_MAX_FRAME_BYTES,
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
        Ok(config)
    }
}
