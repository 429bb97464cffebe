//! brook: a RocketMQ-style message broker.
//!
//! # Layout
//! Layers import downward only: `brook_proto` ← {[`config`], [`error`],
//! [`clock`], [`metrics`]} ← [`io`] ← [`store`] ← [`actors`] ← [`server`],
//! [`http`] ← [`broker`] ← `main.rs`.
//!
//! - [`config`]: layered configuration (defaults, TOML, `BROOK_*` env),
//!   checked per section.
//! - [`error`]: the broker's error type and its one mapping to wire codes.
//! - [`clock`]: time behind a trait, for tests.
//! - [`metrics`]: the counters and histograms `/metrics` shows, recorded
//!   with relaxed atomics where things happen.
//! - [`logging`]: slog to stderr, readable or JSON; [`signals`]: the stop
//!   signals (both shared with `brook-namesrv`).
//! - [`failpoint`]: the crash tests' stall at a named step (feature
//!   `failpoints` only).
//! - [`delay`]: delay levels and exact delivery times as producers ask.
//! - [`filter`]: tag expressions; [`filter::sql`] the SQL92 property filter.
//! - [`io`]: the writer backends (io_uring; pwritev + fdatasync; a
//!   fault-injecting one for tests).
//! - [`store`]: the storage engine — commit-log records and segments,
//!   consume queues, checkpoint, recovery, retention, the space reserve, the
//!   key index, topic table, group offsets, timer buckets and progress files.
//! - [`actors`]: the append pipeline (appender → queue actors → writer) and
//!   every actor that owns state: consumer groups, housekeeper, indexer,
//!   delay schedulers, timer wheel, transaction checker; the registries that
//!   find them.
//! - [`server`]: listener, connections, dispatch and one handler file per
//!   request area.
//! - [`http`]: the HTTP listener: `/metrics` (Prometheus, RocketMQ's
//!   names), `/healthz`, `/readyz`.
//! - [`cluster`]: the broker in a cluster — identity, registration with the
//!   name servers, the cluster-wide queue lists groups allocate over.
//! - [`broker`]: assembling all of it and the ordered shutdown.
//!
//! The wire types live in the `brook-proto` crate, shared with the client.

pub mod actors;
pub mod broker;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod delay;
pub mod error;
pub mod failpoint;
pub mod filter;
pub mod ha;
pub mod http;
pub mod io;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod signals;
pub mod store;

pub use config::Config;
pub use error::{Error, Result};
