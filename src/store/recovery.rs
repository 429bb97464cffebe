//! Start-up recovery. After a clean stop the checkpoint gives the log end and
//! nothing is scanned. After an unclean stop the log is scanned from the
//! checkpoint's durable offset: every valid record's consume-queue entry is
//! (re)written, the scan stops at the first record with a bad CRC, a short
//! length or garbage, and that torn tail is cut off (zeroed, later segments
//! removed). Consume queues that are missing are rebuilt from the oldest
//! segment. The result is a store every invariant holds for again.

use crate::error::{Error, IoContext, Result};
use crate::store::checkpoint::Checkpoint;
use crate::store::consume_queue::{ConsumeQueue, CqEntry};
use crate::store::producers::{store_id, LaneRef, ProducerTable};
use crate::store::record::{self, Scan};
use crate::store::segment::{self, SegmentSet};
use crate::store::{list_queue_dirs, StorePaths};
use brook_proto::system::{PROP_REAL_QUEUE, PROP_REAL_TOPIC, SCHEDULE_TOPIC, TIMER_TOPIC, TRANS_HALF_TOPIC};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Bytes read per step while scanning.
const SCAN_CHUNK: usize = 8 << 20;

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Where the writer continues.
    pub write_pos: u64,
    /// Store time of the last record (store times never go backwards).
    pub last_store_ts: i64,
    /// Whether the previous stop was clean (no scan happened).
    pub clean: bool,
    /// Where the scan started (unclean only).
    pub scan_from: u64,
    /// Records replayed into consume queues.
    pub replayed: u64,
    /// Where a torn tail was cut, and why.
    pub truncated: Option<(u64, String)>,
    /// Segment files removed because they lay past the end.
    pub removed_segments: usize,
}

/// Opens every segment into `set` and brings the consume queues — and the
/// idempotent producers' sequence state, loaded from its snapshot — in line
/// with the log.
pub fn recover(
    paths: &StorePaths,
    set: &Arc<SegmentSet>,
    cq_per_file: u64,
    producers: &mut ProducerTable,
) -> Result<Recovered> {
    let log_dir = paths.commitlog();
    let bases = open_segments(&log_dir, set)?;
    let checkpoint = Checkpoint::load(&paths.checkpoint()).ctx(|| "read checkpoint".into())?.unwrap_or_default();
    let (Some(&first), Some(&last)) = (bases.first(), bases.last()) else {
        return Ok(Recovered { clean: checkpoint.clean, ..Recovered::default() });
    };
    let cq_root = paths.consumequeue();
    let cq_present = cq_root.exists();
    if checkpoint.clean && cq_present && set.file(set.base_of(checkpoint.log_end)).is_some() {
        return Ok(Recovered {
            write_pos: checkpoint.log_end,
            last_store_ts: checkpoint.last_store_ts,
            clean: true,
            ..Recovered::default()
        });
    }
    let scan_from =
        if cq_present { checkpoint.cq_durable_offset.clamp(first, last + set.segment_bytes()) } else { first };
    let mut queues = QueueSet::new(paths, cq_per_file);
    for (topic, queue) in list_queue_dirs(&cq_root).ctx(|| "list consume queues".into())? {
        queues.get(&topic, queue)?.truncate_log_from(scan_from).ctx(|| format!("truncate {topic}/{queue}"))?;
    }
    let mut out = Recovered { scan_from, ..Recovered::default() };
    let pos = replay(set, scan_from, &mut Derived { queues: &mut queues, producers }, &mut out)?;
    queues.flush()?;
    out.removed_segments = remove_past(&log_dir, set, pos)?;
    if out.last_store_ts == 0 {
        out.last_store_ts = checkpoint.last_store_ts;
    }
    out.write_pos = pos;
    Ok(out)
}

/// Opens every segment file into `set`, refusing any whose place or size
/// does not fit `store.segment_bytes`; their bases, in order.
fn open_segments(log_dir: &Path, set: &SegmentSet) -> Result<Vec<u64>> {
    let bases = segment::list_segments(log_dir).ctx(|| format!("list {}", log_dir.display()))?;
    for base in &bases {
        if base % set.segment_bytes() != 0 {
            return Err(Error::Config(format!(
                "segment {base} is not aligned to store.segment_bytes = {}; \
                 the segment size cannot change for an existing store",
                set.segment_bytes()
            )));
        }
        let file = segment::open_segment(log_dir, *base).ctx(|| format!("open segment {base}"))?;
        let len = file.metadata().ctx(|| format!("stat segment {base}"))?.len();
        if len != set.segment_bytes() {
            return Err(Error::Config(format!(
                "segment {base} is {len} bytes but store.segment_bytes = {}; \
                 the segment size cannot change for an existing store",
                set.segment_bytes()
            )));
        }
        set.insert(*base, Arc::new(file));
    }
    Ok(bases)
}

/// What replaying the log rebuilds.
struct Derived<'a, 'b> {
    queues: &'a mut QueueSet<'b>,
    producers: &'a mut ProducerTable,
}

/// Where replayed records go: recovery's consume-queue files, or a running
/// slave's live queues (`ha::apply`). Both take records through
/// [`apply_record`], so a slave derives exactly what recovery would.
pub trait Replayed {
    /// An idempotent producer's record: its sequence state advances.
    fn producer(&mut self, lane: LaneRef<'_>, seq: brook_proto::ProducerSeq, queue_offset: u64, store: u64, ts: i64);
    /// A record's consume-queue entry (`rec` is the whole record).
    fn entry(&mut self, rec: &[u8], topic: &str, queue: u32, queue_offset: u64, entry: CqEntry) -> Result<()>;
}

/// Takes in one checked record found at log offset `at`.
pub fn apply_record(rec: &[u8], at: u64, to: &mut impl Replayed) -> Result<()> {
    let head = record::head(rec);
    let topic = record::topic(rec);
    if let Some(seq) = head.producer {
        if let Some((lane_topic, lane_queue)) = producer_lane(rec, topic, head.queue_id) {
            let lane = LaneRef::new(seq.producer_id, lane_topic, lane_queue);
            to.producer(lane, seq, head.queue_offset, store_id(topic, head.queue_id), head.store_ts);
        }
    }
    let entry = CqEntry { log_offset: at, size: head.len, tag_hash: head.tag_hash };
    to.entry(rec, topic, head.queue_id, head.queue_offset, entry)
}

impl Replayed for Derived<'_, '_> {
    fn producer(&mut self, lane: LaneRef<'_>, seq: brook_proto::ProducerSeq, queue_offset: u64, store: u64, ts: i64) {
        self.producers.apply(lane, seq, queue_offset, store, ts);
    }

    fn entry(&mut self, _: &[u8], topic: &str, queue: u32, queue_offset: u64, entry: CqEntry) -> Result<()> {
        self.queues.dispatch(topic, queue, queue_offset, entry)
    }
}

/// The lane an idempotent record belongs to: the topic and queue its send
/// named — its own, or, for a message waiting in a delay or half-message
/// queue, the real ones its properties carry.
fn producer_lane<'a>(rec: &'a [u8], topic: &'a str, queue: u32) -> Option<(&'a str, u32)> {
    if !matches!(topic, SCHEDULE_TOPIC | TIMER_TOPIC | TRANS_HALF_TOPIC) {
        return Some((topic, queue));
    }
    let view = record::view(rec).ok()?;
    let (mut real_topic, mut real_queue) = (None, None);
    for (name, value) in view.properties().flatten() {
        match name {
            PROP_REAL_TOPIC => real_topic = Some(value),
            PROP_REAL_QUEUE => real_queue = value.parse().ok(),
            _ => {}
        }
    }
    Some((real_topic?, real_queue?))
}

/// Replays the log from `from` into the derived data (consume queues,
/// producer state), segment by segment, up to its end; cuts a torn tail and
/// clears what lies past the end. Returns the log's end.
fn replay(set: &SegmentSet, from: u64, derived: &mut Derived<'_, '_>, out: &mut Recovered) -> Result<u64> {
    let mut pos = from;
    while let Some(file) = set.file(set.base_of(pos)) {
        let base = set.base_of(pos);
        let end = scan_segment(&file, base, set.segment_bytes(), pos - base, &mut |rec, at| {
            let head = record::head(rec);
            out.last_store_ts = out.last_store_ts.max(head.store_ts);
            out.replayed += 1;
            apply_record(rec, at, derived)
        })?;
        match end {
            SegmentEnd::Full => {
                set.set_last_store_ts(base, out.last_store_ts);
                pos = base + set.segment_bytes();
                if set.file(pos).is_none() {
                    break;
                }
            }
            SegmentEnd::End(at) => {
                pos = base + at;
                // Zeros here, but an OS crash can leave later pages of an
                // unsynced write behind them: clear those too, or a future
                // scan could resurrect a stale record once new data reaches
                // it.
                zero_tail(&file, at, set.segment_bytes()).ctx(|| format!("clear tail at {pos}"))?;
                break;
            }
            SegmentEnd::Corrupt(at, reason) => {
                pos = base + at;
                zero_tail(&file, at, set.segment_bytes()).ctx(|| format!("cut torn tail at {pos}"))?;
                out.truncated = Some((pos, reason));
                break;
            }
        }
    }
    Ok(pos)
}

/// Removes the segments past the one holding `end`: nothing there is
/// reachable, and stale bytes would only confuse a later scan. Returns how
/// many went.
fn remove_past(log_dir: &Path, set: &SegmentSet, end: u64) -> Result<usize> {
    let keep_through = set.base_of(end);
    let mut removed = 0;
    for base in set.bases().into_iter().filter(|b| *b > keep_through) {
        set.remove(base);
        std::fs::remove_file(log_dir.join(segment::segment_name(base))).ctx(|| format!("remove segment {base}"))?;
        removed += 1;
    }
    if removed > 0 {
        segment::sync_dir(log_dir).ctx(|| "sync commitlog dir".into())?;
    }
    Ok(removed)
}

/// How a segment scan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Padding or the exact end: continue with the next segment.
    Full,
    /// Zeros at this position: the log ends here.
    End(u64),
    /// A damaged record at this position.
    Corrupt(u64, String),
}

/// Walks the records of one segment from `from` (an offset within it),
/// calling `on_record(bytes, log_offset)` for each valid one.
pub fn scan_segment(
    file: &File,
    base: u64,
    seg_bytes: u64,
    from: u64,
    on_record: &mut dyn FnMut(&[u8], u64) -> Result<()>,
) -> Result<SegmentEnd> {
    scan_segment_until(file, (base, seg_bytes), from, seg_bytes, on_record)
}

/// [`scan_segment`] reading nothing at or past `until` (an offset within
/// the segment): a slave scans what it has just received, and a record
/// that runs past `until` ends the scan as damaged (it is not whole yet).
pub fn scan_segment_until(
    file: &File,
    segment: (u64, u64),
    from: u64,
    until: u64,
    on_record: &mut dyn FnMut(&[u8], u64) -> Result<()>,
) -> Result<SegmentEnd> {
    scan_segment_held(file, segment, from, until, (&[], 0), on_record)
}

/// [`scan_segment_until`] with the segment's bytes from `held_at` on (an
/// offset within it) already in memory — a slave's just-written bytes:
/// records inside them are scanned there, not read back from the file.
/// (Read back, they were a slave's slowest step: a read of a page still
/// locked for writeback waited ~10 ms for the disk.)
pub fn scan_segment_held(
    file: &File,
    (base, seg_bytes): (u64, u64),
    from: u64,
    until: u64,
    (held, held_at): (&[u8], u64),
    on_record: &mut dyn FnMut(&[u8], u64) -> Result<()>,
) -> Result<SegmentEnd> {
    let until = until.min(seg_bytes);
    let mut at = from;
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = 0u64;
    let read_at = |buf: &mut Vec<u8>, at: u64, len: u64| {
        buf.resize(len as usize, 0);
        file.read_exact_at(buf, at).ctx(|| format!("read segment {base} at {at}"))
    };
    while at < seg_bytes {
        if seg_bytes - at < record::PAD_MIN as u64 {
            // Too short for a record or a padding record: the writer left
            // it zero and went on in the next segment.
            return Ok(SegmentEnd::Full);
        }
        let left = until.saturating_sub(at);
        if left == 0 {
            return Ok(SegmentEnd::End(at));
        }
        let window = match held_window(held, held_at, until, at) {
            Some(window) => window,
            None => {
                let buf_end = buf_start + buf.len() as u64;
                if at < buf_start || at + left.min(record::HEADER_LEN as u64) > buf_end {
                    read_at(&mut buf, at, left.min(SCAN_CHUNK as u64))?;
                    buf_start = at;
                }
                let start = (at - buf_start) as usize;
                let len = record::stated_len(buf.get(start..).unwrap_or(&[]));
                if at + len > buf_start + buf.len() as u64 && len <= left {
                    // The record runs past what is buffered: read it whole.
                    read_at(&mut buf, at, len.max(left.min(SCAN_CHUNK as u64)))?;
                    buf_start = at;
                }
                buf.get((at - buf_start) as usize..).unwrap_or(&[])
            }
        };
        match record::scan(window, base + at) {
            Scan::Record(len) => {
                on_record(window.get(..len).unwrap_or(&[]), base + at)?;
                at += len as u64;
            }
            Scan::Pad => return Ok(SegmentEnd::Full),
            Scan::End => return Ok(SegmentEnd::End(at)),
            Scan::Corrupt(reason) => return Ok(SegmentEnd::Corrupt(at, reason)),
        }
    }
    Ok(SegmentEnd::Full)
}

/// The held bytes from `at` up to `until`, when they hold the record there
/// whole, or when they reach `until`: they are then exactly what the file
/// would show the scan.
fn held_window(held: &[u8], held_at: u64, until: u64, at: u64) -> Option<&[u8]> {
    let held_end = held_at + held.len() as u64;
    if at < held_at || at > held_end {
        return None;
    }
    let window = held.get((at - held_at) as usize..(held_end.min(until).max(at) - held_at) as usize)?;
    if held_end >= until {
        return Some(window);
    }
    (window.len() >= record::HEADER_LEN && record::stated_len(window) <= window.len() as u64).then_some(window)
}

/// Zeroes a torn tail from `at`, chunk by chunk, until a chunk that is
/// already all zeros (nothing was ever written past it).
fn zero_tail(file: &File, at: u64, seg_bytes: u64) -> std::io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut pos = at;
    let mut buf = vec![0u8; CHUNK as usize];
    let zeros = vec![0u8; CHUNK as usize];
    while pos < seg_bytes {
        let len = CHUNK.min(seg_bytes - pos) as usize;
        let part = buf.get_mut(..len).unwrap_or(&mut []);
        file.read_exact_at(part, pos)?;
        if pos > at && part.iter().all(|b| *b == 0) {
            break;
        }
        file.write_all_at(zeros.get(..len).unwrap_or(&[]), pos)?;
        pos += len as u64;
    }
    file.sync_data()
}

/// Consume queues opened during recovery, with entries buffered per queue.
struct QueueSet<'a> {
    paths: &'a StorePaths,
    per_file: u64,
    queues: HashMap<(String, u32), (ConsumeQueue, u64, Vec<CqEntry>)>,
}

impl<'a> QueueSet<'a> {
    fn new(paths: &'a StorePaths, per_file: u64) -> Self {
        Self { paths, per_file, queues: HashMap::new() }
    }

    fn get(&mut self, topic: &str, queue: u32) -> Result<&mut ConsumeQueue> {
        let key = (topic.to_string(), queue);
        if !self.queues.contains_key(&key) {
            let dir = self.paths.queue_dir(topic, queue);
            let cq = ConsumeQueue::open(dir.clone(), self.per_file).ctx(|| format!("open {}", dir.display()))?;
            self.queues.insert(key.clone(), (cq, 0, Vec::new()));
        }
        self.queues.get_mut(&key).map(|(cq, _, _)| cq).ok_or_else(|| Error::Config("queue vanished".into()))
    }

    /// Buffers the entry for `queue_offset` unless the queue already has it.
    fn dispatch(&mut self, topic: &str, queue: u32, queue_offset: u64, entry: CqEntry) -> Result<()> {
        self.get(topic, queue)?;
        let Some((cq, start, pending)) = self.queues.get_mut(&(topic.to_string(), queue)) else {
            return Ok(());
        };
        let expected = if pending.is_empty() { cq.next_offset() } else { *start + pending.len() as u64 };
        let empty = cq.next_offset() == cq.min_offset() && pending.is_empty();
        if queue_offset < expected && !empty {
            return Ok(()); // already indexed
        }
        if queue_offset != expected && !empty {
            return Err(Error::Corrupt {
                offset: entry.log_offset,
                reason: format!(
                    "record for {topic}/{queue} has queue offset {queue_offset} but the queue ends at {expected}"
                ),
            });
        }
        if pending.is_empty() {
            *start = queue_offset;
        }
        pending.push(entry);
        if pending.len() >= 4096 {
            let entries = std::mem::take(pending);
            cq.append(*start, &entries).ctx(|| format!("rebuild {topic}/{queue}"))?;
        }
        Ok(())
    }

    /// Writes what is buffered and makes every rebuilt queue durable.
    fn flush(&mut self) -> Result<()> {
        for ((topic, queue), (cq, start, pending)) in &mut self.queues {
            if !pending.is_empty() {
                let entries = std::mem::take(pending);
                cq.append(*start, &entries).ctx(|| format!("rebuild {topic}/{queue}"))?;
            }
            for path in cq.take_dirty().ctx(|| format!("write {topic}/{queue}"))? {
                crate::store::fd_cache::get(&path, false)
                    .and_then(|file| file.sync_data())
                    .ctx(|| format!("sync {topic}/{queue}"))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{encode_into, patch_queue_offset, seal, HEADER_LEN, PAD_MIN};
    use brook_proto::Message;
    use std::os::unix::fs::FileExt;

    /// A sealed record of `total` bytes (topic "t", queue 0) at `at`.
    fn record(total: usize, queue_offset: u64, at: u64) -> Vec<u8> {
        let body = vec![b'x'; total - HEADER_LEN - 1];
        let mut buf = Vec::new();
        encode_into(&mut buf, &Message::new("t", body), 0, 0).expect("encode");
        assert_eq!(buf.len(), total);
        patch_queue_offset(&mut buf, queue_offset);
        seal(&mut buf, at, 1);
        buf
    }

    /// A segment whose last record leaves fewer bytes than a padding record
    /// needs: the tail stays zero and the log goes on in the next segment.
    /// Recovery must read on, not take those zeros for the log's end (and
    /// remove every later segment with the acknowledged records in it).
    #[test]
    fn a_tail_too_short_for_padding_is_skipped_not_taken_for_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = StorePaths::new(dir.path());
        paths.create_dirs().expect("dirs");
        const SEG: u64 = 4096;
        let tail = PAD_MIN as u64 - 3;
        for base in [0, SEG] {
            segment::create_zeroed(&paths.commitlog(), base, SEG).expect("segment");
        }
        let first = segment::open_segment(&paths.commitlog(), 0).expect("open");
        let (big, small) = (2000usize, (SEG - tail) as usize - 2000);
        first.write_all_at(&record(big, 0, 0), 0).expect("write");
        first.write_all_at(&record(small, 1, big as u64), big as u64).expect("write");
        let second = segment::open_segment(&paths.commitlog(), SEG).expect("open");
        second.write_all_at(&record(300, 2, SEG), 0).expect("write");
        let set = Arc::new(SegmentSet::new(paths.commitlog(), SEG));
        let recovered = recover(&paths, &set, 100, &mut ProducerTable::default()).expect("recover");
        assert_eq!(recovered.replayed, 3, "{recovered:?}");
        assert_eq!(recovered.write_pos, SEG + 300);
        assert_eq!(recovered.removed_segments, 0);
        assert!(recovered.truncated.is_none());
    }
    /// Records in the held bytes are scanned there, not read from the file
    /// (here the file holds zeros where they are); a record the held bytes
    /// hold only part of is read from the file; the scan's end cuts records
    /// the same way from either.
    #[test]
    fn held_bytes_are_scanned_in_memory_and_the_file_fills_in_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = StorePaths::new(dir.path());
        paths.create_dirs().expect("dirs");
        const SEG: u64 = 8192;
        segment::create_zeroed(&paths.commitlog(), 0, SEG).expect("segment");
        let file = segment::open_segment(&paths.commitlog(), 0).expect("open");
        let mut log = Vec::new();
        for i in 0..5 {
            log.extend(record(300, i, log.len() as u64));
        }
        let scan = |from: u64, until: u64, held: (&[u8], u64)| {
            let mut seen = Vec::new();
            let end = scan_segment_held(&file, (0, SEG), from, until, held, &mut |rec, at| {
                seen.push((at, rec.len()));
                Ok(())
            })
            .expect("scan");
            (seen.len(), end)
        };
        let whole = log.len() as u64;
        // Only in memory: the file is still all zeros.
        assert_eq!(scan(0, whole, (&log, 0)), (5, SegmentEnd::End(whole)));
        assert_eq!(scan(0, whole, (&[], 0)), (0, SegmentEnd::End(0)), "the file alone has nothing");
        // Cut at the scan's end, inside the fourth record: three, either way.
        let cut = scan(0, 1000, (&log, 0));
        assert!(matches!(cut, (3, SegmentEnd::Corrupt(900, _))), "{cut:?}");
        file.write_all_at(&log, 0).expect("write");
        assert_eq!(scan(0, 1000, (&[], 0)), cut);
        // Held bytes starting at the second record and ending inside the
        // fifth: the first and the fifth come from the file.
        let held = log.get(300..1300).expect("held");
        file.write_all_at(&[0; 800], 350).expect("zero what the held bytes hold whole");
        assert_eq!(scan(0, whole, (held, 300)), (5, SegmentEnd::End(whole)));
    }
}
