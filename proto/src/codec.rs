//! Frames on the wire: a 4-byte big-endian body length, then the bincode 2
//! (serde, standard config) body. The length is checked against the maximum
//! before anything is allocated, and decoding is bounded so that a lying
//! length inside the body cannot make the reader allocate without limit.

use crate::frame::Frame;
use bytes::{Buf, BufMut, BytesMut};
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

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
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
        let frame = decode_body(&src[4..4 + len]);
        src.advance(4 + len);
        frame.map(Some)
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
