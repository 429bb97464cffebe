//! The IndexActor: owns the key index. Queue actors hand it the keys of
//! every message once it is stored (through a shared buffer); the checkpoint flushes it; queries look
//! keys up. At start it re-indexes the log from the last point the index
//! covered (after a crash, or when the index is missing), on its own thread.

use crate::error::{Error, Result};
use crate::store::index::{key_hash, KeyEntry, KeyIndex};
use crate::store::record;
use crate::store::recovery::scan_segment;
use crate::store::segment::SegmentSet;
use actix::prelude::*;
use std::sync::Arc;

/// Keys of stored messages, waiting for the indexer. Queue actors append
/// here instead of sending a message per request (a cross-thread wake-up
/// each); the indexer drains it every few milliseconds, and before every
/// flush and lookup, so a checkpoint's flush covers every key appended
/// before its barriers were answered.
#[derive(Debug, Default)]
pub struct KeyBuffer(std::sync::Mutex<Vec<KeyEntry>>);

impl KeyBuffer {
    /// Adds keys.
    pub fn push(&self, keys: impl IntoIterator<Item = KeyEntry>) {
        if let Ok(mut buf) = self.0.lock() {
            buf.extend(keys);
        }
    }

    fn take(&self) -> Vec<KeyEntry> {
        self.0.lock().map(|mut buf| std::mem::take(&mut *buf)).unwrap_or_default()
    }
}

/// How often the indexer drains the key buffer.
const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// Make the index durable up to `covered_to` (checkpoint).
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct FlushIndex {
    /// Every key below this log offset has been sent.
    pub covered_to: u64,
}

/// Look a key up.
#[derive(Message)]
#[rtype(result = "Result<Vec<u64>>")]
pub struct Lookup {
    /// Topic.
    pub topic: String,
    /// Key.
    pub key: String,
    /// Earliest store time.
    pub begin_ts: i64,
    /// Latest store time.
    pub end_ts: i64,
    /// Most results.
    pub max: usize,
}

/// Drop index files that point only below `log_min`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RetainIndex {
    /// Smallest log offset still stored.
    pub log_min: u64,
}

/// The indexer.
pub struct IndexActor {
    index: KeyIndex,
    keys: Arc<KeyBuffer>,
    segments: Arc<SegmentSet>,
    log_end: u64,
    failed: Option<String>,
    logger: slog::Logger,
}

/// The index entries of one encoded record (one per key).
/// Read in place: nothing is decoded but the keys.
pub fn record_keys(rec: &[u8], log_offset: u64, store_ts: i64) -> Vec<KeyEntry> {
    let Ok(view) = record::view(rec) else { return Vec::new() };
    view.keys().flatten().map(|k| KeyEntry { hash: key_hash(view.topic, k), log_offset, store_ts }).collect()
}

impl IndexActor {
    /// An indexer over `index`; at start it re-indexes `[covered_to,
    /// log_end)` of the log.
    pub fn new(
        index: KeyIndex,
        keys: Arc<KeyBuffer>,
        segments: Arc<SegmentSet>,
        log_end: u64,
        logger: &slog::Logger,
    ) -> Self {
        Self { index, keys, segments, log_end, failed: None, logger: logger.new(slog::o!("actor" => "indexer")) }
    }

    fn drain(&mut self) {
        let keys = self.keys.take();
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.index.insert_all(&keys) {
            slog::error!(self.logger, "key index write failed"; "error" => %e);
            self.failed = Some(e.to_string());
        }
    }

    fn catch_up(&mut self) -> Result<u64> {
        let from = self.index.covered_to().max(self.segments.min_offset());
        let seg_bytes = self.segments.segment_bytes();
        let mut indexed = 0;
        let mut base = self.segments.base_of(from);
        while base < self.log_end {
            if let Some(file) = self.segments.file(base) {
                let start = from.saturating_sub(base);
                let index = &mut self.index;
                let mut on_record = |rec: &[u8], at: u64| -> Result<()> {
                    if at >= self.log_end {
                        return Ok(());
                    }
                    for entry in record_keys(rec, at, record::head(rec).store_ts) {
                        index.insert(entry).map_err(|e| Error::io("index insert", e))?;
                        indexed += 1;
                    }
                    Ok(())
                };
                scan_segment(&file, base, seg_bytes, start, &mut on_record)?;
            }
            base += seg_bytes;
        }
        self.index.flush(self.log_end).map_err(|e| Error::io("flush index", e))?;
        Ok(indexed)
    }
}

impl Actor for IndexActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(DRAIN_EVERY, |act, _| act.drain());
        let from = self.index.covered_to();
        if from >= self.log_end {
            return;
        }
        match self.catch_up() {
            Ok(n) => slog::info!(self.logger, "key index caught up"; "from" => from, "to" => self.log_end, "keys" => n),
            Err(e) => {
                slog::error!(self.logger, "key index cannot catch up; queries by key fail"; "error" => %e);
                self.failed = Some(e.to_string());
            }
        }
    }
}

impl Handler<FlushIndex> for IndexActor {
    type Result = Result<()>;

    fn handle(&mut self, msg: FlushIndex, _: &mut Context<Self>) -> Self::Result {
        self.drain();
        if self.failed.is_some() {
            return Ok(());
        }
        self.index.flush(msg.covered_to).map_err(|e| Error::io("flush key index", e))
    }
}

impl Handler<Lookup> for IndexActor {
    type Result = Result<Vec<u64>>;

    fn handle(&mut self, q: Lookup, _: &mut Context<Self>) -> Self::Result {
        self.drain();
        if let Some(reason) = &self.failed {
            return Err(Error::Poisoned(format!("key index unavailable: {reason}")));
        }
        self.index
            .lookup(key_hash(&q.topic, &q.key), q.begin_ts, q.end_ts, q.max)
            .map_err(|e| Error::io("key lookup", e))
    }
}

impl Handler<RetainIndex> for IndexActor {
    type Result = ();

    fn handle(&mut self, msg: RetainIndex, _: &mut Context<Self>) {
        match self.index.retain(msg.log_min) {
            Ok(0) => {}
            Ok(n) => slog::info!(self.logger, "key index files deleted by retention"; "files" => n),
            Err(e) => slog::warn!(self.logger, "key index retention failed"; "error" => %e),
        }
    }
}
