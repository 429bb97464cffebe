//! Frames on the wire: a 4-byte big-endian body length, then the bincode 2
//! (serde, standard config) body. The length is checked against the maximum
//! before anything is allocated, and decoding is bounded so that a lying
//! length inside the body cannot make the reader allocate without limit.

use crate::frame::Frame;
use crate::message::StoredMessageOut;
use crate::request::{PullResult, Response, SendRef};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// bincode's decode budget: how many bytes a body may claim to contain, summed
/// over its containers. Claims are checked before allocation, so garbage can
/// never ask for more than this.
const DECODE_LIMIT: usize = 4 * crate::MAX_FRAME_BYTES_CEILING;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The length prefix is over the maximum; the stream cannot be trusted
    /// past this point.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Maximum allowed.
        max: usize,
    },
    /// The body did not decode as a frame.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A send claims more messages than a send may carry; refused before
    /// any of them is decoded.
    #[error("a send carries 1..={max} messages, got {count}")]
    TooManyMessages {
        /// Messages claimed.
        count: u64,
        /// Most allowed.
        max: usize,
    },
    /// The frame to send could not be encoded.
    #[error("cannot encode frame: {0}")]
    Encode(String),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Length-prefixed bincode frames for tokio-util's `Framed`.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame: usize,
}

impl FrameCodec {
    /// A codec that refuses frames over `max_frame` bytes (clamped to
    /// [`crate::MAX_FRAME_BYTES_CEILING`]).
    pub fn new(max_frame: usize) -> Self {
        Self { max_frame: max_frame.min(crate::MAX_FRAME_BYTES_CEILING) }
    }

    /// The maximum frame this codec accepts.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(crate::DEFAULT_MAX_FRAME_BYTES)
    }
}

/// Encodes one frame into a fresh buffer (prefix included); used by benches
/// and by callers that frame by hand.
pub fn encode_frame(frame: &Frame) -> Result<Vec<u8>, CodecError> {
    let mut out = BytesMut::new();
    FrameCodec::new(crate::MAX_FRAME_BYTES_CEILING).encode(frame.clone(), &mut out)?;
    Ok(out.to_vec())
}

/// Decodes one frame body (without the length prefix).
pub fn decode_body(body: &[u8]) -> Result<Frame, CodecError> {
    let (frame, used) = bincode::serde::decode_from_slice::<Frame, _>(body, bincode_config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Malformed(format!("{} trailing bytes after the frame", body.len() - used)));
    }
    Ok(frame)
}

impl FrameCodec {
    /// The length of the whole frame at the start of `src` (prefix
    /// included) once all of it is there.
    fn next_frame(&self, src: &mut BytesMut) -> Result<Option<usize>, CodecError> {
        let Some(prefix) = src.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > self.max_frame {
            return Err(CodecError::TooLarge { len, max: self.max_frame });
        }
        if src.len() < 4 + len {
            // Reserve only what the (already bounded) frame needs.
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        Ok(Some(4 + len))
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let Some(whole) = self.next_frame(src)? else {
            return Ok(None);
        };
        let frame = decode_body(&src[4..whole]);
        src.advance(whole);
        frame.map(Some)
    }
}

/// What the broker reads off a connection: a frame, or a send left
/// undecoded so the send path can read its messages in place
/// ([`decode_send`]) instead of allocating every field of every message.
#[derive(Debug)]
pub enum Incoming {
    /// Any frame but a send.
    Frame(Frame),
    /// A [`crate::Request::Send`] in a request (`id`) or one-way frame (`None`).
    Send {
        /// The request id to answer.
        id: Option<u64>,
        /// The send's fields, from its topic on (bincode, undecoded).
        body: Bytes,
    },
}

/// Where frame and request variants sit in their enums (bincode writes a
/// variant as its index); a unit test holds these to the derived encoding.
const FRAME_REQUEST: u32 = 0;
const FRAME_ONEWAY: u32 = 1;
const REQUEST_SEND: u32 = 5;

/// If `body` is a send, its request id and where its fields start.
fn send_fields_at(body: &[u8]) -> Option<(Option<u64>, usize)> {
    let config = bincode::config::standard();
    let (frame, mut at): (u32, usize) = bincode::decode_from_slice(body, config).ok()?;
    let id = match frame {
        FRAME_REQUEST => {
            let (id, used): (u64, usize) = bincode::decode_from_slice(body.get(at..)?, config).ok()?;
            at += used;
            Some(id)
        }
        FRAME_ONEWAY => None,
        _ => return None,
    };
    let (request, used): (u32, usize) = bincode::decode_from_slice(body.get(at..)?, config).ok()?;
    (request == REQUEST_SEND).then_some((id, at + used))
}

/// Decodes a send's fields as [`Incoming::Send`] carries them, borrowing
/// every string and body from `body`.
pub fn decode_send(body: &[u8]) -> Result<SendRef<'_>, CodecError> {
    // The message count comes right after topic and queue: checked first,
    // a lying count cannot make the decoder build millions of entries.
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[expect(dead_code, reason = "read only to reach the count behind it")]
        topic: &'a str,
        #[expect(dead_code, reason = "read only to reach the count behind it")]
        queue: u32,
        count: u64,
    }
    if let Ok((head, _)) = bincode::serde::borrow_decode_from_slice::<Head<'_>, _>(body, bincode_config()) {
        if head.count > crate::MAX_SEND_MESSAGES as u64 {
            return Err(CodecError::TooManyMessages { count: head.count, max: crate::MAX_SEND_MESSAGES });
        }
    }
    let (send, used) = bincode::serde::borrow_decode_from_slice::<SendRef<'_>, _>(body, bincode_config())
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Malformed(format!("{} trailing bytes after the frame", body.len() - used)));
    }
    Ok(send)
}

/// The broker's side of a connection. It reads [`FrameCodec`]'s frames,
/// with sends split off undecoded (a shared slice of the read buffer, not a
/// copy), and writes [`Outbound`]s.
#[derive(Debug, Clone)]
pub struct BrokerCodec(FrameCodec);

impl BrokerCodec {
    /// A codec that refuses frames over `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self(FrameCodec::new(max_frame))
    }
}

impl Decoder for BrokerCodec {
    type Item = Incoming;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, CodecError> {
        let Some(whole) = self.0.next_frame(src)? else {
            return Ok(None);
        };
        if let Some((id, at)) = send_fields_at(&src[4..whole]) {
            let mut frame = src.split_to(whole);
            frame.advance(4 + at);
            return Ok(Some(Incoming::Send { id, body: frame.freeze() }));
        }
        let frame = decode_body(&src[4..whole]);
        src.advance(whole);
        frame.map(|f| Some(Incoming::Frame(f)))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        let start = dst.len();
        dst.put_u32(0);
        let mut writer = dst.writer();
        bincode::serde::encode_into_std_write(&frame, &mut writer, bincode::config::standard())
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        let dst = writer.into_inner();
        let len = dst.len() - start - 4;
        if len > self.max_frame {
            dst.truncate(start);
            return Err(CodecError::TooLarge { len, max: self.max_frame });
        }
        dst[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }
}

/// What a connection writes: a frame to encode, or one encoded already (a
/// pull's answer, see [`PulledFrame`]).
#[derive(Debug)]
pub enum Outbound {
    /// A frame, encoded as it is written.
    Frame(Frame),
    /// A whole frame, length prefix included, within the codec's maximum;
    /// or the rest of one whose start a client wrote itself.
    Encoded(Bytes),
}

impl From<Frame> for Outbound {
    fn from(frame: Frame) -> Self {
        Outbound::Frame(frame)
    }
}

/// Frames and frames encoded already (or what is left of one a caller
/// began to write itself), in the order given.
impl Encoder<Outbound> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, out: Outbound, dst: &mut BytesMut) -> Result<(), CodecError> {
        match out {
            Outbound::Frame(frame) => self.encode(frame, dst),
            Outbound::Encoded(bytes) => {
                dst.extend_from_slice(&bytes);
                Ok(())
            }
        }
    }
}

/// The broker writes frames and frames encoded already.
impl Encoder<Outbound> for BrokerCodec {
    type Error = CodecError;

    fn encode(&mut self, out: Outbound, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.0.encode(out, dst)
    }
}

/// Room kept in front of a pull's messages for what precedes them: length
/// prefix, frame and answer variants, request id and message count (at most
/// 4 + 1 + 9 + 1 + 1 + 9 bytes).
const PULLED_HEAD_ROOM: usize = 32;

/// A pull's answer built message by message, each encoded from borrowed
/// parts ([`StoredMessageOut`]) straight into the frame's buffer. Finished,
/// it is the very bytes of the `Frame::Response` carrying a
/// `Response::Pulled` that clients decode, but no owned message (a handful
/// of allocations each) was built, filled, encoded and freed on the way.
#[derive(Debug)]
pub struct PulledFrame {
    buf: BytesMut,
    count: u64,
}

impl PulledFrame {
    /// An answer with room for about `bytes` of messages.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = BytesMut::with_capacity(PULLED_HEAD_ROOM + bytes + 32);
        buf.resize(PULLED_HEAD_ROOM, 0);
        Self { buf, count: 0 }
    }

    /// Appends one message.
    pub fn push(&mut self, msg: &StoredMessageOut<'_>) -> Result<(), CodecError> {
        // Encoded into a slice of room made first, not through a writer:
        // the writer's call per field was a tenth of the broker's CPU while
        // it drained a backlog.
        let start = self.buf.len();
        self.buf.resize(start + encoded_bound(msg), 0);
        match bincode::serde::encode_into_slice(msg, &mut self.buf[start..], bincode::config::standard()) {
            Ok(len) => {
                self.buf.truncate(start + len);
                self.count += 1;
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(start);
                Err(CodecError::Encode(e.to_string()))
            }
        }
    }

    /// Messages appended.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no message was appended.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The whole frame answering request `id`, length prefix included.
    pub fn finish(
        mut self,
        id: u64,
        (next_offset, min_offset, max_offset): (u64, u64, u64),
        max_frame: usize,
    ) -> Result<Bytes, CodecError> {
        // What comes before and after the messages is taken from the
        // derived encoding of the same answer without them, so the two
        // cannot drift apart: it is that answer's bytes with the message
        // count (a lone 0) in the middle.
        // Encoded on the stack: a pull's answer is on the hot path, and these
        // are a few dozen bytes.
        let result = PullResult { messages: Vec::new(), next_offset, min_offset, max_offset };
        let (mut empty, mut tail, mut count) = ([0u8; 64], [0u8; 32], [0u8; 16]);
        let empty = encode_to_slice(&Frame::Response { id, body: Ok(Response::Pulled(result)) }, &mut empty)?;
        let tail = encode_to_slice(&(next_offset, min_offset, max_offset), &mut tail)?;
        let count = encode_to_slice(&self.count, &mut count)?;
        let head = empty.len() - tail.len() - 1;
        let (head, tail) = (&empty[..head], &empty[head + 1..]);
        let prefix = 4 + head.len() + count.len();
        let len = self.buf.len() - PULLED_HEAD_ROOM + head.len() + count.len() + tail.len();
        if len > max_frame {
            return Err(CodecError::TooLarge { len, max: max_frame });
        }
        let start =
            PULLED_HEAD_ROOM.checked_sub(prefix).ok_or_else(|| CodecError::Encode("answer head too long".into()))?;
        let front = &mut self.buf[start..PULLED_HEAD_ROOM];
        front[..4].copy_from_slice(&(len as u32).to_be_bytes());
        front[4..4 + head.len()].copy_from_slice(head);
        front[4 + head.len()..].copy_from_slice(count);
        self.buf.extend_from_slice(tail);
        self.buf.advance(start);
        Ok(self.buf.freeze())
    }
}

/// The most bytes `msg` encodes to: each length and integer a varint of at
/// most 9 bytes (bincode's standard configuration), besides the bytes.
fn encoded_bound(msg: &StoredMessageOut<'_>) -> usize {
    const INT: usize = 9;
    let m = &msg.message;
    let strings = |s: &[&str]| INT + s.iter().map(|s| INT + s.len()).sum::<usize>();
    let pairs = m.properties.iter().map(|(k, v)| 2 * INT + k.len() + v.len()).sum::<usize>();
    INT + msg.msg_id.len()
        + 6 * INT
        + INT
        + m.topic.len()
        + 1
        + INT
        + m.tags.map_or(0, str::len)
        + strings(m.keys)
        + INT
        + pairs
        + INT
        + m.body.len()
        + INT
}

/// bincode's encoding of one value into `buf`: the bytes written.
fn encode_to_slice<'b, T: serde::Serialize>(value: &T, buf: &'b mut [u8]) -> Result<&'b [u8], CodecError> {
    let len = bincode::serde::encode_into_slice(value, buf, bincode::config::standard())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(&buf[..len])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use crate::request::Request;

    fn send_frame() -> Frame {
        Frame::Request {
            id: 7,
            body: Request::Send {
                topic: "t".into(),
                queue: 1,
                messages: vec![Message::new("t", b"hello".to_vec()).with_key("k")],
                producer: None,
            },
        }
    }

    fn stored(i: u64, msg: Message) -> crate::StoredMessage {
        crate::StoredMessage {
            msg_id: format!("{i:032X}"),
            queue: i as u32 % 7,
            queue_offset: i * 1000,
            log_offset: i << 33,
            store_ts: 1_700_000_000_000 - i as i64,
            flags: (i % 3) as u32,
            reconsume_times: (i % 17) as u32,
            message: Message { born_ts: -(i as i64), ..msg },
        }
    }

    fn pulled_frame(messages: &[crate::StoredMessage]) -> PulledFrame {
        let mut frame = PulledFrame::with_capacity(64);
        for m in messages {
            let keys: Vec<&str> = m.message.keys.iter().map(String::as_str).collect();
            let props: Vec<(&str, &str)> = m.message.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let out = StoredMessageOut {
                msg_id: &m.msg_id,
                queue: m.queue,
                queue_offset: m.queue_offset,
                log_offset: m.log_offset,
                store_ts: m.store_ts,
                flags: m.flags,
                reconsume_times: m.reconsume_times,
                message: crate::MessageOut {
                    topic: &m.message.topic,
                    tags: m.message.tags.as_deref(),
                    keys: &keys,
                    properties: &props,
                    body: &m.message.body,
                    born_ts: m.message.born_ts,
                },
            };
            frame.push(&out).expect("push");
        }
        frame
    }

    #[test]
    fn a_pulled_frame_is_the_derived_encoding_of_the_same_answer() {
        let full = Message::new("orders", vec![7u8; 300])
            .with_tags("TagA")
            .with_key("k1")
            .with_key("k2")
            .with_property("b", "2")
            .with_property("a", "1");
        let mut all = vec![stored(1, full), stored(2, Message::new("", Vec::new()))];
        // Past 250 messages the count takes three bytes instead of one.
        all.extend((3..300).map(|i| stored(i, Message::new("t", vec![i as u8; i as usize % 9]).with_key("k"))));
        let cases =
            [(0, 0, (0, 0, 0)), (7, 1, (1, 0, 2)), (300, 2, (251, 250, 252)), (u64::MAX, 299, (u64::MAX, 5, u64::MAX))];
        for (id, count, (next_offset, min_offset, max_offset)) in cases {
            let messages = all[..count].to_vec();
            let ours =
                pulled_frame(&messages).finish(id, (next_offset, min_offset, max_offset), 1 << 20).expect("finish");
            let result = PullResult { messages, next_offset, min_offset, max_offset };
            let derived = Frame::Response { id, body: Ok(Response::Pulled(result)) };
            assert_eq!(&ours[..], &encode_frame(&derived).expect("encode")[..], "id {id}, {count} messages");
            let mut buf = BytesMut::from(&ours[..]);
            assert_eq!(FrameCodec::default().decode(&mut buf).expect("decode"), Some(derived));
        }
    }

    #[test]
    fn a_pulled_frame_over_the_maximum_is_refused() {
        let messages: Vec<_> = (0..4).map(|i| stored(i, Message::new("t", vec![0u8; 100]))).collect();
        let err = pulled_frame(&messages).finish(1, (4, 0, 4), 256).expect_err("over 256 bytes");
        assert!(matches!(err, CodecError::TooLarge { max: 256, .. }), "{err}");
    }

    #[test]
    fn frames_round_trip_and_split_reads_wait() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        codec.encode(send_frame(), &mut buf).expect("encode");
        let whole = buf.clone();
        let mut partial = BytesMut::from(&whole[..whole.len() - 1]);
        assert!(matches!(codec.decode(&mut partial), Ok(None)));
        let decoded = codec.decode(&mut buf).expect("decode").expect("frame");
        assert_eq!(decoded, send_frame());
        assert!(buf.is_empty());
    }

    #[test]
    fn the_broker_codec_splits_off_sends_and_reads_them_in_place() {
        let message = Message::new("t", b"body".to_vec())
            .with_tags("TagA")
            .with_key("k1")
            .with_key("k2")
            .with_key("k3")
            .with_property("b", "2")
            .with_property("a", "1");
        let send = Request::Send {
            topic: "t".into(),
            queue: 3,
            messages: vec![message.clone(), Message::new("", vec![])],
            producer: Some(crate::ProducerSeq { producer_id: 9, epoch: 2, sequence: 70_000 }),
        };
        let mut frames: Vec<(Frame, Option<u64>)> = [0, 250, 251, 65_536, u64::MAX]
            .into_iter()
            .map(|id| (Frame::Request { id, body: send.clone() }, Some(id)))
            .collect();
        frames.push((Frame::Oneway { body: send.clone() }, None));
        let mut buf = BytesMut::new();
        for (frame, _) in &frames {
            FrameCodec::default().encode(frame.clone(), &mut buf).expect("encode");
        }
        let mut codec = BrokerCodec::new(1 << 20);
        for (_, want_id) in frames {
            match codec.decode(&mut buf).expect("decode").expect("frame") {
                Incoming::Send { id, body } => {
                    assert_eq!(id, want_id);
                    let fields = decode_send(&body).expect("send fields");
                    assert_eq!((fields.topic, fields.queue), ("t", 3));
                    assert_eq!(fields.messages.len(), 2);
                    assert_eq!(fields.messages[0].to_message(), message);
                    assert_eq!(fields.messages[0].property("a"), Some("1"));
                    assert_eq!(fields.messages[1].to_message(), Message::new("", vec![]));
                    assert_eq!(
                        fields.producer,
                        Some(crate::ProducerSeq { producer_id: 9, epoch: 2, sequence: 70_000 })
                    );
                }
                other => panic!("expected a send, got {other:?}"),
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn the_broker_codec_decodes_every_other_frame_whole() {
        let others = [
            Frame::Request { id: 9, body: Request::Hello { version: 2, client_id: "c".into() } },
            Frame::Request { id: 300, body: Request::DescribeTopic { name: "t".into() } },
            Frame::Oneway { body: Request::Ping },
            Frame::Response { id: 5, body: Ok(crate::Response::Pong) },
        ];
        let mut buf = BytesMut::new();
        for frame in &others {
            FrameCodec::default().encode(frame.clone(), &mut buf).expect("encode");
        }
        let mut codec = BrokerCodec::new(1 << 20);
        for frame in others {
            match codec.decode(&mut buf).expect("decode").expect("frame") {
                Incoming::Frame(got) => assert_eq!(got, frame),
                other => panic!("expected {frame:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_send_claiming_too_many_messages_is_refused_before_decoding_them() {
        let mut body = vec![1u8, b't', 0];
        // A varint count of 2^32 (tag 253: a u64 follows), then nothing.
        body.push(253);
        body.extend_from_slice(&(1u64 << 32).to_le_bytes());
        assert!(matches!(
            decode_send(&body),
            Err(CodecError::TooManyMessages { count, max }) if count == 1 << 32 && max == crate::MAX_SEND_MESSAGES
        ));
        let three =
            Request::Send { topic: "t".into(), queue: 0, messages: vec![Message::new("", vec![]); 3], producer: None };
        let mut buf = BytesMut::new();
        FrameCodec::default().encode(Frame::Oneway { body: three }, &mut buf).expect("encode");
        let Some(Incoming::Send { body, .. }) = BrokerCodec::new(1 << 20).decode(&mut buf).expect("decode") else {
            panic!("expected a send");
        };
        assert_eq!(decode_send(&body).expect("three messages").messages.len(), 3);
    }

    #[test]
    fn broken_send_fields_are_malformed() {
        let mut buf = BytesMut::new();
        FrameCodec::default().encode(send_frame(), &mut buf).expect("encode");
        let Some(Incoming::Send { body, .. }) = BrokerCodec::new(1 << 20).decode(&mut buf).expect("decode") else {
            panic!("expected a send");
        };
        assert!(decode_send(&body).is_ok());
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(matches!(decode_send(&longer), Err(CodecError::Malformed(_))));
        for cut in 0..body.len() {
            assert!(matches!(decode_send(&body[..cut]), Err(CodecError::Malformed(_))), "cut at {cut}");
        }
        // A string that is not UTF-8.
        let bad = [1u8, b't', 0, 1, 1, 0xFF];
        assert!(matches!(decode_send(&bad), Err(CodecError::Malformed(_))));
    }

    #[test]
    fn oversized_prefix_is_refused_before_allocation() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&(u32::MAX).to_be_bytes()[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::TooLarge { len, max: 1024 }) if len == u32::MAX as usize
        ));
        assert!(buf.capacity() < 1 << 20);
    }

    #[test]
    fn garbage_bodies_are_malformed_not_panics() {
        let mut codec = FrameCodec::default();
        // A Send whose body claims an absurd string length.
        let mut body = vec![0u8, 7, 5];
        body.extend_from_slice(&[0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]);
        let mut buf = BytesMut::new();
        buf.put_u32(body.len() as u32);
        buf.extend_from_slice(&body);
        assert!(matches!(codec.decode(&mut buf), Err(CodecError::Malformed(_))));
        let mut state = 0x1234_5678_u64;
        for len in 0..300usize {
            let mut body = Vec::with_capacity(len);
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                body.push(state as u8);
            }
            let mut buf = BytesMut::new();
            buf.put_u32(len as u32);
            buf.extend_from_slice(&body);
            let _ = codec.decode(&mut buf);
        }
    }
}
