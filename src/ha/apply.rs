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
        let mut sink = Live {
            registry: &self.registry,
            topics: &self.topics,
            keys: Vec::new(),
            newest: BTreeMap::new(),
            meta: Vec::new(),
        };
        let tail = std::mem::take(&mut self.tail);
        let joined: Vec<u8>;
        let (rest, rest_at) = if !tail.is_empty() && self.applied + tail.len() as u64 == written_at {
            // Only the record the last write cut off is joined (copied);
            // the rest is scanned where it lies. A catch-up's runs end
            // inside records, so joining the whole run copied all of it.
            let joined_at = self.applied;
            joined = join_cut_off(tail, written);
            let joined_end = joined_at + joined.len() as u64;
            scan_held(&self.segments, &mut self.applied, end.min(joined_end), (&joined, joined_at), &mut sink)?;
            if self.applied < joined_end {
                // Still not whole: `joined` holds every byte received.
                (&joined[..], joined_at)
            } else {
                (written, written_at)
            }
        } else {
            (written, written_at)
        };
        if rest_at == written_at {
            scan_held(&self.segments, &mut self.applied, end, (written, written_at), &mut sink)?;
        }
        for (base, ts) in sink.newest {
            self.segments.set_last_store_ts(base, ts);
        }
        if let Some(buffer) = self.registry.key_buffer().filter(|_| !sink.keys.is_empty()) {
            buffer.push(sink.keys);
        }
        self.tail = match self.applied.checked_sub(rest_at) {
            Some(from) if self.applied < end => rest.get(from as usize..).unwrap_or(&[]).to_vec(),
            _ => Vec::new(),
        };
        Ok(sink.meta)
    }
}

/// The cut-off record's bytes (`tail`, which starts it) followed by as many
/// of `written`'s first bytes as it still lacks: all of them when it is
/// still not whole. A length below a header's is read as a header's, so
/// zeros where a record should start are judged as [`Applier::advance`]
/// judges them elsewhere.
fn join_cut_off(mut tail: Vec<u8>, written: &[u8]) -> Vec<u8> {
    const LEN_BYTES: usize = 4;
    let mut taken = 0;
    if tail.len() < LEN_BYTES {
        taken = (LEN_BYTES - tail.len()).min(written.len());
        tail.extend_from_slice(&written[..taken]);
    }
    let len = usize::try_from(record::stated_len(&tail)).unwrap_or(usize::MAX).max(record::HEADER_LEN);
    let more = len.saturating_sub(tail.len()).min(written.len() - taken);
    tail.extend_from_slice(&written[taken..taken + more]);
    tail
}

/// Applies every whole record from `*applied` below `end`, from the held
/// bytes (starting at log offset `held_at`) where they cover it and from the
/// file where not, moving `*applied` past each.
fn scan_held(
    segments: &SegmentSet,
    applied: &mut u64,
    end: u64,
    (held, held_at): (&[u8], u64),
    sink: &mut Live<'_>,
) -> Result<()> {
    let seg = segments.segment_bytes();
    while *applied < end {
        let base = segments.base_of(*applied);
        let file =
            segments.file(base).ok_or_else(|| Error::Config(format!("replicated log has no segment at {base}")))?;
        let until = (end - base).min(seg);
        let in_segment = match held_at.checked_sub(base) {
            Some(at) => (held, at),
            None => (held.get((base - held_at) as usize..).unwrap_or(&[]), 0),
        };
        let scanned = scan_segment_held(&file, (base, seg), *applied - base, until, in_segment, &mut |rec, at| {
            sink.newest.insert(base, record::head(rec).store_ts);
            apply_record(rec, at, sink)
        })?;
        match scanned {
            SegmentEnd::Full => *applied = base + seg,
            SegmentEnd::End(at) | SegmentEnd::Corrupt(at, _) => {
                *applied = base + at;
                // Only a record that claims to end by `end` can be damaged
                // rather than not whole yet; one that starts at `end` has
                // no bytes to look at (reading them would wait on the
                // frontier page's writeback).
                let whole_header = *applied + record::HEADER_LEN as u64 <= end;
                let claimed = if whole_header { claimed_len(&file, at, in_segment) } else { 0 };
                if claimed > 0 && *applied + claimed <= end {
                    let reason = match scanned {
                        SegmentEnd::Corrupt(_, reason) => reason,
                        _ => "zeros inside replicated bytes".into(),
                    };
                    return Err(Error::Corrupt { offset: *applied, reason });
                }
                break;
            }
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::queue::append::admit;
    use crate::store::record::{encode_into, patch_queue_offset, seal};
    use crate::store::{segment, StorePaths};
    use brook_proto::Message;

    const SEG: u64 = 1 << 16;

    fn applier(dir: &std::path::Path) -> (Applier, Arc<QueueRegistry>) {
        let paths = StorePaths::new(dir);
        paths.create_dirs().expect("dirs");
        segment::create_zeroed(&paths.commitlog(), 0, SEG).expect("segment");
        let set = Arc::new(SegmentSet::new(paths.commitlog(), SEG));
        let (writer, stats) = crate::actors::writer::test_writer(set.clone());
        let topics = Arc::new(TopicTable::load(dir.join("topics.json")).expect("topics"));
        let registry =
            Arc::new(QueueRegistry::new((writer, stats), None, paths, 100, set.clone(), crate::logging::discard()));
        (Applier::new(registry.clone(), topics, set, 0), registry)
    }

    /// `count` sealed records of growing sizes for queue t/0, back to back
    /// from offset 0; and where each ends.
    fn log_of(count: u64) -> (Vec<u8>, Vec<u64>) {
        let (mut log, mut ends) = (Vec::new(), Vec::new());
        for i in 0..count {
            let mut rec = Vec::new();
            let body = vec![b'x'; 40 + (i as usize * 37) % 600];
            encode_into(&mut rec, &Message::new("t", body), 0, 0).expect("encode");
            patch_queue_offset(&mut rec, i);
            seal(&mut rec, log.len() as u64, 1);
            log.extend(rec);
            ends.push(log.len() as u64);
        }
        (log, ends)
    }

    /// Runs cut anywhere — inside a record's length, its header, its body,
    /// a run shorter than what a cut-off record still lacks, a run ending on
    /// a record's end — each make exactly the records they complete
    /// readable, from memory alone (the file holds only zeros here).
    #[actix_rt::test]
    async fn runs_cut_inside_records_apply_each_record_once_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut applier, registry) = applier(dir.path());
        let (log, ends) = log_of(60);
        let total = log.len() as u64;
        let mut cuts = vec![2, ends[0] + 1, ends[0] + 50, ends[0] + 60, ends[1], ends[3] - 5];
        cuts.extend((1..).map(|i| ends[3] + i * 211).take_while(|c| *c < total));
        cuts.push(total);
        let mut at = 0;
        for cut in cuts {
            let run = &log[at as usize..cut as usize];
            let meta = applier.advance(cut, (run, at)).expect("advance");
            assert!(meta.is_empty());
            let whole = ends.iter().copied().filter(|e| *e <= cut).max().unwrap_or(0);
            assert_eq!(applier.applied, whole, "after a run ending at {cut}");
            assert_eq!(applier.applied + applier.tail.len() as u64, cut, "the cut-off record is held");
            at = cut;
        }
        let spec = registry.queue_spec("t", 0);
        assert_eq!(admit(&spec, 1).expect("admit"), 60, "every record admitted once");
    }

    /// A record whose bytes are damaged inside what was received is an
    /// error, not a record still on its way.
    #[actix_rt::test]
    async fn a_damaged_cut_off_record_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut applier, _registry) = applier(dir.path());
        let (mut log, ends) = log_of(3);
        log[ends[0] as usize + 100] ^= 0xff;
        let cut = ends[0] + 10;
        applier.advance(cut, (&log[..cut as usize], 0)).expect("first run");
        let err = applier.advance(ends[2], (&log[cut as usize..], cut)).expect_err("damaged");
        assert!(matches!(err, Error::Corrupt { offset, .. } if offset == ends[0]), "{err:?}");
    }
}
