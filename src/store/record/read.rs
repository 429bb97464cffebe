//! Reading records: what recovery's scan finds at a position, the checks a
//! read makes (length, magic, CRC), the fixed head, and decoding in place
//! ([`RecordView`]) or in full ([`DecodedRecord`]).

use super::*;
use brook_proto::system::{PROP_ORIGIN_LOG_OFFSET, PROP_RECONSUME_TIMES};
use brook_proto::{Message, MessageId, ProducerSeq, StoredMessage};

/// What lies at a position of a segment, as recovery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// A valid record of this many bytes.
    Record(usize),
    /// Padding: the segment's data ends here.
    Pad,
    /// Zeros (never written): the log ends here.
    End,
    /// A torn or damaged record: the log ends here and the rest is garbage.
    Corrupt(String),
}

/// Classifies the bytes at the start of `buf` (which runs to the end of the
/// segment or of what was read) at log offset `log_offset`.
pub fn scan(buf: &[u8], log_offset: u64) -> Scan {
    if buf.len() < PAD_MIN {
        return if buf.iter().all(|b| *b == 0) {
            Scan::End
        } else {
            Scan::Corrupt("non-zero bytes in a segment tail too short for a record".into())
        };
    }
    let len = u32_at(buf, POS_LEN) as usize;
    let magic = u32_at(buf, POS_MAGIC);
    match magic {
        0 if len == 0 => Scan::End,
        PAD_MAGIC if len >= PAD_MIN && len <= buf.len() => Scan::Pad,
        RECORD_MAGIC => match check(buf, log_offset) {
            Ok(len) => Scan::Record(len),
            Err(reason) => Scan::Corrupt(reason),
        },
        _ => Scan::Corrupt(format!("bad magic {magic:#x} with length {len}")),
    }
}

/// Verifies the record at the start of `buf`: length, version, CRC, stored
/// log offset and section lengths. Returns its length.
pub fn check(buf: &[u8], log_offset: u64) -> Result<usize, String> {
    let len = u32_at(buf, POS_LEN) as usize;
    if len < HEADER_LEN {
        return Err(format!("length {len} is shorter than a header"));
    }
    let Some(record) = buf.get(..len) else {
        return Err(format!("record of {len} bytes is cut short at {}", buf.len()));
    };
    if u32_at(record, POS_MAGIC) != RECORD_MAGIC {
        return Err("bad magic".into());
    }
    let stored_crc = u32_at(record, POS_CRC);
    let crc = record.get(CRC_FROM..).map_or(0, crc32c::crc32c);
    if crc != stored_crc {
        return Err(format!("crc mismatch: stored {stored_crc:#x}, computed {crc:#x}"));
    }
    let Some(header) = header_len(record) else {
        return Err(format!("unknown format version {}", record.get(POS_VERSION).copied().unwrap_or(0)));
    };
    let stored_offset = u64_at(record, POS_LOG_OFFSET);
    if stored_offset != log_offset {
        return Err(format!("record says log offset {stored_offset}, found at {log_offset}"));
    }
    let sections = usize::from(u16_at(record, POS_TOPIC_LEN))
        + u32_at(record, POS_BODY_LEN) as usize
        + usize::from(u16_at(record, POS_TAGS_LEN))
        + usize::from(u16_at(record, POS_KEYS_LEN))
        + u32_at(record, POS_PROPS_LEN) as usize;
    if header + sections != len {
        return Err(format!("sections add up to {} but length is {len}", header + sections));
    }
    Ok(len)
}

/// Where a record's sections start: after the fixed header, and after the
/// producer's fields in a version-2 record; `None` for a version this build
/// does not know.
fn header_len(record: &[u8]) -> Option<usize> {
    match record.get(POS_VERSION).copied() {
        Some(FORMAT_VERSION) => Some(HEADER_LEN),
        Some(FORMAT_VERSION_PRODUCER) => Some(HEADER_LEN + PRODUCER_LEN),
        _ => None,
    }
}

/// The fixed fields of a record, enough to rebuild a consume-queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHead {
    /// Total length.
    pub len: u32,
    /// Flags.
    pub flags: u32,
    /// Queue id.
    pub queue_id: u32,
    /// Offset in its queue.
    pub queue_offset: u64,
    /// Offset in the commit log.
    pub log_offset: u64,
    /// Producer's timestamp.
    pub born_ts: i64,
    /// Broker's timestamp.
    pub store_ts: i64,
    /// Tag hash.
    pub tag_hash: u64,
    /// The idempotent producer's id, epoch and this record's sequence
    /// number (version-2 records only).
    pub producer: Option<ProducerSeq>,
}

/// Reads the fixed fields of an already checked record.
pub fn head(buf: &[u8]) -> RecordHead {
    RecordHead {
        len: u32_at(buf, POS_LEN),
        flags: u32_at(buf, POS_FLAGS),
        queue_id: u32_at(buf, POS_QUEUE_ID),
        queue_offset: u64_at(buf, POS_QUEUE_OFFSET),
        log_offset: u64_at(buf, POS_LOG_OFFSET),
        born_ts: u64_at(buf, POS_BORN_TS) as i64,
        store_ts: u64_at(buf, POS_STORE_TS) as i64,
        tag_hash: u64_at(buf, POS_TAG_HASH),
        producer: (buf.get(POS_VERSION).copied() == Some(FORMAT_VERSION_PRODUCER)).then(|| ProducerSeq {
            producer_id: u64_at(buf, POS_PRODUCER_ID),
            epoch: u32_at(buf, POS_PRODUCER_EPOCH),
            sequence: u32_at(buf, POS_SEQUENCE),
        }),
    }
}

/// The topic of an already checked record.
pub fn topic(buf: &[u8]) -> &str {
    let len = usize::from(u16_at(buf, POS_TOPIC_LEN));
    let from = header_len(buf).unwrap_or(HEADER_LEN);
    buf.get(from..from + len).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("")
}

/// A record decoded in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    /// The fixed fields.
    pub head: RecordHead,
    /// The message as produced.
    pub message: Message,
}

/// A checked record's fields, borrowed from its bytes: what a pull encodes
/// its answer from without building the owned [`Message`].
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// The fixed fields.
    pub head: RecordHead,
    /// The topic.
    pub topic: &'a str,
    /// The tag (`None` when empty).
    pub tags: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
    keys: &'a [u8],
    properties: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// The keys, in stored order.
    pub fn keys(&self) -> impl Iterator<Item = Result<&'a str, String>> + 'a {
        Strings(self.keys)
    }

    /// The properties as (name, value), in stored order (a foreign client
    /// may have sent them unsorted, or a name twice); `Err` names a broken
    /// string or a name without a value.
    pub fn properties(&self) -> impl Iterator<Item = Result<(&'a str, &'a str), String>> + 'a {
        let mut strings = Strings(self.properties);
        std::iter::from_fn(move || {
            let name = strings.next()?;
            Some(match (name, strings.next()) {
                (Ok(name), Some(Ok(value))) => Ok((name, value)),
                (Err(e), _) | (_, Some(Err(e))) => Err(e),
                (Ok(_), None) => Err("property without a value".into()),
            })
        })
    }
}

/// The length-prefixed strings of a keys or properties section.
struct Strings<'a>(&'a [u8]);

impl<'a> Iterator for Strings<'a> {
    type Item = Result<&'a str, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let Some(bytes) = self.0.get(2..2 + usize::from(u16_at(self.0, 0))) else {
            self.0 = &[];
            return Some(Err("string runs past its section".into()));
        };
        self.0 = &self.0[2 + bytes.len()..];
        Some(std::str::from_utf8(bytes).map_err(|_| "string is not UTF-8".to_string()))
    }
}

/// Reads a checked record's fields in place; `Err` names the broken field.
/// Keys and properties are checked as they are read ([`RecordView::keys`],
/// [`RecordView::properties`]), in one pass.
pub fn view(buf: &[u8]) -> Result<RecordView<'_>, String> {
    let Some(header) = header_len(buf).filter(|header| buf.len() >= *header) else {
        return Err(format!("record of {} bytes is shorter than its header or of an unknown version", buf.len()));
    };
    let mut pos = header;
    let mut take = |len: usize| -> Result<&[u8], String> {
        let part =
            buf.get(pos..pos + len).ok_or_else(|| format!("section at {pos} of {len} bytes runs past the record"))?;
        pos += len;
        Ok(part)
    };
    let utf8 = |bytes, what: &str| std::str::from_utf8(bytes).map_err(|_| format!("{what} is not UTF-8"));
    let topic = utf8(take(usize::from(u16_at(buf, POS_TOPIC_LEN)))?, "topic")?;
    let tags = utf8(take(usize::from(u16_at(buf, POS_TAGS_LEN)))?, "tags")?;
    let keys = take(usize::from(u16_at(buf, POS_KEYS_LEN)))?;
    let properties = take(u32_at(buf, POS_PROPS_LEN) as usize)?;
    let body = take(u32_at(buf, POS_BODY_LEN) as usize)?;
    Ok(RecordView { head: head(buf), topic, tags: (!tags.is_empty()).then_some(tags), body, keys, properties })
}

/// Decodes a checked record into its fields; `Err` names the broken field.
pub fn decode(buf: &[u8]) -> Result<DecodedRecord, String> {
    let view = view(buf)?;
    Ok(DecodedRecord {
        head: view.head,
        message: Message {
            topic: view.topic.to_string(),
            tags: view.tags.map(str::to_string),
            keys: view.keys().map(|k| k.map(str::to_string)).collect::<Result<_, _>>()?,
            // Collected, a name given twice keeps its last value.
            properties: view
                .properties()
                .map(|p| p.map(|(k, v)| (k.to_string(), v.to_string())))
                .collect::<Result<_, _>>()?,
            body: view.body.to_vec(),
            born_ts: view.head.born_ts,
        },
    })
}

impl DecodedRecord {
    /// The record as a consumer sees it, stored at `log_offset` by the broker
    /// at `broker`. Copies the broker made (delayed, retried, dead-lettered,
    /// committed) carry the id of the message the producer sent.
    pub fn to_stored_message(self, broker: std::net::SocketAddr, log_offset: u64, queue_offset: u64) -> StoredMessage {
        let props = &self.message.properties;
        let (origin, reconsume_times) = lineage(log_offset, |name| props.get(name).map(String::as_str));
        StoredMessage {
            msg_id: MessageId { broker, log_offset: origin }.to_hex(),
            queue: self.head.queue_id,
            queue_offset,
            log_offset,
            store_ts: self.head.store_ts,
            flags: self.head.flags,
            reconsume_times,
            message: self.message,
        }
    }
}

/// Where the message at `log_offset` was first stored (its id names that
/// record) and how often it was retried, from its properties.
pub fn lineage<'a>(log_offset: u64, property: impl Fn(&str) -> Option<&'a str>) -> (u64, u32) {
    let origin = property(PROP_ORIGIN_LOG_OFFSET).and_then(|o| o.parse().ok()).unwrap_or(log_offset);
    (origin, property(PROP_RECONSUME_TIMES).and_then(|n| n.parse().ok()).unwrap_or(0))
}
