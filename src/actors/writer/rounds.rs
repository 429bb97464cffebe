//! The writer's fdatasync rounds: asking the syncer for one, running a
//! lone append's on the writer's own thread, and answering what a round
//! covered when it ends.

use super::syncer::{self, Marker, Synced, Unsynced, Waiter};
use super::WriterActor;
use crate::store::commitlog::CommitLog;
use std::sync::atomic::Ordering;

impl WriterActor {
    /// Everything written so far gets an fdatasync beside the writes;
    /// `markers` are answered once it (and every sync before it) is done.
    /// Needs the log at rest, so every write handed out is complete.
    pub(super) fn detach_sync(&mut self, markers: Vec<Marker>) {
        self.detach_sync_with(markers, None, 0);
    }

    /// [`WriterActor::detach_sync`], with a just-written group (sync flush)
    /// to answer once that sync is done.
    pub(super) fn detach_sync_with(&mut self, markers: Vec<Marker>, group: Option<Unsynced>, records: usize) {
        if group.is_some() {
            // Its end answers them: the thread stays awake for it.
            super::idle_poll::keep_awake();
        }
        let waiters = group.map(Waiter::Group).into_iter().chain(markers.into_iter().map(Waiter::Marker));
        if let Some(err) = self.poisoned_error() {
            let msg = err.to_string();
            waiters.for_each(|w| syncer::fail(w, &msg));
            return;
        }
        let files = self.log.as_mut().map(CommitLog::take_unsynced).unwrap_or_default();
        let asked = self.syncer.ask(files, self.synced_at(), records);
        self.asked = asked;
        for waiter in waiters {
            self.awaiting.push(asked, waiter);
        }
    }

    /// Whether `group` (just written under sync flush) is a lone append
    /// nobody else waits beside: see the module's notes.
    pub(super) fn alone(&self, group: &Unsynced) -> bool {
        group.dones.len() == 1
            && self.last_round_appends <= 1
            && self.asked == self.settled
            && self.pending.is_empty()
            && self.replicas.is_empty()
            && self.poisoned.is_none()
            && self.stats.arriving.load(Ordering::Relaxed) == 0
    }

    /// Syncs a lone group on this thread and answers it (and `markers`):
    /// a round of its own, run while the syncer is idle.
    pub(super) fn sync_here(&mut self, markers: Vec<Marker>, group: Unsynced) {
        let files = self.log.as_mut().map(CommitLog::take_unsynced).unwrap_or_default();
        let began = std::time::Instant::now();
        let result = if files.is_empty() { Ok(()) } else { (self.own_sync)(&files) };
        let took = (!files.is_empty()).then(|| began.elapsed());
        // Every request made of the syncer is settled: the round settles
        // these alone.
        let asked = self.settled;
        self.awaiting.push(asked, Waiter::Group(group));
        for marker in markers {
            self.awaiting.push(asked, Waiter::Marker(marker));
        }
        self.synced(Synced { asked, at: self.synced_at(), result, took });
    }

    /// A sync round ended: answers what it covered, or poisons.
    pub(super) fn synced(&mut self, Synced { asked, at, result, took }: Synced) {
        self.settled = self.settled.max(asked);
        if self.poisoned.is_some() {
            return; // everything waiting was failed already
        }
        if let Some(took) = took {
            self.stats.fsync_us.observe(took.as_micros() as u64);
        }
        match result {
            Ok(()) => {
                self.stats.synced_pos.fetch_max(at.write_pos, Ordering::Relaxed);
                self.stats.moved();
                let mut settled = Vec::new();
                self.awaiting.settle(asked, |waiter| settled.push(waiter));
                let appends: usize =
                    settled.iter().map(|w| if let Waiter::Group(g) = w { g.dones.len() } else { 0 }).sum();
                if appends > 0 {
                    self.last_round_appends = appends;
                }
                for waiter in settled {
                    match waiter {
                        Waiter::Group(group) => self.release(group),
                        Waiter::Marker(marker) => {
                            let _ = marker.send(Ok(self.gate.visible(at)));
                        }
                    }
                }
                let behind = at.write_pos.saturating_sub(self.config.log_cache_bytes);
                self.drop_cached_below(behind.min(self.segments.replay_from()));
            }
            Err(e) => {
                let msg = self.poison("commit-log fdatasync failed", &e);
                self.awaiting.fail_all(&msg);
            }
        }
    }
}
