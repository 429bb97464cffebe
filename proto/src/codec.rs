//! Frames on the wire: a 4-byte big-endian body length, then the bincode 2
//! (serde, standard config) body. The length is checked against the maximum
//! before anything is allocated, and decoding is bounded so that a lying
//! length inside the body cannot make the reader allocate without limit.

use crate::frame::Frame;
use crate::request::SendRef;
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
        #[allow(dead_code)]
        topic: &'a str,
        #[allow(dead_code)]
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

/// The broker's reading side: [`FrameCodec`]'s frames, with sends split
/// off undecoded (a shared slice of the read buffer, not a copy).
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
            },
        }
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
        let send =
            Request::Send { topic: "t".into(), queue: 3, messages: vec![message.clone(), Message::new("", vec![])] };
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
        let three = Request::Send { topic: "t".into(), queue: 0, messages: vec![Message::new("", vec![]); 3] };
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
