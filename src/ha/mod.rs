//! Replication (RocketMQ's master/slave, Kafka's ISR): a master streams its
//! commit log byte for byte to the slaves of its replica set
//! ([`master`]); a slave writes the bytes at the same offsets and makes
//! their records readable with the code recovery uses ([`slave`],
//! [`apply`]). The master keeps the in-sync set ([`followers`]); under
//! `replication = sync` a write is acknowledged — and readable — only once
//! every member holds it. Epochs (`store::epochs`) tell a slave where its
//! log stops agreeing with its master's; it cuts there (`store::truncation`)
//! before it streams.

pub mod apply;
pub mod controller;
pub mod followers;
pub mod master;
pub mod meta;
pub mod slave;

use crate::actors::writer::{ReplicasAdvanced, ReplicatedTo, WriterActor, WriterStats};
use crate::config::{Config, FlushMode, ReplicationMode};
use crate::error::{Error, IoContext, Result};
use crate::store::epochs::EpochFile;
use crate::store::StorePaths;
use actix::Addr;
use brook_proto::ha::EpochEntry;
use brook_proto::route::{ReplicaStatus, SlaveStatus};
use followers::Followers;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What a slave knows of its master.
#[derive(Debug, Clone, Default)]
pub struct Upstream {
    /// The master's replication address, once known.
    pub addr: Option<String>,
    /// Connected now.
    pub connected: bool,
    /// The master's log end, as last heard.
    pub master_end: u64,
    /// The master's high watermark, as last heard.
    pub confirmed: u64,
    /// The epoch the master said it is in when this slave connected.
    pub master_epoch: u32,
    /// Controller mode: the master the controller names (replication
    /// address, epoch).
    pub controller_master: Option<(String, u32)>,
}

/// One broker's replication state, shared by its send path, its status and
/// its replication tasks.
pub struct Replication {
    /// `async` or `sync`.
    pub mode: ReplicationMode,
    flush: FlushMode,
    min_insync: u32,
    /// How long a sync send waits for its replicas.
    pub timeout: Duration,
    slave: bool,
    epoch: AtomicU32,
    epochs: Mutex<EpochFile>,
    followers: Mutex<Followers>,
    replicated_to: ReplicatedTo,
    writer: Addr<WriterActor>,
    stats: Arc<WriterStats>,
    upstream: Mutex<Upstream>,
    /// The replication listener's address (a master), once bound.
    pub ha_addr: Mutex<String>,
    /// Controller mode: this broker's persistent id.
    controller_id: Option<u64>,
    name: String,
    logger: slog::Logger,
}

impl Replication {
    /// The state of a broker over its epochs (see [`take_epoch`]).
    pub fn open(
        config: &Config,
        paths: &StorePaths,
        (writer, stats): (Addr<WriterActor>, Arc<WriterStats>),
        ((epochs, epoch), joined): ((EpochFile, u32), Option<&controller::Joined>),
        logger: &slog::Logger,
    ) -> Result<Arc<Self>> {
        let slave = config.is_slave();
        let mut followers = Followers::load(paths.in_sync(), Duration::from_millis(config.ha_max_catchup_lag_ms));
        if let Some(joined) = joined {
            let in_sync_epoch = joined.set.as_ref().map_or(0, |s| s.in_sync_epoch);
            let slaves = joined.set.iter().flat_map(|s| s.in_sync.iter().copied()).filter(|id| *id != joined.broker_id);
            followers.set_committed(slaves.collect(), in_sync_epoch);
        }
        Ok(Arc::new(Self {
            mode: config.replication,
            flush: config.store.flush,
            min_insync: config.min_insync_replicas,
            timeout: Duration::from_millis(config.replication_timeout_ms),
            slave,
            epoch: AtomicU32::new(epoch),
            epochs: Mutex::new(epochs),
            followers: Mutex::new(followers),
            replicated_to: Arc::new(AtomicU64::new(u64::MAX)),
            writer,
            stats,
            upstream: Mutex::new(Upstream {
                controller_master: joined.and_then(|j| j.set.as_ref()).and_then(|s| {
                    (s.master.is_some() && !s.master_ha_addr.is_empty())
                        .then(|| (s.master_ha_addr.clone(), s.master_epoch))
                }),
                ..Upstream::default()
            }),
            ha_addr: Mutex::new(String::new()),
            controller_id: joined.map(|j| j.broker_id),
            name: format!("{}/{}", config.broker_name, config.broker_id),
            logger: logger.new(slog::o!("part" => "replication")),
        }))
    }

    /// Whether this broker is a slave.
    pub fn is_slave(&self) -> bool {
        self.slave
    }

    /// Whether the controller decides this broker's role.
    pub fn controlled(&self) -> bool {
        self.controller_id.is_some()
    }

    /// The log's end.
    pub fn end(&self) -> u64 {
        self.stats.write_pos()
    }

    /// A slave: connected, and the epoch its master was in when it
    /// connected.
    pub fn upstream_epoch(&self) -> (bool, u32) {
        let up = self.upstream.lock();
        (up.connected, up.master_epoch)
    }

    /// A slave in controller mode: the master the controller names.
    pub fn controller_master(&self) -> Option<(String, u32)> {
        self.upstream.lock().controller_master.clone()
    }

    /// A slave in controller mode: the controller named this master.
    pub fn set_controller_master(&self, master: Option<(String, u32)>) {
        self.upstream.lock().controller_master = master;
    }

    /// A master in controller mode: the controller committed `slaves` as
    /// its in-sync set, in `epoch`.
    pub fn set_committed(&self, slaves: std::collections::BTreeSet<u64>, epoch: u32) {
        self.with_followers(|f| f.set_committed(slaves, epoch));
    }

    /// A master in controller mode: the in-sync set it wants committed,
    /// if it differs from the committed one (and the epoch it changes).
    pub fn in_sync_proposal(&self) -> Option<(std::collections::BTreeSet<u64>, u32)> {
        self.followers.lock().proposal()
    }

    /// Whether every write is fdatasynced before it counts (sync flush).
    pub fn syncs_each_write(&self) -> bool {
        self.flush == FlushMode::Sync
    }

    /// Whether writes wait for the in-sync replicas.
    pub fn is_sync(&self) -> bool {
        !self.slave && self.mode == ReplicationMode::Sync
    }

    /// What the writer's gate reads.
    pub fn replicated_to(&self) -> ReplicatedTo {
        self.replicated_to.clone()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The epochs, oldest first.
    pub fn epochs(&self) -> Vec<EpochEntry> {
        self.epochs.lock().entries().to_vec()
    }

    /// A slave: starts `epoch` at `start` (durably) before writing into it.
    pub fn follow_epoch(&self, epoch: u32, start: u64) -> Result<()> {
        let mut epochs = self.epochs.lock();
        if epochs.last().is_some_and(|e| e.epoch == epoch) {
            return Ok(());
        }
        epochs.begin(epoch, start).ctx(|| "write the epoch file".into())?;
        self.epoch.store(epoch, Ordering::Release);
        Ok(())
    }

    /// Why a write is refused now, if it is: a slave takes none; under
    /// `sync`, none while the in-sync set is below `min_insync_replicas`.
    pub fn refusal(&self) -> Option<Error> {
        if let Some(e) = self.not_master() {
            return Some(e);
        }
        if self.mode == ReplicationMode::Sync {
            let in_sync = self.followers.lock().in_sync_count() + 1;
            if in_sync < self.min_insync {
                return Some(Error::NotEnoughReplicas { in_sync, min: self.min_insync });
            }
        }
        None
    }

    /// `NotMaster` on a slave (for what only a master does: topic changes,
    /// offset commits and resets).
    pub fn not_master(&self) -> Option<Error> {
        self.slave.then(|| Error::NotMaster(self.name.clone()))
    }

    /// The master's own end that counts: synced under sync flush, written
    /// otherwise.
    fn own_end(&self) -> u64 {
        match self.flush {
            FlushMode::Sync => self.stats.synced_pos.load(Ordering::Relaxed).min(self.stats.write_pos()),
            FlushMode::Async => self.stats.write_pos(),
        }
    }

    /// The high watermark: what every in-sync replica holds.
    pub fn confirmed(&self) -> u64 {
        if self.slave {
            return self.upstream.lock().confirmed.min(self.stats.write_pos());
        }
        self.own_end().min(self.replicated_to.load(Ordering::Acquire))
    }

    /// Applies a change of the followers and tells the writer when what
    /// they hold moved.
    fn with_followers<T>(&self, change: impl FnOnce(&mut Followers) -> T) -> T {
        let mut followers = self.followers.lock();
        let out = change(&mut followers);
        let to = followers.replicated_to(self.flush);
        if let Some(joined) = followers.take_membership_change() {
            slog::info!(self.logger, "in-sync set changed"; "in_sync" => ?joined);
            if let Err(e) = followers.persist() {
                slog::warn!(self.logger, "in-sync set not saved"; "error" => %e);
            }
        }
        drop(followers);
        let before = self.replicated_to.swap(to, Ordering::AcqRel);
        if to > before {
            self.writer.do_send(ReplicasAdvanced);
        }
        out
    }

    /// A slave connected, its log at `at`: returns the connection's
    /// generation.
    pub fn connected(&self, id: u64, addr: String, at: u64) -> u64 {
        self.with_followers(|f| f.connected(id, addr, at))
    }

    /// A slave's connection ended: it leaves the in-sync set at once.
    pub fn disconnected(&self, id: u64, generation: u64) {
        self.with_followers(|f| f.disconnected(id, generation));
    }

    /// Bytes up to `end` were sent to slave `id`, reaching the log's end
    /// then: an ack of them shows it caught up.
    pub fn sent(&self, id: u64, end: u64, reached_end: bool) {
        self.followers.lock().sent(id, end, reached_end);
    }

    /// Slave `id` holds its log up to `written` (`synced` on its disk).
    pub fn acked(&self, id: u64, written: u64, synced: u64) {
        let flush = self.flush;
        let confirmed_floor = self.confirmed();
        self.with_followers(|f| f.acked(id, (written, synced), flush, confirmed_floor));
    }

    /// Drops slaves that have not caught up for too long (run
    /// periodically).
    pub fn expire_laggards(&self) {
        self.with_followers(|f| f.expire());
    }

    /// A slave: what it knows of its master now.
    pub fn set_upstream(&self, change: impl FnOnce(&mut Upstream)) {
        change(&mut self.upstream.lock());
    }

    /// This broker's replication, for status and registration.
    pub fn status(&self) -> ReplicaStatus {
        let end = self.stats.write_pos();
        let mode = match self.mode {
            ReplicationMode::Async => "async",
            ReplicationMode::Sync => "sync",
        };
        let confirmed = self.confirmed();
        if self.slave {
            let up = self.upstream.lock().clone();
            return ReplicaStatus {
                role: "slave".into(),
                mode: mode.into(),
                epoch: self.epoch(),
                end,
                confirmed,
                lag_bytes: up.master_end.saturating_sub(end),
                ha_addr: up.addr.unwrap_or_default(),
                connected: up.connected,
                slaves: Vec::new(),
            };
        }
        let slaves: Vec<SlaveStatus> = self.followers.lock().status(end, self.flush);
        ReplicaStatus {
            role: "master".into(),
            mode: mode.into(),
            epoch: self.epoch(),
            end,
            confirmed,
            lag_bytes: 0,
            ha_addr: self.ha_addr.lock().clone(),
            connected: true,
            slaves,
        }
    }
}

/// A broker's epochs at start, its log ending at `log_end`: a master takes
/// a new epoch starting there — the controller's, in controller mode —
/// durably, before the writer starts (and before it prepares a segment
/// that would take the last free space of a full disk); a slave keeps the
/// epochs its master gave it. Returns them with the current epoch.
pub fn take_epoch(
    config: &Config,
    paths: &StorePaths,
    log_end: u64,
    joined: Option<&controller::Joined>,
) -> Result<(EpochFile, u32)> {
    let mut epochs = EpochFile::load(paths.epochs()).ctx(|| "read the epoch file".into())?;
    let last = epochs.last().map_or(0, |e| e.epoch);
    let epoch = match (config.is_slave(), joined.and_then(|j| j.master_epoch)) {
        (true, _) => last,
        (false, Some(given)) if given <= last => {
            return Err(Error::Config(format!(
                "the controller made this broker master of epoch {given}, but its log is already in epoch {last}"
            )))
        }
        (false, given) => {
            let next = given.unwrap_or(last + 1);
            epochs.begin(next, log_end).ctx(|| "write the epoch file".into())?;
            next
        }
    };
    Ok((epochs, epoch))
}

/// Replaces this process with a fresh start of the same program, same
/// arguments and environment (same pid, so a supervisor sees no exit):
/// returns only if that fails. `why` names the failure.
pub fn restart_process(why: &str) -> Error {
    use std::os::unix::process::CommandExt;
    // Log lines are written by a thread of their own, which the restart
    // replaces with everything else: a moment for it to write them.
    std::thread::sleep(Duration::from_millis(100));
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return Error::io("find this program to restart it", e),
    };
    let err = std::process::Command::new(exe).args(std::env::args_os().skip(1)).exec();
    Error::io(why, err)
}
