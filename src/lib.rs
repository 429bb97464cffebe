//! brook: a RocketMQ-style message broker.
//!
//! # Layout
//! - [`config`]: layered configuration (defaults, TOML, `BROOK_*` env).
//! - [`store`]: the storage engine — commit-log records and segments,
//!   consume queues, checkpoint, recovery, retention, the topic table.
//! - [`io`]: the writer backends (io_uring; pwritev + fdatasync).
//! - [`actors`]: the WriterActor (group commit), one QueueActor per queue,
//!   the Housekeeper (checkpoints, retention) and the registry finding them.
//! - [`server`]: listener, connections and request dispatch.
//! - [`broker`]: assembling all of it and the ordered shutdown.
//! - [`delay`]: delay levels and exact delivery times as producers ask.
//! - [`filter`]: tag expressions.
//! - [`clock`]: time behind a trait, for tests.
//! - [`error`]: the broker's error type and its wire codes.
//!
//! The wire types live in the `brook-proto` crate, shared with the client.

pub mod actors;
pub mod broker;
pub mod clock;
pub mod config;
pub mod delay;
pub mod error;
pub mod failpoint;
pub mod filter;
pub mod io;
pub mod logging;
pub mod server;
pub mod store;

pub use config::Config;
pub use error::{Error, Result};
