//! `[server]`: the client listener's limits and threads.

use serde::{Deserialize, Serialize};

/// Network settings (`[server]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Largest frame accepted, checked before allocation. Default: 16 MiB.
    pub max_frame_bytes: usize,
    /// Most concurrent connections; further ones wait. Default: 10,000.
    pub max_connections: usize,
    /// Threads serving connections; 0 means one per core. Default: 0.
    pub workers: usize,
    /// Most connections served on the log writer's thread itself, where
    /// their sends reach the queues and the writer without a thread hop;
    /// further ones are served by the `workers`. Their requests other than
    /// sends and pulls, and pipelined or batched sends' checking and
    /// encoding, run on the `workers` either way. 0: none. Default: 1024.
    pub writer_connections: usize,
    /// Microseconds the log writer's thread keeps polling before it
    /// sleeps, when what it waits for is due soon (as Seastar's
    /// `idle-poll-time-us`): after it answers a connection that sends alone,
    /// and while an fdatasync round that holds appends runs. A synchronous
    /// producer's next send, or the round's end, then finds it awake.
    /// Bounded by the window, so an idle broker uses no CPU. 0: sleep at
    /// once. Default: 300.
    pub idle_poll_us: u64,
    /// Turn transparent huge pages off for the broker process (as Redis's
    /// `disable-thp`). The first touch of a huge page zeroes 2 MiB at once:
    /// a stall of a millisecond or more in the thread that touches it, far
    /// above a send's latency. Default: true.
    pub disable_thp: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: brook_proto::DEFAULT_MAX_FRAME_BYTES,
            max_connections: 10_000,
            workers: 0,
            writer_connections: 1024,
            idle_poll_us: 300,
            disable_thp: true,
        }
    }
}
