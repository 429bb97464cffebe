//! The broker's configuration: embedded defaults, then an optional TOML file,
//! then `BROOK_*` environment variables (`__` between levels, e.g.
//! `BROOK_STORE__FLUSH=sync`). `sanitize` refuses impossible combinations and
//! clamps soft ones, saying so.

mod cluster;
mod groups;
mod http;
mod replication;
mod server;

pub use groups::GroupsConfig;
pub use http::HttpConfig;
pub use replication::ReplicationMode;
pub use server::ServerConfig;

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything `brookd` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address to listen on. Default: `127.0.0.1:10911` (RocketMQ's port).
    /// Port 0 picks a free port; the bound address is logged.
    pub listen: String,
    /// Root of all stored data. Default: `./brook-data`.
    pub data_dir: PathBuf,
    /// Create a topic with `default_queues` queues on its first send.
    /// Default: false.
    pub auto_create_topics: bool,
    /// Queue count of auto-created topics. Default: 4.
    pub default_queues: u32,
    /// Storage engine settings.
    pub store: StoreConfig,
    /// Network settings.
    pub server: ServerConfig,
    /// The HTTP listener (`[http]`): metrics and health.
    pub http: HttpConfig,
    /// Consumer-group settings.
    pub groups: GroupsConfig,
    /// Delay levels, space-separated durations (units ms, s, m, h, d);
    /// level 1 is the first. Default: RocketMQ's
    /// `1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h`.
    pub delay_levels: String,
    /// Longest delay an exact-time message may ask for; later ones are
    /// refused. Default: `3d`.
    pub max_delay: String,
    /// Retries of a failed message before it goes to the group's
    /// dead-letter topic, unless the group says otherwise. Default: 16.
    pub max_reconsume_times: u32,
    /// How long a transactional half message waits for its producer's
    /// outcome before the broker asks the producer group. Default: `6s`.
    pub transaction_timeout: String,
    /// Time between two checks of one half message. Default: `30s`.
    pub transaction_check_interval: String,
    /// Checks of one half message before it is given up (never delivered).
    /// Default: 15.
    pub transaction_check_max: u32,
    /// Trace every message (as if each producer had tracing on).
    /// Default: false.
    pub trace: bool,
    /// An idempotent producer that sent nothing for this long is forgotten
    /// (its sequence state dropped). Default: 86,400,000 ms (24 h).
    pub producer_idle_expiry_ms: u64,
    /// Most idempotent producers whose sequence state is kept; a new one's
    /// send is refused with `TooManyProducers` beyond it. Default: 100,000.
    pub max_producers: usize,
    /// The cluster this broker belongs to. Default: `DefaultCluster`.
    pub cluster: String,
    /// Its replica set's name. Default: `broker-a`.
    pub broker_name: String,
    /// Its id in the replica set: 0 is the master. Default: 0.
    pub broker_id: u64,
    /// Name servers to register with, comma-separated; empty: standalone
    /// (no registration). Default: empty.
    pub namesrv_addrs: String,
    /// The address clients reach this broker at, in routes and message
    /// ids; empty: the listen address. Default: empty.
    pub advertised_addr: String,
    /// How often the broker registers with every name server (and at once
    /// when a topic changes); clamped to 10,000..=60,000. Default: 30,000.
    pub register_interval_ms: u64,
    /// `async`: the master acks as it stores and its slaves follow; `sync`
    /// (double write): a send is acked only once every in-sync replica
    /// holds it. Default: `async`.
    pub replication: ReplicationMode,
    /// Under `sync`, sends are refused (`NotEnoughReplicas`, nothing
    /// stored) while the in-sync set, the master included, is smaller than
    /// this. Default: 1.
    pub min_insync_replicas: u32,
    /// Under `sync`, how long a send waits for its replicas before it fails
    /// with `ReplicationTimeout`. Default: 3,000 ms.
    pub replication_timeout_ms: u64,
    /// Where the master listens for its slaves; empty: the client port + 1
    /// on the listen address. Default: empty.
    pub ha_listen: String,
    /// A slave's master's replication address; empty: found through the
    /// name servers. Default: empty.
    pub master_ha_addr: String,
    /// A slave that has not caught up with the master for this long leaves
    /// the in-sync set (at once when it disconnects). Default: 15,000 ms.
    pub ha_max_catchup_lag_ms: u64,
    /// Let the controller (in the name servers) decide this broker's role:
    /// its id comes from the controller and is kept on its disk, and a
    /// dead master is replaced by an in-sync slave. Default: false.
    pub controller_mode: bool,
    /// How often a broker in controller mode heartbeats to the controller.
    /// Default: 1,000.
    pub controller_heartbeat_ms: u64,
}

/// The shortest and longest registration period (RocketMQ's clamp).
pub const REGISTER_INTERVAL_MS: std::ops::RangeInclusive<u64> = 10_000..=60_000;

pub use brook_proto::time::parse_duration_ms;

/// When a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushMode {
    /// Ack after fdatasync (group commit: one fdatasync per batch).
    Sync,
    /// Ack after the page cache; fdatasync every `flush_interval_ms`.
    Async,
}

/// Most queues a topic may have (the topic table and `default_queues`
/// both hold to it).
pub const MAX_QUEUES_PER_TOPIC: u32 = 65_536;

/// Default span of one on-disk timer bucket, ms.
pub const DEFAULT_TIMER_BUCKET_MS: u64 = 60_000;

/// Which writer backend performs the commit-log I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoBackendKind {
    /// Probe io_uring at start; fall back to `std` if it is unavailable.
    Auto,
    /// io_uring; refuse to start without it.
    Uring,
    /// `pwritev` + `fdatasync` on a blocking thread.
    Std,
}

/// Storage settings (`[store]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoreConfig {
    /// `sync` acks after fdatasync, `async` after the page cache.
    /// Default: `async` (as RocketMQ's ASYNC_FLUSH).
    pub flush: FlushMode,
    /// `auto`, `uring` or `std`. Default: `auto`.
    pub io_backend: IoBackendKind,
    /// Size of each commit-log segment file. Default: 1 GiB. Small values
    /// (a few KiB) are allowed so tests roll segments often.
    pub segment_bytes: u64,
    /// Async flush: fdatasync period. Default: 500 ms.
    pub flush_interval_ms: u64,
    /// Most append requests one group commit takes. Default: 4096.
    pub max_batch_messages: usize,
    /// Most bytes one group commit takes. Default: 8 MiB.
    pub max_batch_bytes: usize,
    /// Entries per consume-queue file (20 bytes each). Default: 300,000.
    pub cq_entries_per_file: u64,
    /// How often consume queues are made durable and the checkpoint written.
    /// Bounds how much log a crash recovery rescans. Default: 1000 ms.
    pub checkpoint_interval_ms: u64,
    /// Segments whose newest record is older than this are deleted.
    /// Default: 72.
    pub retention_hours: u64,
    /// Above this share of the data dir's filesystem in use, the oldest
    /// segments are deleted regardless of age. Default: 0.75.
    pub disk_max_used_ratio: f64,
    /// How often retention runs. Default: 10,000 ms.
    pub retention_check_interval_ms: u64,
    /// Largest message body accepted. Default: 4 MiB.
    pub max_message_bytes: usize,
    /// Width of one on-disk bucket of the timer wheel (exact-time delayed
    /// messages). Default: 60,000 ms.
    pub timer_bucket_ms: u64,
    /// Hash slots per key-index file. Default: 1,000,000.
    pub index_slots: u32,
    /// Keys per key-index file (32 bytes each; a full file is sealed and a
    /// new one started). Default: 2,000,000.
    pub index_entries: u32,
    /// Prepare the next segment ahead of the writer: filled with real zeros
    /// under sync flush (faster fdatasyncs on already-written blocks),
    /// fallocated under async flush (no extra writes). Default: true.
    pub preallocate: bool,
    /// How much of the newest commit log stays in the page cache once it is
    /// on disk: older pages are dropped after each fdatasync (reads of them
    /// then go to the disk, on the blocking pool), except what a crash
    /// recovery would re-read, which checkpoints keep within half of this
    /// behind the head. Writing into pages the kernel just freed is several
    /// times cheaper than into fresh ones, and the page-cache copy was a
    /// quarter of the broker's CPU in batch runs. 0 leaves the page cache to
    /// the kernel. Default: 1 GiB.
    pub log_cache_bytes: u64,
    /// Async flush: a group commit of at most this many bytes is written
    /// with `pwritev` on the writer's own thread instead of the io backend's
    /// (io_uring hands buffered ext4 writes to a worker thread, the std
    /// backend to the blocking pool): small groups then skip two thread
    /// wake-ups. Larger groups, and every fdatasync, stay off the thread.
    /// 0: never. Default: 64 KiB.
    pub inline_write_max_bytes: u64,
    /// After the disk filled up, writes resume once the file system holding
    /// the data dir has this many bytes free again. 0: twice
    /// `segment_bytes` (room for the next segment and then some).
    /// Default: 0.
    pub disk_resume_free_bytes: u64,
    /// Space the broker keeps for itself (the file `reserve` in the data
    /// dir) and lets go when it starts or stops on a full disk, so it can
    /// still write its checkpoint and rebuild its consume queues. 0: none.
    /// Default: 64 MiB.
    pub disk_reserve_bytes: u64,
    /// When the disk passes `disk_max_used_ratio`, keep the segments an
    /// active consumer group has not consumed yet, until the disk passes
    /// `disk_hard_max_used_ratio` (RocketMQ deletes them). Default: false.
    pub retention_protect_unconsumed: bool,
    /// Past this share of the disk in use, retention deletes the oldest
    /// segments even if a group still needs them (and says so); never below
    /// `disk_max_used_ratio` (the larger applies). Default: 0.90.
    pub disk_hard_max_used_ratio: f64,
}

impl StoreConfig {
    /// The free bytes after which writes resume on a full disk.
    pub fn resume_free_bytes(&self) -> u64 {
        match self.disk_resume_free_bytes {
            0 => self.segment_bytes.saturating_mul(2),
            bytes => bytes,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:10911".into(),
            data_dir: PathBuf::from("./brook-data"),
            auto_create_topics: false,
            default_queues: 4,
            store: StoreConfig::default(),
            server: ServerConfig::default(),
            http: HttpConfig::default(),
            groups: GroupsConfig::default(),
            delay_levels: "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h".into(),
            max_delay: "3d".into(),
            max_reconsume_times: 16,
            transaction_timeout: "6s".into(),
            transaction_check_interval: "30s".into(),
            transaction_check_max: 15,
            trace: false,
            producer_idle_expiry_ms: 86_400_000,
            max_producers: 100_000,
            cluster: "DefaultCluster".into(),
            broker_name: "broker-a".into(),
            broker_id: 0,
            namesrv_addrs: String::new(),
            advertised_addr: String::new(),
            register_interval_ms: 30_000,
            replication: ReplicationMode::Async,
            min_insync_replicas: 1,
            replication_timeout_ms: 3_000,
            ha_listen: String::new(),
            master_ha_addr: String::new(),
            ha_max_catchup_lag_ms: 15_000,
            controller_mode: false,
            controller_heartbeat_ms: 1_000,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            flush: FlushMode::Async,
            io_backend: IoBackendKind::Auto,
            segment_bytes: 1 << 30,
            flush_interval_ms: 500,
            max_batch_messages: 4096,
            max_batch_bytes: 8 << 20,
            cq_entries_per_file: 300_000,
            checkpoint_interval_ms: 1000,
            retention_hours: 72,
            disk_max_used_ratio: 0.75,
            retention_check_interval_ms: 10_000,
            max_message_bytes: 4 << 20,
            timer_bucket_ms: DEFAULT_TIMER_BUCKET_MS,
            index_slots: 1_000_000,
            index_entries: 2_000_000,
            preallocate: true,
            log_cache_bytes: 1 << 30,
            inline_write_max_bytes: 64 << 10,
            disk_resume_free_bytes: 0,
            disk_reserve_bytes: 64 << 20,
            retention_protect_unconsumed: false,
            disk_hard_max_used_ratio: 0.90,
        }
    }
}

/// Most delay levels (each has its own queue and scheduler).
pub const MAX_DELAY_LEVELS: usize = 64;

/// Smallest segment the store accepts.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

impl Config {
    /// Defaults, overridden by `file` (TOML) if given, overridden by `BROOK_*`
    /// environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml).required(true));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("BROOK").prefix_separator("_").separator("__").try_parsing(true),
        );
        builder.build().and_then(|c| c.try_deserialize::<Config>()).map_err(|e| Error::Config(e.to_string()))
    }

    /// The effective configuration as TOML (`brookd --print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The delay of each level in ms (index 0 is level 1).
    pub fn delay_levels_ms(&self) -> Result<Vec<u64>> {
        let levels = self
            .delay_levels
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .map(parse_duration_ms)
            .collect::<std::result::Result<Vec<u64>, String>>()
            .map_err(|e| Error::Config(format!("delay_levels: {e}")))?;
        if levels.is_empty() || levels.len() > MAX_DELAY_LEVELS {
            return Err(Error::Config(format!(
                "delay_levels needs 1..={MAX_DELAY_LEVELS} levels, got {}",
                levels.len()
            )));
        }
        if levels.contains(&0) {
            return Err(Error::Config("delay_levels: a level of 0 delays nothing".into()));
        }
        Ok(levels)
    }

    /// `transaction_timeout` and `transaction_check_interval` in ms.
    pub fn transaction_times_ms(&self) -> Result<(u64, u64)> {
        let parse = |name: &str, text: &str| {
            parse_duration_ms(text).map_err(|e| Error::Config(format!("{name}: {e}"))).map(|ms| ms.max(1))
        };
        Ok((
            parse("transaction_timeout", &self.transaction_timeout)?,
            parse("transaction_check_interval", &self.transaction_check_interval)?,
        ))
    }

    /// `max_delay` in ms.
    pub fn max_delay_ms(&self) -> Result<u64> {
        parse_duration_ms(&self.max_delay).map_err(|e| Error::Config(format!("max_delay: {e}")))
    }

    /// Refuses impossible settings; clamps soft ones and returns a warning
    /// for each clamp. Each section checks its own keys.
    pub fn sanitize(&mut self) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        self.store.sanitize(&mut warnings)?;
        if self.default_queues == 0 || self.default_queues > MAX_QUEUES_PER_TOPIC {
            return Err(Error::Config(format!(
                "default_queues must be 1..={}, got {}",
                MAX_QUEUES_PER_TOPIC, self.default_queues
            )));
        }
        self.groups.sanitize(&mut warnings);
        self.delay_levels_ms()?;
        self.transaction_times_ms()?;
        if self.max_delay_ms()? == 0 {
            return Err(Error::Config("max_delay must be positive".into()));
        }
        self.server.sanitize(&mut warnings)?;
        if self.max_producers == 0 {
            return Err(Error::Config("max_producers must be positive".into()));
        }
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| Error::Config(format!("listen {:?}: {e}", self.listen)))?;
        let http = self.http.listen.trim();
        if !http.is_empty() {
            http.parse::<std::net::SocketAddr>()
                .map_err(|e| Error::Config(format!("http.listen {http:?}: {e} (empty turns it off)")))?;
        }
        self.sanitize_cluster(&mut warnings)?;
        self.sanitize_replication()?;
        Ok(warnings)
    }
}

impl StoreConfig {
    /// `[store]`'s part of [`Config::sanitize`].
    fn sanitize(&mut self, warnings: &mut Vec<String>) -> Result<()> {
        let segment_bytes = self.segment_bytes;
        let refused = if segment_bytes < MIN_SEGMENT_BYTES {
            Some(format!("must be at least {MIN_SEGMENT_BYTES}"))
        } else if segment_bytes % MIN_SEGMENT_BYTES != 0 {
            Some(format!("must be a multiple of {MIN_SEGMENT_BYTES}"))
        } else if segment_bytes > u64::from(u32::MAX) {
            Some("must fit in 32 bits (4 GiB)".to_string())
        } else {
            None
        };
        if let Some(why) = refused {
            return Err(Error::Config(format!("store.segment_bytes {why}, got {segment_bytes}")));
        }
        if !(self.disk_max_used_ratio > 0.0 && self.disk_max_used_ratio <= 1.0) {
            return Err(Error::Config(format!(
                "store.disk_max_used_ratio must be in (0, 1], got {}",
                self.disk_max_used_ratio
            )));
        }
        if !(self.disk_hard_max_used_ratio > 0.0 && self.disk_hard_max_used_ratio <= 1.0) {
            return Err(Error::Config(format!(
                "store.disk_hard_max_used_ratio must be in (0, 1], got {}",
                self.disk_hard_max_used_ratio
            )));
        }
        if self.max_batch_messages == 0 || self.max_batch_bytes == 0 {
            return Err(Error::Config("store.max_batch_messages and store.max_batch_bytes must be positive".into()));
        }
        if self.index_slots == 0 || self.index_entries == 0 {
            return Err(Error::Config("store.index_slots and store.index_entries must be positive".into()));
        }
        if self.cq_entries_per_file == 0 {
            return Err(Error::Config("store.cq_entries_per_file must be positive".into()));
        }
        for (name, value) in [
            ("store.flush_interval_ms", &mut self.flush_interval_ms),
            ("store.checkpoint_interval_ms", &mut self.checkpoint_interval_ms),
            ("store.retention_check_interval_ms", &mut self.retention_check_interval_ms),
            ("store.timer_bucket_ms", &mut self.timer_bucket_ms),
        ] {
            if *value == 0 {
                warnings.push(format!("{name} = 0 clamped to 1"));
                *value = 1;
            }
        }
        Ok(())
    }
}

impl ServerConfig {
    /// `[server]`'s part of [`Config::sanitize`].
    fn sanitize(&mut self, warnings: &mut Vec<String>) -> Result<()> {
        if self.max_frame_bytes > brook_proto::MAX_FRAME_BYTES_CEILING {
            warnings.push(format!(
                "server.max_frame_bytes {} clamped to {}",
                self.max_frame_bytes,
                brook_proto::MAX_FRAME_BYTES_CEILING
            ));
            self.max_frame_bytes = brook_proto::MAX_FRAME_BYTES_CEILING;
        }
        if self.max_connections == 0 {
            return Err(Error::Config("server.max_connections must be positive".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        let config = Config::default();
        let text = config.to_toml();
        let back: Config = toml::from_str(&text).expect("parse");
        assert_eq!(back, config);
    }

    #[test]
    fn file_then_partial_sections_keep_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("brook.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:0\"\n[store]\nflush = \"sync\"\nsegment_bytes = 8192\n")
            .expect("write");
        let config = Config::load(Some(&path)).expect("load");
        assert_eq!(config.listen, "127.0.0.1:0");
        assert_eq!(config.store.flush, FlushMode::Sync);
        assert_eq!(config.store.segment_bytes, 8192);
        assert_eq!(config.store.flush_interval_ms, 500);
        assert_eq!(config.server, ServerConfig::default());
    }

    #[test]
    fn sanitize_refuses_impossible_values() {
        let mut config = Config::default();
        config.store.segment_bytes = 100;
        assert!(matches!(config.sanitize(), Err(Error::Config(_))));
        let mut config = Config::default();
        config.store.disk_max_used_ratio = 1.5;
        assert!(matches!(config.sanitize(), Err(Error::Config(_))));
        let mut config = Config { listen: "nowhere".into(), ..Config::default() };
        assert!(matches!(config.sanitize(), Err(Error::Config(_))));
        let mut config = Config::default();
        config.store.flush_interval_ms = 0;
        let warnings = config.sanitize().expect("clamped");
        assert_eq!(warnings.len(), 1);
        assert_eq!(config.store.flush_interval_ms, 1);
    }

    #[test]
    fn delay_levels_and_durations_parse_with_units() {
        let config = Config::default();
        let levels = config.delay_levels_ms().expect("defaults parse");
        assert_eq!(levels.len(), 18);
        assert_eq!((levels[0], levels[4], levels[17]), (1_000, 60_000, 7_200_000));
        assert_eq!(config.max_delay_ms().expect("max"), 3 * 86_400_000);
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("250"), Ok(250));
        assert!(parse_duration_ms("5w").is_err());
        assert!(parse_duration_ms("s").is_err());
        let mut bad = Config { delay_levels: "1s 0s".into(), ..Config::default() };
        assert!(matches!(bad.sanitize(), Err(Error::Config(_))));
        let mut bad = Config { delay_levels: "".into(), ..Config::default() };
        assert!(matches!(bad.sanitize(), Err(Error::Config(_))));
    }
}
