//! `[http]`: the listener of the console, metrics and health.

use serde::{Deserialize, Serialize};

/// The HTTP listener (`[http]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    /// Where the console, `/metrics`, `/healthz` and `/readyz` are served;
    /// empty turns the listener off. Default: 127.0.0.1:8080.
    pub listen: String,
    /// Whether the console may change anything (create, grow and delete
    /// topics, reset offsets, resend dead letters). It has no login yet, so
    /// by default it only reads. Default: false.
    pub console_writes: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:8080".into(), console_writes: false }
    }
}
