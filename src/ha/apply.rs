//! A slave makes the records its master's bytes carry readable, on the
//! writer's thread right after they are written: each whole record goes
//! through recovery's own [`apply_record`] into a sink that admits it into
//! its live queue at the queue offset the master gave it — the same
//! admission and consume-queue append a master's write takes, so parked
//! pulls wake, keys reach the index and producer sequences advance.

use crate::actors::indexer::record_keys;
use crate::actors::queue::append::{self, Written};
use crate::actors::queue::idempotence;
use crate::actors::queue_registry::QueueRegistry;
use crate::error::{Error, Result};
use crate::ha::meta::MetaEvent;
use crate::store::commitlog::RecordPos;
use crate::store::consume_queue::CqEntry;
use crate::store::index::KeyEntry;
use crate::store::producers::LaneRef;
use crate::store::record;
use crate::store::recovery::{apply_record, scan_segment_held, Replayed, SegmentEnd};
use crate::store::segment::SegmentSet;
use crate::store::topics::TopicTable;
use brook_proto::system::META_TOPIC;
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// How far a slave's records are readable.
pub struct Applier {
    registry: Arc<QueueRegistry>,
    topics: Arc<TopicTable>,
    segments: Arc<SegmentSet>,
    applied: u64,
    /// The bytes from `applied` on that the last write brought: a record
    /// not whole yet, scanned again with the next write's bytes.
    tail: Vec<u8>,
}

impl Applier {
    /// Records below `from` are readable already (recovery saw to them).
    pub fn new(registry: Arc<QueueRegistry>, topics: Arc<TopicTable>, segments: Arc<SegmentSet>, from: u64) -> Self {
        Self { registry, topics, segments, applied: from, tail: Vec::new() }
    }

    /// Makes every whole record below `end` readable (on the writer's
    /// thread), given the bytes just written and where they start: records
    /// are scanned in them (and in the tail the last write left), the file
    /// is read only for what they do not hold. A record cut off at `end`
    /// waits for the rest of its bytes. Returns the metadata events the
    /// records carried, in log order.
    pub fn advance(&mut self, end: u64, (written, written_at): (&[u8], u64)) -> Result<Vec<MetaEvent>> {
        let mut tail = std::mem::take(&mut self.tail);
        let (held, held_at): (&[u8], u64) = if !tail.is_empty() && self.applied + tail.len() as u64 == written_at {
            tail.extend_from_slice(written);
            (&tail, self.applied)
        } else {
            (written, written_at)
        };
        let seg = self.segments.segment_bytes();
        let mut sink = Live {
            registry: &self.registry,
            topics: &self.topics,
            keys: Vec::new(),
            newest: BTreeMap::new(),
            meta: Vec::new(),
        };
        while self.applied < end {
            let base = self.segments.base_of(self.applied);
            let file = self
                .segments
                .file(base)
                .ok_or_else(|| Error::Config(format!("replicated log has no segment at {base}")))?;
            let until = (end - base).min(seg);
            let in_segment = match held_at.checked_sub(base) {
                Some(at) => (held, at),
                None => (held.get((base - held_at) as usize..).unwrap_or(&[]), 0),
            };
            let scanned =
                scan_segment_held(&file, (base, seg), self.applied - base, until, in_segment, &mut |rec, at| {
                    sink.newest.insert(base, record::head(rec).store_ts);
                    apply_record(rec, at, &mut sink)
                })?;
            match scanned {
                SegmentEnd::Full => self.applied = base + seg,
                SegmentEnd::End(at) | SegmentEnd::Corrupt(at, _) => {
                    self.applied = base + at;
                    // Only a record that claims to end by `end` can be damaged
                    // rather than not whole yet; one that starts at `end` has
                    // no bytes to look at (reading them would wait on the
                    // frontier page's writeback).
                    let whole_header = self.applied + record::HEADER_LEN as u64 <= end;
                    let claimed = if whole_header { claimed_len(&file, at, in_segment) } else { 0 };
                    if claimed > 0 && self.applied + claimed <= end {
                        let reason = match scanned {
                            SegmentEnd::Corrupt(_, reason) => reason,
                            _ => "zeros inside replicated bytes".into(),
                        };
                        return Err(Error::Corrupt { offset: self.applied, reason });
                    }
                    break;
                }
            }
        }
        for (base, ts) in sink.newest {
            self.segments.set_last_store_ts(base, ts);
        }
        if let Some(buffer) = self.registry.key_buffer().filter(|_| !sink.keys.is_empty()) {
            buffer.push(sink.keys);
        }
        self.tail = match self.applied.checked_sub(held_at) {
            Some(from) if self.applied < end => held.get(from as usize..).unwrap_or(&[]).to_vec(),
            _ => Vec::new(),
        };
        Ok(sink.meta)
    }
}

/// The length a record at `at` of `file` claims (0: unreadable), from the
/// held bytes (starting at `held_at` in the file) when they cover it.
fn claimed_len(file: &std::fs::File, at: u64, (held, held_at): (&[u8], u64)) -> u64 {
    let mut len = [0u8; 4];
    let from_held = at.checked_sub(held_at).and_then(|i| held.get(i as usize..));
    let stated = match from_held {
        Some(bytes) if bytes.len() >= len.len() => record::stated_len(bytes),
        _ if file.read_exact_at(&mut len, at).is_ok() => record::stated_len(&len),
        _ => return 0,
    };
    stated.max(record::HEADER_LEN as u64)
}

/// The live queues as recovery's sink.
struct Live<'a> {
    registry: &'a QueueRegistry,
    topics: &'a TopicTable,
    keys: Vec<KeyEntry>,
    /// Newest store time per segment (retention reads it).
    newest: BTreeMap<u64, i64>,
    /// Metadata the records carried.
    meta: Vec<MetaEvent>,
}

impl Replayed for Live<'_> {
    fn producer(&mut self, lane: LaneRef<'_>, seq: brook_proto::ProducerSeq, queue_offset: u64, store: u64, ts: i64) {
        idempotence::apply_replicated(lane, seq, queue_offset, store, ts);
    }

    fn entry(&mut self, rec: &[u8], topic: &str, queue: u32, queue_offset: u64, entry: CqEntry) -> Result<()> {
        // The log is the authority: a topic the master wrote to exists
        // here, with at least the queues its records name.
        if self.topics.get(topic).is_none_or(|t| t.queues <= queue) {
            self.topics.create(topic, queue + 1)?;
        }
        let spec = self.registry.queue_spec(topic, queue);
        let first = append::admit(&spec, 1)?;
        if first != queue_offset {
            // Undo the admission before failing: the queue must not keep an
            // offset no record has.
            append::refused(&spec, first, 1);
            return Err(Error::Corrupt {
                offset: entry.log_offset,
                reason: format!("{topic}/{queue}: replicated record has queue offset {queue_offset}, expected {first}"),
            });
        }
        let head = record::head(rec);
        let pos = RecordPos { log_offset: entry.log_offset, size: entry.size, store_ts: head.store_ts };
        let written = Written {
            first_offset: first,
            positions: &[pos],
            tag_hashes: &[entry.tag_hash],
            key_hashes: &[],
            first_record: 0,
        };
        append::written(&spec, written, &mut Vec::new())?;
        if topic == META_TOPIC {
            let view = record::view(rec).map_err(|reason| Error::Corrupt { offset: entry.log_offset, reason })?;
            self.meta.push(MetaEvent::decode(view.body)?);
        }
        self.keys.extend(record_keys(rec, entry.log_offset, head.store_ts));
        Ok(())
    }
}
