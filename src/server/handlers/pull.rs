//! Pulls: a queue's entries from an offset (long polling when there are
//! none), their records read from the log and encoded in place into the
//! answer's frame, filtered by tag and by property expression.

use crate::actors::queue::Pull;
use crate::error::Error;
use crate::filter::sql::{Expr, Fields};
use crate::filter::TagFilter;
use crate::metrics::MessageType;
use crate::server::context::BrokerCore;
use crate::server::handlers::{check_queue, query, topic_queues};
use crate::store::commitlog::LogReader;
use crate::store::consume_queue::CqEntry;
use crate::store::record;
use brook_proto::{MessageId, MessageOut, PulledFrame, StoredMessageOut, WireError};
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::Duration;

/// A pull's messages in their frame, and the queue's offsets (next, min,
/// max).
pub struct PulledAnswer {
    /// The messages, encoded.
    pub frame: PulledFrame,
    /// Next offset to pull, smallest and one past the largest stored.
    pub offsets: (u64, u64, u64),
}

/// Longest a pull may be parked.
pub const MAX_LONG_POLL_MS: u64 = 120_000;

/// What a pull asks for, past its queue and filters.
pub struct PullAsk {
    /// First offset wanted.
    pub offset: u64,
    /// Most messages (0: 32).
    pub max_messages: u32,
    /// Most bytes (0: 1 MiB; capped at half a frame).
    pub max_bytes: u32,
    /// How long to park when nothing is there.
    pub long_poll_ms: u64,
}

/// Reads up to the asked limits from a queue, parking (long polling) when
/// nothing new is there; the records are encoded straight into the answer.
pub async fn pull(
    core: &BrokerCore,
    topic: &str,
    queue: u32,
    ask: PullAsk,
    (tags, sql): (Option<&str>, Option<&str>),
) -> Result<PulledAnswer, WireError> {
    let PullAsk { offset, max_messages, max_bytes, long_poll_ms } = ask;
    let queues = topic_queues(core, topic)?;
    check_queue(topic, queue, queues)?;
    let filter = Arc::new(TagFilter::parse(tags).map_err(Error::InvalidArgument)?);
    let sql = sql.map(|text| query::sql_filter(core, text)).transpose()?;
    if long_poll_ms > MAX_LONG_POLL_MS {
        return Err(
            Error::InvalidArgument(format!("long_poll_ms is at most {MAX_LONG_POLL_MS}, got {long_poll_ms}")).into()
        );
    }
    // Keep every answer well inside one frame.
    let byte_cap = (core.config.server.max_frame_bytes / 2) as u32;
    let max_bytes = if max_bytes == 0 { 1 << 20 } else { max_bytes }.min(byte_cap);
    let waiting = crate::metrics::Held::new(&core.metrics, |m| &m.long_polls);
    let found = core
        .registry
        .queue(topic, queue)
        .send(Pull {
            offset,
            max_messages: if max_messages == 0 { 32 } else { max_messages },
            max_bytes,
            filter: filter.clone(),
            long_poll: Duration::from_millis(long_poll_ms),
            cut_short: Some(core.stopping.clone()),
        })
        .await
        .map_err(Error::from)??;
    drop(waiting);
    // Fresh records are read right here: all of them for a consumer that
    // this pull brings to the queue's end (it is keeping up; a thread hop
    // would only add latency), the first few for one catching up on a
    // backlog. From the first record not in the page cache on, or past those
    // few, the rest are read on the blocking pool: a cold or long read must
    // not stall the connections sharing this thread.
    let pulled = Pulled { reader: core.reader.clone(), broker: core.advertised, filter, sql };
    let entries = found.entries;
    let bytes = entries.iter().map(|(_, e)| e.size as usize).sum();
    let mut frame = PulledFrame::with_capacity(bytes);
    let caught_up = found.next_offset >= found.max_offset;
    let inline = if caught_up { entries.len() } else { entries.len().min(INLINE_READS) };
    let next = pulled.read(&entries[..inline], 0, true, &mut frame)?;
    if next < entries.len() {
        frame = tokio::task::spawn_blocking(move || -> Result<PulledFrame, Error> {
            pulled.read(&entries, next, false, &mut frame)?;
            Ok(frame)
        })
        .await
        .map_err(|e| Error::Busy(e.to_string()))??;
    }
    core.traffic.delivered(frame.len());
    if !frame.is_empty() {
        core.metrics.delivered(topic).add(MessageType::Normal, frame.len() as u64, bytes as u64);
    }
    Ok(PulledAnswer { frame, offsets: (found.next_offset, found.min_offset, found.max_offset) })
}

/// When the message at `offset` of `topic`/`queue` was stored, if there is
/// one (the age of a group's oldest unconsumed message, for metrics).
pub async fn stored_at(core: &BrokerCore, topic: &str, queue: u32, offset: u64) -> Option<i64> {
    let ask = Pull {
        offset,
        max_messages: 1,
        max_bytes: 1 << 20,
        filter: Arc::new(TagFilter::All),
        long_poll: Duration::ZERO,
        cut_short: None,
    };
    let found = core.registry.queue(topic, queue).send(ask).await.ok()?.ok()?;
    let (_, entry) = found.entries.first()?;
    let (reader, (at, size)) = (core.reader.clone(), (entry.log_offset, entry.size));
    let record = tokio::task::spawn_blocking(move || reader.read(at, size)).await.ok()?.ok()?;
    Some(record.head.store_ts)
}

/// Records a pull that leaves a backlog behind it reads on the
/// connection's thread at most.
const INLINE_READS: usize = 32;

/// How a pull turns consume-queue entries into messages.
struct Pulled {
    reader: LogReader,
    broker: std::net::SocketAddr,
    filter: Arc<TagFilter>,
    sql: Option<Arc<Expr>>,
}

impl Pulled {
    /// Reads `entries` from `from` into `out`, in order, keeping those the
    /// filters accept. With `cached_only` it stops at the first record not in
    /// the page cache; returns where it stopped.
    fn read(
        &self,
        entries: &[(u64, CqEntry)],
        from: usize,
        cached_only: bool,
        out: &mut PulledFrame,
    ) -> Result<usize, Error> {
        let entries = entries.get(from..).unwrap_or(&[]);
        let at: Vec<(u64, u32)> = entries.iter().map(|(_, e)| (e.log_offset, e.size)).collect();
        let each = |i: usize, bytes: &[u8]| {
            let (queue_offset, entry) = &entries[i];
            self.keep(*queue_offset, entry, bytes, out)
        };
        let read = if cached_only { self.reader.read_cached(&at, each)? } else { self.reader.read_many(&at, each)? };
        Ok(from + read)
    }

    /// Adds the checked record `bytes` to `out` if the filters accept it,
    /// encoding it from its fields in place.
    fn keep(&self, queue_offset: u64, entry: &CqEntry, bytes: &[u8], out: &mut PulledFrame) -> Result<(), Error> {
        let corrupt = |reason| Error::Corrupt { offset: entry.log_offset, reason };
        let rec = record::view(bytes).map_err(corrupt)?;
        let keys: SmallVec<[&str; 4]> = rec.keys().collect::<Result<_, _>>().map_err(corrupt)?;
        let pairs: SmallVec<[(&str, &str); 8]> = rec.properties().collect::<Result<_, _>>().map_err(corrupt)?;
        // The hash pass can collide; the tag string decides.
        if !self.filter.matches(rec.tags) {
            return Ok(());
        }
        let properties = sorted_properties(pairs.into_iter());
        let fields = Fields { properties: &properties, tags: rec.tags };
        if self.sql.as_ref().is_some_and(|expr| !expr.matches(&fields)) {
            return Ok(());
        }
        let (origin, reconsume_times) = record::lineage(entry.log_offset, |name| fields.property(name));
        let mut hex = [0u8; 56];
        let msg = StoredMessageOut {
            msg_id: MessageId { broker: self.broker, log_offset: origin }.hex_into(&mut hex),
            queue: rec.head.queue_id,
            queue_offset,
            log_offset: entry.log_offset,
            store_ts: rec.head.store_ts,
            flags: rec.head.flags,
            reconsume_times,
            message: MessageOut {
                topic: rec.topic,
                tags: rec.tags,
                keys: &keys,
                properties: &properties,
                body: rec.body,
                born_ts: rec.head.born_ts,
            },
        };
        // Encoding fails only if the room made for it was short: a bug,
        // reported with the record it met.
        out.push(&msg).map_err(|e| corrupt(format!("answer not encoded: {e}")))
    }
}

/// A record's properties as the owned message's map holds them: sorted by
/// name, and a name given twice with its last value. Records the broker or
/// this crate's client wrote are sorted already.
fn sorted_properties<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> SmallVec<[(&'a str, &'a str); 8]> {
    let mut pairs: SmallVec<[(&str, &str); 8]> = pairs.collect();
    if !pairs.windows(2).all(|w| w[0].0 < w[1].0) {
        // Reversed, a stable sort puts each name's last value first, and
        // dedup keeps the first of each run.
        pairs.reverse();
        pairs.sort_by_key(|(name, _)| *name);
        pairs.dedup_by_key(|(name, _)| *name);
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::sorted_properties;
    use std::collections::BTreeMap;

    #[test]
    fn stored_properties_are_answered_as_the_owned_map_holds_them() {
        let cases: [&[(&str, &str)]; 6] = [
            &[],
            &[("a", "1")],
            &[("a", "1"), ("b", "2"), ("c", "3")],
            &[("c", "3"), ("a", "1"), ("b", "2")],
            // A name given twice keeps its last value, wherever it sits.
            &[("b", "old"), ("a", "1"), ("b", "new")],
            &[("x", "1"), ("x", "2"), ("a", "0"), ("x", "3"), ("a", "9")],
        ];
        for pairs in cases {
            let map: BTreeMap<&str, &str> = pairs.iter().copied().collect();
            let expected: Vec<(&str, &str)> = map.into_iter().collect();
            assert_eq!(sorted_properties(pairs.iter().copied()).to_vec(), expected, "{pairs:?}");
        }
    }
}
