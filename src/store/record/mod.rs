//! The commit-log record: its byte layout (docs/FORMAT.md is the reference
//! and must stay in step), encoding, patching and checked decoding.
//!
//! A record is encoded once, off the writer, by the connection that received
//! the message. The queue actor patches in the queue offset, and the writer
//! patches in the commit-log offset and store time and then computes the CRC,
//! so the io thread only moves bytes and checksums. Reading — the scan
//! recovery does, checks and decoding — is in `read.rs`.

mod read;

pub use read::*;

use brook_proto::{Message, MessageRef, ProducerSeq};

/// Marks a message record.
pub const RECORD_MAGIC: u32 = 0x4252_4B31; // "BRK1"
/// Marks the padding that fills a segment's tail when the next record does
/// not fit; readers skip to the next segment.
pub const PAD_MAGIC: u32 = 0x4252_4B50; // "BRKP"
/// Record format version of a record without an idempotent producer's
/// fields (every record before version 2 existed, and every record the
/// broker writes itself).
pub const FORMAT_VERSION: u8 = 1;
/// Record format version of a record carrying an idempotent producer's id,
/// epoch and sequence ([`PRODUCER_LEN`] bytes after the fixed header).
pub const FORMAT_VERSION_PRODUCER: u8 = 2;
/// Bytes of the fixed header, before the variable-length sections (and
/// before the producer's fields in a version-2 record).
pub const HEADER_LEN: usize = 76;
/// Bytes of a version-2 record's producer fields: id u64, epoch u32,
/// sequence u32.
pub const PRODUCER_LEN: usize = 16;
/// The smallest padding record (length + magic). A segment tail shorter than
/// this is left as zeros and skipped by position.
pub const PAD_MIN: usize = 8;

pub(super) const POS_LEN: usize = 0;
pub(super) const POS_MAGIC: usize = 4;
pub(super) const POS_CRC: usize = 8;
pub(super) const POS_VERSION: usize = 12;
pub(super) const POS_TOPIC_LEN: usize = 14;
pub(super) const POS_FLAGS: usize = 16;
pub(super) const POS_QUEUE_ID: usize = 20;
pub(super) const POS_QUEUE_OFFSET: usize = 24;
pub(super) const POS_LOG_OFFSET: usize = 32;
pub(super) const POS_BORN_TS: usize = 40;
pub(super) const POS_STORE_TS: usize = 48;
pub(super) const POS_TAG_HASH: usize = 56;
pub(super) const POS_BODY_LEN: usize = 64;
pub(super) const POS_TAGS_LEN: usize = 68;
pub(super) const POS_KEYS_LEN: usize = 70;
pub(super) const POS_PROPS_LEN: usize = 72;
/// The CRC covers everything after the CRC field.
pub(super) const CRC_FROM: usize = 12;
pub(super) const POS_PRODUCER_ID: usize = 76;
pub(super) const POS_PRODUCER_EPOCH: usize = 84;
pub(super) const POS_SEQUENCE: usize = 88;

/// Largest single string (topic, tag, key, property name or value), so that
/// every length fits its u16 field.
pub const MAX_STRING_LEN: usize = u16::MAX as usize;

/// The 64-bit FNV-1a hash of a tag: what consume-queue entries carry so the
/// broker can filter without reading the log. 0 means "no tag".
pub fn tag_hash(tags: Option<&str>) -> u64 {
    match tags {
        None | Some("") => 0,
        Some(tag) => brook_proto::hash::fnv1a64(tag).max(1),
    }
}

/// Why a message cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A string field is longer than its length field allows.
    #[error("{field} is {len} bytes; at most {MAX_STRING_LEN} allowed")]
    FieldTooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// A section is larger than its length field allows.
    #[error("{field} section too large")]
    SectionTooLarge {
        /// Which section.
        field: &'static str,
    },
}

fn check_len(field: &'static str, len: usize) -> Result<(), EncodeError> {
    if len > MAX_STRING_LEN {
        Err(EncodeError::FieldTooLong { field, len })
    } else {
        Ok(())
    }
}

/// The parts a record is made of. Owned messages and messages read in
/// place from a send's frame both provide them, so both encode one way.
pub trait RecordSource {
    /// Topic.
    fn topic(&self) -> &str;
    /// Tag, if any.
    fn tags(&self) -> Option<&str>;
    /// Keys, in order.
    fn keys(&self) -> impl Iterator<Item = &str>;
    /// Properties as (name, value), in order.
    fn properties(&self) -> impl Iterator<Item = (&str, &str)>;
    /// Body.
    fn body(&self) -> &[u8];
    /// Producer's creation time.
    fn born_ts(&self) -> i64;
}

impl RecordSource for Message {
    fn topic(&self) -> &str {
        &self.topic
    }
    fn tags(&self) -> Option<&str> {
        self.tags.as_deref()
    }
    fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(String::as_str)
    }
    fn properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.properties.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
    fn body(&self) -> &[u8] {
        &self.body
    }
    fn born_ts(&self) -> i64 {
        self.born_ts
    }
}

impl RecordSource for MessageRef<'_> {
    fn topic(&self) -> &str {
        self.topic
    }
    fn tags(&self) -> Option<&str> {
        self.tags
    }
    fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().copied()
    }
    fn properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.properties.0.iter().copied()
    }
    fn body(&self) -> &[u8] {
        self.body
    }
    fn born_ts(&self) -> i64 {
        self.born_ts
    }
}

fn keys_len(msg: &impl RecordSource) -> usize {
    msg.keys().map(|k| 2 + k.len()).sum()
}

fn properties_len(msg: &impl RecordSource) -> usize {
    msg.properties().map(|(k, v)| 4 + k.len() + v.len()).sum()
}

/// A record's size given its keys' and properties' sections (without
/// producer fields).
fn total_len(msg: &impl RecordSource, keys_len: usize, props_len: usize) -> usize {
    HEADER_LEN + msg.topic().len() + msg.tags().map_or(0, str::len) + keys_len + props_len + msg.body().len()
}

/// The size a message will take in the log without producer fields (an
/// idempotent send's records take [`PRODUCER_LEN`] more each).
pub fn encoded_len(msg: &impl RecordSource) -> usize {
    total_len(msg, keys_len(msg), properties_len(msg))
}

struct Sizes {
    keys_len: usize,
    props_len: usize,
    total: usize,
}

/// Checks every field against its length field and measures the record.
fn measure(msg: &impl RecordSource) -> Result<Sizes, EncodeError> {
    check_len("topic", msg.topic().len())?;
    check_len("tags", msg.tags().map_or(0, str::len))?;
    for key in msg.keys() {
        check_len("key", key.len())?;
    }
    let keys_len = keys_len(msg);
    if keys_len > MAX_STRING_LEN {
        return Err(EncodeError::SectionTooLarge { field: "keys" });
    }
    for (name, value) in msg.properties() {
        check_len("property name", name.len())?;
        check_len("property value", value.len())?;
    }
    let props_len = properties_len(msg);
    Ok(Sizes { keys_len, props_len, total: total_len(msg, keys_len, props_len) })
}

/// The size `msg` will take in the log without producer fields, or why it
/// cannot be encoded: a send checks its messages with this before anything
/// is stored.
pub fn checked_len(msg: &impl RecordSource) -> Result<usize, EncodeError> {
    measure(msg).map(|sizes| sizes.total)
}

/// Appends one encoded record to `out` with queue offset, log offset, store
/// time and CRC left zero (they are patched in later). Returns its length.
pub fn encode_into(
    out: &mut Vec<u8>,
    msg: &impl RecordSource,
    queue_id: u32,
    flags: u32,
) -> Result<usize, EncodeError> {
    encode_with_code(out, msg, queue_id, flags, tag_hash(msg.tags()))
}

/// [`encode_into`] with the tag-code field given: records in the delay
/// topics carry their delivery time there (as RocketMQ's schedule topic
/// does), so consume-queue entries — and their rebuild by recovery — tell
/// when each is due without reading the log.
pub fn encode_with_code(
    out: &mut Vec<u8>,
    msg: &impl RecordSource,
    queue_id: u32,
    flags: u32,
    tag_code: u64,
) -> Result<usize, EncodeError> {
    encode_record(out, msg, RecordMeta { queue_id, flags, tag_code, producer: None })
}

/// What a record carries besides its message.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordMeta {
    /// Queue id.
    pub queue_id: u32,
    /// Flags (0: none are assigned yet).
    pub flags: u32,
    /// The tag hash (or, in the delay topics, the due time).
    pub tag_code: u64,
    /// An idempotent producer's id, epoch and this record's own sequence
    /// number: the record is written in format version 2.
    pub producer: Option<ProducerSeq>,
}

/// Appends one encoded record to `out` with queue offset, log offset, store
/// time and CRC left zero (they are patched in later). Returns its length.
pub fn encode_record(out: &mut Vec<u8>, msg: &impl RecordSource, meta: RecordMeta) -> Result<usize, EncodeError> {
    let Sizes { keys_len, props_len, total } = measure(msg)?;
    let total = total + if meta.producer.is_some() { PRODUCER_LEN } else { 0 };
    let (topic, tags, body) = (msg.topic(), msg.tags().unwrap_or(""), msg.body());
    let (Ok(total32), Ok(body_len), Ok(props32)) =
        (u32::try_from(total), u32::try_from(body.len()), u32::try_from(props_len))
    else {
        return Err(EncodeError::SectionTooLarge { field: "record" });
    };
    out.reserve(total);
    out.extend_from_slice(&total32.to_le_bytes());
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // crc
    out.push(if meta.producer.is_some() { FORMAT_VERSION_PRODUCER } else { FORMAT_VERSION });
    out.push(0); // reserved
    out.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    out.extend_from_slice(&meta.flags.to_le_bytes());
    out.extend_from_slice(&meta.queue_id.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // queue offset
    out.extend_from_slice(&0u64.to_le_bytes()); // log offset
    out.extend_from_slice(&msg.born_ts().to_le_bytes());
    out.extend_from_slice(&0i64.to_le_bytes()); // store ts
    out.extend_from_slice(&meta.tag_code.to_le_bytes());
    out.extend_from_slice(&body_len.to_le_bytes());
    out.extend_from_slice(&(tags.len() as u16).to_le_bytes());
    out.extend_from_slice(&(keys_len as u16).to_le_bytes());
    out.extend_from_slice(&props32.to_le_bytes());
    if let Some(producer) = meta.producer {
        out.extend_from_slice(&producer.producer_id.to_le_bytes());
        out.extend_from_slice(&producer.epoch.to_le_bytes());
        out.extend_from_slice(&producer.sequence.to_le_bytes());
    }
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(tags.as_bytes());
    for key in msg.keys() {
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
    }
    for (name, value) in msg.properties() {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(body);
    Ok(total)
}

fn put_u64(buf: &mut [u8], pos: usize, value: u64) {
    if let Some(slot) = buf.get_mut(pos..pos + 8) {
        slot.copy_from_slice(&value.to_le_bytes());
    }
}

/// Sets the queue offset of the record starting at `buf[0]`.
pub fn patch_queue_offset(buf: &mut [u8], queue_offset: u64) {
    put_u64(buf, POS_QUEUE_OFFSET, queue_offset);
}

/// Sets log offset and store time, then seals the record with its CRC.
/// `buf` is exactly one record.
pub fn seal(buf: &mut [u8], log_offset: u64, store_ts: i64) {
    put_u64(buf, POS_LOG_OFFSET, log_offset);
    put_u64(buf, POS_STORE_TS, store_ts as u64);
    if let Some(covered) = buf.get(CRC_FROM..) {
        let crc = crc32c::crc32c(covered);
        if let Some(slot) = buf.get_mut(POS_CRC..POS_CRC + 4) {
            slot.copy_from_slice(&crc.to_le_bytes());
        }
    }
}

/// The 8 bytes that open a padding record of `len` bytes (the rest is zeros).
pub fn pad_header(len: u32) -> [u8; PAD_MIN] {
    let mut out = [0u8; PAD_MIN];
    out[..4].copy_from_slice(&len.to_le_bytes());
    out[4..].copy_from_slice(&PAD_MAGIC.to_le_bytes());
    out
}

/// The length the record at the start of `buf` states in its header (0:
/// too few bytes to say); whether it is whole or sound is for [`scan`].
pub fn stated_len(buf: &[u8]) -> u64 {
    u64::from(u32_at(buf, 0))
}

pub(super) fn u16_at(buf: &[u8], pos: usize) -> u16 {
    buf.get(pos..pos + 2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
}

pub(super) fn u32_at(buf: &[u8], pos: usize) -> u32 {
    buf.get(pos..pos + 4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub(super) fn u64_at(buf: &[u8], pos: usize) -> u64 {
    buf.get(pos..pos + 8).map_or(0, |b| {
        let mut arr = [0u8; 8];
        arr.copy_from_slice(b);
        u64::from_le_bytes(arr)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message::new("orders", b"payload".to_vec())
            .with_tags("TagA")
            .with_key("order-1")
            .with_key("k2")
            .with_property("a", "1")
    }

    fn sealed(msg: &Message, log_offset: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        let len = encode_into(&mut buf, msg, 3, 0).expect("encode");
        assert_eq!(len, buf.len());
        assert_eq!(len, encoded_len(msg));
        patch_queue_offset(&mut buf, 42);
        seal(&mut buf, log_offset, 1234);
        buf
    }

    /// A broken key or property section is refused by name, by the full
    /// decode and by the in-place view's iterators alike.
    #[test]
    fn broken_keys_and_properties_are_named() {
        let msg = sample();
        let keys_at = HEADER_LEN + "orders".len() + "TagA".len();
        let props_at = keys_at + 2 + "order-1".len() + 2 + "k2".len();
        let mut bad_key = sealed(&msg, 0);
        bad_key[keys_at + 2] = 0xFF;
        let mut overrun = sealed(&msg, 0);
        overrun[props_at + 3..props_at + 5].copy_from_slice(&100u16.to_le_bytes());
        // One 4-byte name ("a", then the old value's length and byte): no value left.
        let mut lone_name = sealed(&msg, 0);
        lone_name[props_at..props_at + 2].copy_from_slice(&4u16.to_le_bytes());
        for (buf, why) in [
            (bad_key, "string is not UTF-8"),
            (overrun, "string runs past its section"),
            (lone_name, "property without a value"),
        ] {
            assert_eq!(decode(&buf).map(|_| ()), Err(why.to_string()));
            let view = view(&buf).expect("fixed fields are whole");
            let keys: Result<Vec<_>, _> = view.keys().collect();
            let props: Result<Vec<_>, _> = view.properties().collect();
            assert_eq!(keys.err().or(props.err()), Some(why.to_string()));
        }
    }

    #[test]
    fn encode_seal_decode_round_trip() {
        let msg = sample();
        let buf = sealed(&msg, 4096);
        assert_eq!(check(&buf, 4096), Ok(buf.len()));
        let rec = decode(&buf).expect("decode");
        assert_eq!(rec.message, msg);
        assert_eq!(rec.head.queue_offset, 42);
        assert_eq!(rec.head.queue_id, 3);
        assert_eq!(rec.head.log_offset, 4096);
        assert_eq!(rec.head.store_ts, 1234);
        assert_eq!(rec.head.tag_hash, tag_hash(Some("TagA")));
        assert_eq!(topic(&buf), "orders");
    }

    #[test]
    fn a_message_read_in_place_encodes_as_its_owned_form() {
        let msg = sample().with_property("b", "2");
        let frame = brook_proto::codec::encode_frame(&brook_proto::Frame::Oneway {
            body: brook_proto::Request::Send {
                topic: "orders".into(),
                queue: 3,
                messages: vec![msg.clone()],
                producer: None,
            },
        })
        .expect("frame");
        let mut codec = brook_proto::BrokerCodec::new(1 << 20);
        let mut wire = bytes::BytesMut::from(&frame[..]);
        let Some(brook_proto::Incoming::Send { body, .. }) =
            tokio_util::codec::Decoder::decode(&mut codec, &mut wire).expect("decode")
        else {
            panic!("expected a send");
        };
        let send = brook_proto::codec::decode_send(&body).expect("fields");
        let (mut owned, mut in_place) = (Vec::new(), Vec::new());
        encode_into(&mut owned, &msg, 3, 0).expect("owned");
        encode_into(&mut in_place, &send.messages[0], 3, 0).expect("in place");
        assert_eq!(owned, in_place);
        assert_eq!(checked_len(&send.messages[0]), Ok(owned.len()));
    }

    /// A version-2 record: the producer's fields after the fixed header.
    fn sealed_with_producer(msg: &Message, log_offset: u64) -> Vec<u8> {
        let mut buf = Vec::new();
        let producer = Some(ProducerSeq { producer_id: 0x0102_0304_0506_0708, epoch: 9, sequence: 77 });
        let meta = RecordMeta { queue_id: 3, flags: 0, tag_code: tag_hash(msg.tags.as_deref()), producer };
        encode_record(&mut buf, msg, meta).expect("encode");
        patch_queue_offset(&mut buf, 42);
        seal(&mut buf, log_offset, 1234);
        buf
    }

    #[test]
    fn a_record_with_producer_fields_reads_back_whole() {
        let msg = sample().with_property("b", "2");
        let plain = sealed(&msg, 4096);
        let buf = sealed_with_producer(&msg, 4096);
        assert_eq!(buf.len(), plain.len() + PRODUCER_LEN);
        assert_eq!(buf[POS_VERSION], FORMAT_VERSION_PRODUCER);
        assert_eq!(check(&buf, 4096), Ok(buf.len()));
        assert_eq!(scan(&buf, 4096), Scan::Record(buf.len()));
        let rec = decode(&buf).expect("decode");
        assert_eq!(rec.message, msg);
        assert_eq!(rec.head.producer, Some(ProducerSeq { producer_id: 0x0102_0304_0506_0708, epoch: 9, sequence: 77 }));
        assert_eq!((rec.head.queue_offset, rec.head.queue_id, rec.head.store_ts), (42, 3, 1234));
        assert_eq!(topic(&buf), "orders");
        assert_eq!(decode(&plain).expect("plain").head.producer, None);
        // A version this build does not know is refused, not misread.
        let mut future = buf.clone();
        future[POS_VERSION] = 3;
        seal(&mut future, 4096, 1234);
        assert!(matches!(scan(&future, 4096), Scan::Corrupt(reason) if reason.contains("version")));
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(!matches!(scan(&bad, 4096), Scan::Record(_)), "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let buf = sealed(&sample(), 0);
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(!matches!(scan(&bad, 0), Scan::Record(_)), "flip at {i} went unnoticed");
        }
    }

    #[test]
    fn scan_tells_end_pad_torn_and_misplaced() {
        assert_eq!(scan(&[0u8; 100], 0), Scan::End);
        assert_eq!(scan(&[0u8; 3], 0), Scan::End);
        let mut pad = pad_header(64).to_vec();
        pad.resize(64, 0);
        assert_eq!(scan(&pad, 0), Scan::Pad);
        let buf = sealed(&sample(), 100);
        assert!(matches!(scan(&buf[..buf.len() - 1], 100), Scan::Corrupt(_)));
        assert!(matches!(scan(&buf, 200), Scan::Corrupt(_)));
        assert_eq!(scan(&buf, 100), Scan::Record(buf.len()));
    }

    #[test]
    fn oversized_fields_are_refused() {
        let mut msg = sample();
        msg.keys = vec!["k".repeat(MAX_STRING_LEN + 1)];
        assert!(encode_into(&mut Vec::new(), &msg, 0, 0).is_err());
    }
}
