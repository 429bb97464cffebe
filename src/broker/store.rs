//! Opening the store before any actor runs: lock the data dir, choose the
//! io backend, carry out a cut a slave marked, recover, and mark the store
//! in use (a crash from here on is noticed at the next start).

use crate::config::{Config, FlushMode};
use crate::error::{Error, IoContext, Result};
use crate::io::{self, ResolvedBackend};
use crate::store::checkpoint::{Checkpoint, DirLock};
use crate::store::producers::ProducerTable;
use crate::store::recovery::{self, Recovered};
use crate::store::reserve::Reserve;
use crate::store::segment::{self, SegmentSet};
use crate::store::topics::TopicTable;
use crate::store::StorePaths;
use std::sync::Arc;

/// A store opened and recovered, ready for actors.
pub struct OpenedStore {
    /// Paths.
    pub paths: StorePaths,
    /// Segments.
    pub segments: Arc<SegmentSet>,
    /// Topics.
    pub topics: Arc<TopicTable>,
    /// What recovery did.
    pub recovered: Recovered,
    /// The idempotent producers' state, rebuilt (handed to the queues at
    /// start).
    pub producers: ProducerTable,
    /// The writer backend chosen.
    pub backend: ResolvedBackend,
    /// Why `auto` fell back, if it did.
    pub backend_note: Option<String>,
    /// What the start did about a full disk, if anything.
    pub space_note: Option<String>,
    /// In controller mode: this broker's id and role, as the controller
    /// gave them (see [`crate::ha::controller::join`]).
    pub joined: Option<crate::ha::controller::Joined>,
    pub(super) lock: DirLock,
}

/// Locks the data dir, recovers the store and marks it in use (a crash from
/// here on is noticed at the next start).
pub fn open_store(config: &Config) -> Result<OpenedStore> {
    let paths = StorePaths::new(&config.data_dir);
    paths.create_dirs().ctx(|| format!("create data dir {}", paths.root.display()))?;
    let lock = DirLock::acquire(&paths.root).ctx(|| format!("lock {}", paths.root.display()))?;
    let (backend, backend_note) =
        io::resolve(config.store.io_backend).ctx(|| "io_uring requested but unavailable".into())?;
    let segments = Arc::new(SegmentSet::new(paths.commitlog(), config.store.segment_bytes));
    let reserve = Reserve::new(paths.reserve(), config.store.disk_reserve_bytes);
    let space_note = match reserve.release_if_full(&paths.root) {
        Ok(0) => None,
        Ok(freed) => Some(format!("disk full at start: let the {freed}-byte space reserve go so recovery can write")),
        Err(e) => Some(format!("disk full at start, and the space reserve could not be let go: {e}")),
        // Laid down again by the housekeeper's first retention pass.
    };
    // A cut of the log a slave marked (its log ran past its master's) is
    // carried out before anything reads the log.
    let cut_note = crate::store::truncation::finish_pending(&paths, config.store.segment_bytes)?
        .map(|to| format!("log cut at {to}: it ran past the master's"));
    let space_note = match (space_note, cut_note) {
        (Some(space), Some(cut)) => Some(format!("{space}; {cut}")),
        (space, cut) => space.or(cut),
    };
    let mut producers = load_producers(&paths, config)?;
    let recovered = recovery::recover(&paths, &segments, config.store.cq_entries_per_file, &mut producers)?;
    let active = segments.base_of(recovered.write_pos);
    if segments.file(active).is_none() {
        // A fresh store: its first segment is prepared like every later one.
        let dir = paths.commitlog();
        let size = config.store.segment_bytes;
        match config.store.flush {
            FlushMode::Sync => segment::create_zeroed(&dir, active, size),
            FlushMode::Async => segment::create_fallocated(&dir, active, size),
        }
        .and_then(|()| segment::open_segment(&paths.commitlog(), active))
        .map(|file| segments.insert(active, Arc::new(file)))
        .ctx(|| format!("create segment {active}"))?;
    }
    Checkpoint {
        cq_durable_offset: recovered.write_pos,
        log_end: 0,
        last_store_ts: recovered.last_store_ts,
        clean: false,
    }
    .store(&paths.checkpoint())
    .ctx(|| "write checkpoint".into())?;
    let topics = Arc::new(TopicTable::load(paths.topics())?);
    Ok(OpenedStore {
        paths,
        segments,
        topics,
        recovered,
        producers,
        backend,
        backend_note,
        space_note,
        joined: None,
        lock,
    })
}

/// The idempotent producers' state as the last checkpoint saved it (empty
/// without a snapshot), with the configured limits.
fn load_producers(paths: &StorePaths, config: &Config) -> Result<ProducerTable> {
    let (max, expiry) = (config.max_producers, config.producer_idle_expiry_ms);
    match std::fs::read(paths.producers()) {
        Ok(bytes) => ProducerTable::load(&bytes, max, expiry),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ProducerTable::new(max, expiry)),
        Err(e) => Err(Error::io(format!("read {}", paths.producers().display()), e)),
    }
}
