//! A master's slaves and its in-sync set: a slave joins once it has caught
//! up with the master (acknowledged a transfer that reached the master's
//! end, and holds the high watermark); it leaves when it has not caught up
//! for `ha_max_catchup_lag_ms`, and at once when its connection ends. The
//! set is saved at every change (`in-sync` in the data dir); after a
//! restart every slave earns its place again by catching up.
//!
//! In controller mode these decisions are proposals: the controller
//! commits the set, and until it has, a write waits for the union of what
//! it committed and what the master decided — so a master that cannot
//! reach the controller cannot drop a slave and acknowledge alone.

use crate::config::FlushMode;
use brook_proto::route::SlaveStatus;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Follower {
    addr: String,
    written: u64,
    synced: u64,
    connected: bool,
    in_sync: bool,
    caught_up_at: Option<Instant>,
    /// The end of the last transfer that reached the master's end.
    target: Option<u64>,
    /// Which connection is the live one.
    generation: u64,
}

impl Follower {
    fn acked(&self, flush: FlushMode) -> u64 {
        match flush {
            FlushMode::Sync => self.synced.min(self.written),
            FlushMode::Async => self.written,
        }
    }
}

/// The slaves a master knows.
#[derive(Debug)]
pub struct Followers {
    path: PathBuf,
    lag: Duration,
    slaves: BTreeMap<u64, Follower>,
    generation: u64,
    changed: bool,
    /// Controller mode: the set the controller committed (slaves only)
    /// and its epoch.
    committed: Option<(BTreeSet<u64>, u32)>,
}

impl Followers {
    /// No slave is in sync until it connects and catches up.
    pub fn load(path: PathBuf, lag: Duration) -> Self {
        Self { path, lag, slaves: BTreeMap::new(), generation: 0, changed: false, committed: None }
    }

    /// Controller mode: the controller committed `slaves` as in sync, in
    /// `epoch`.
    pub fn set_committed(&mut self, slaves: BTreeSet<u64>, epoch: u32) {
        self.committed = Some((slaves, epoch));
    }

    /// Controller mode: the set this master would have (its slaves), and
    /// the committed epoch it changes, when it differs from the committed
    /// one.
    pub fn proposal(&self) -> Option<(BTreeSet<u64>, u32)> {
        let (committed, epoch) = self.committed.as_ref()?;
        let wanted: BTreeSet<u64> = self.members().into_iter().collect();
        (wanted != *committed).then_some((wanted, *epoch))
    }

    /// The slaves a write waits for: in sync here, or committed by the
    /// controller.
    fn gating(&self) -> BTreeSet<u64> {
        let mut ids: BTreeSet<u64> = self.members().into_iter().collect();
        if let Some((committed, _)) = &self.committed {
            ids.extend(committed.iter().copied());
        }
        ids
    }

    /// A slave's connection began, its log at `at`: returns the
    /// connection's generation (a later one replaces it).
    pub fn connected(&mut self, id: u64, addr: String, at: u64) -> u64 {
        self.generation += 1;
        let generation = self.generation;
        let follower = self.slaves.entry(id).or_insert_with(|| Follower {
            addr: String::new(),
            written: at,
            synced: at,
            connected: false,
            in_sync: false,
            caught_up_at: None,
            target: None,
            generation,
        });
        if follower.in_sync {
            // A new connection starts from scratch: it was not caught up
            // on this one yet.
            self.changed = true;
        }
        *follower = Follower {
            addr,
            written: at,
            synced: at,
            connected: true,
            in_sync: false,
            caught_up_at: None,
            target: None,
            generation,
        };
        generation
    }

    /// Connection `generation` of slave `id` ended.
    pub fn disconnected(&mut self, id: u64, generation: u64) {
        if let Some(f) = self.slaves.get_mut(&id).filter(|f| f.generation == generation) {
            f.connected = false;
            if f.in_sync {
                f.in_sync = false;
                self.changed = true;
            }
        }
    }

    /// A transfer to `id` ended at `end`; `reached_end`: the master's log
    /// ended there too.
    pub fn sent(&mut self, id: u64, end: u64, reached_end: bool) {
        if let Some(f) = self.slaves.get_mut(&id) {
            if reached_end {
                f.target = Some(end);
            }
        }
    }

    /// Slave `id` holds (`written`, `synced`); it joins the set once caught
    /// up and holding `confirmed` (the high watermark).
    pub fn acked(&mut self, id: u64, (written, synced): (u64, u64), flush: FlushMode, confirmed: u64) {
        let Some(f) = self.slaves.get_mut(&id) else { return };
        f.written = f.written.max(written);
        f.synced = f.synced.max(synced);
        let acked = f.acked(flush);
        if f.target.is_some_and(|target| acked >= target) {
            f.caught_up_at = Some(Instant::now());
            if !f.in_sync && f.connected && acked >= confirmed {
                f.in_sync = true;
                self.changed = true;
            }
        }
    }

    /// Drops from the set every slave that has not caught up for longer
    /// than the lag allowed.
    pub fn expire(&mut self) {
        let lag = self.lag;
        for f in self.slaves.values_mut().filter(|f| f.in_sync) {
            if f.caught_up_at.is_none_or(|at| at.elapsed() > lag) {
                f.in_sync = false;
                self.changed = true;
            }
        }
    }

    /// Slaves in the set (the master not counted).
    pub fn in_sync_count(&self) -> u32 {
        u32::try_from(self.gating().len()).unwrap_or(u32::MAX)
    }

    /// What every in-sync slave holds (`u64::MAX`: none is in the set). A
    /// committed member never heard from holds nothing yet.
    pub fn replicated_to(&self, flush: FlushMode) -> u64 {
        self.gating().iter().map(|id| self.slaves.get(id).map_or(0, |f| f.acked(flush))).min().unwrap_or(u64::MAX)
    }

    /// The set's members if it changed since last asked.
    pub fn take_membership_change(&mut self) -> Option<Vec<u64>> {
        std::mem::take(&mut self.changed).then(|| self.members())
    }

    fn members(&self) -> Vec<u64> {
        self.slaves.iter().filter(|(_, f)| f.in_sync).map(|(id, _)| *id).collect()
    }

    /// Saves the set.
    pub fn persist(&self) -> std::io::Result<()> {
        let json = serde_json::json!({ "in_sync": self.members() });
        crate::store::write_atomically(&self.path, json.to_string().as_bytes())
    }

    /// Every slave known, for status.
    pub fn status(&self, end: u64, flush: FlushMode) -> Vec<SlaveStatus> {
        self.slaves
            .iter()
            .map(|(id, f)| SlaveStatus {
                broker_id: *id,
                addr: f.addr.clone(),
                acked: f.acked(flush),
                lag_bytes: end.saturating_sub(f.written),
                in_sync: f.in_sync,
                connected: f.connected,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn followers() -> Followers {
        Followers::load(PathBuf::from("/nonexistent/in-sync"), Duration::from_millis(50))
    }

    #[test]
    fn a_slave_joins_once_caught_up_and_leaves_on_lag_or_disconnect() {
        let mut f = followers();
        let generation = f.connected(1, "a".into(), 0);
        f.acked(1, (100, 100), FlushMode::Async, 0);
        assert_eq!(f.in_sync_count(), 0, "no transfer reached the end yet");
        f.sent(1, 200, true);
        f.acked(1, (150, 150), FlushMode::Async, 0);
        assert_eq!(f.in_sync_count(), 0, "behind the end it was sent");
        f.acked(1, (200, 150), FlushMode::Async, 0);
        assert_eq!(f.in_sync_count(), 1);
        assert_eq!(f.take_membership_change(), Some(vec![1]));
        assert_eq!(f.replicated_to(FlushMode::Async), 200);
        assert_eq!(f.replicated_to(FlushMode::Sync), 150, "sync flush counts what it synced");
        std::thread::sleep(Duration::from_millis(80));
        f.expire();
        assert_eq!(f.in_sync_count(), 0, "lagged too long");
        assert_eq!(f.replicated_to(FlushMode::Async), u64::MAX);
        f.acked(1, (200, 200), FlushMode::Async, 0);
        assert_eq!(f.in_sync_count(), 1, "back once caught up");
        f.disconnected(1, generation + 7);
        assert_eq!(f.in_sync_count(), 1, "an old connection's end changes nothing");
        f.disconnected(1, generation);
        assert_eq!(f.in_sync_count(), 0);
    }

    #[test]
    fn under_a_controller_a_slave_counts_until_its_leaving_is_committed() {
        let mut f = followers();
        f.set_committed(BTreeSet::new(), 1);
        let generation = f.connected(1, "a".into(), 0);
        f.sent(1, 100, true);
        f.acked(1, (100, 100), FlushMode::Async, 0);
        assert_eq!(f.proposal(), Some((BTreeSet::from([1]), 1)), "joined here: proposed");
        assert_eq!(f.replicated_to(FlushMode::Async), 100, "counted at once");
        f.set_committed(BTreeSet::from([1]), 2);
        assert_eq!(f.proposal(), None);
        f.disconnected(1, generation);
        assert_eq!(f.proposal(), Some((BTreeSet::new(), 2)), "leaving is proposed");
        assert_eq!(f.in_sync_count(), 1, "and not in force until committed");
        assert_eq!(f.replicated_to(FlushMode::Async), 100, "writes past it wait");
        f.set_committed(BTreeSet::from([1, 2]), 3);
        assert_eq!(f.replicated_to(FlushMode::Async), 0, "a committed member never heard from holds nothing");
        f.set_committed(BTreeSet::new(), 4);
        assert_eq!((f.in_sync_count(), f.replicated_to(FlushMode::Async)), (0, u64::MAX));
    }

    #[test]
    fn a_slave_behind_the_high_watermark_does_not_join() {
        let mut f = followers();
        f.connected(2, "b".into(), 0);
        f.sent(2, 100, true);
        f.acked(2, (100, 100), FlushMode::Async, 150);
        assert_eq!(f.in_sync_count(), 0);
    }
}
