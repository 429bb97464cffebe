//! The replication protocol between a master and its slaves (the master's
//! `ha_listen` port). A slave opens with a [`HaHello`] naming its cluster,
//! replica set, id, segment size, log end and epochs; the master answers
//! [`HaWelcome`] (where streaming starts, its epochs) or `Refused`, and
//! only then streams `Data` frames — raw commit-log bytes at their log
//! offsets, a frame never spanning two epochs — while the slave answers
//! each with an `Ack` of how far it has written and synced. A connection
//! that does not open with a valid hello of this replica set is dropped
//! and counts for nothing.
//!
//! Frames: a 4-byte big-endian length (of what follows), a kind byte, then
//! the body: bincode for the handshake, a fixed little-endian header and
//! the raw bytes for data, two u64 for acks.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

/// Opens every hello: "BROOKHA1".
pub const HA_MAGIC: u64 = u64::from_be_bytes(*b"BROOKHA1");
/// The replication protocol's version.
pub const HA_VERSION: u16 = 1;
/// Largest frame either side accepts (a data frame's bytes plus header).
pub const HA_MAX_FRAME: usize = 8 << 20;

const KIND_HELLO: u8 = 1;
const KIND_WELCOME: u8 = 2;
const KIND_REFUSED: u8 = 3;
const KIND_DATA: u8 = 4;
const KIND_ACK: u8 = 5;
const DATA_HEADER: usize = 8 + 4 + 8 + 8;

/// One master epoch: from `start` on, the log was written by the master of
/// `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EpochEntry {
    /// The epoch.
    pub epoch: u32,
    /// The log offset its first record has.
    pub start: u64,
}

/// A slave's opening.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaHello {
    /// [`HA_MAGIC`].
    pub magic: u64,
    /// [`HA_VERSION`].
    pub version: u16,
    /// Its cluster.
    pub cluster: String,
    /// Its replica set: must be the master's.
    pub broker_name: String,
    /// Its id (≥ 1).
    pub broker_id: u64,
    /// Its `store.segment_bytes`: must be the master's, or offsets would
    /// not land in the same segments.
    pub segment_bytes: u64,
    /// One past its last log byte.
    pub end: u64,
    /// Its epochs, oldest first.
    pub epochs: Vec<EpochEntry>,
}

/// The master's answer to a hello it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaWelcome {
    /// The master's current epoch.
    pub epoch: u32,
    /// Its epochs, oldest first.
    pub epochs: Vec<EpochEntry>,
    /// One past its last written byte.
    pub master_end: u64,
    /// Where streaming starts: the last point the two logs share. A slave
    /// whose log runs past it cuts its log there first.
    pub start: u64,
}

/// A replication frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaFrame {
    /// Slave → master: who it is.
    Hello(HaHello),
    /// Master → slave: accepted.
    Welcome(HaWelcome),
    /// Master → slave: not accepted, and why.
    Refused(String),
    /// Master → slave: log bytes at `offset` (none: a heartbeat).
    Data {
        /// Log offset of the first byte.
        offset: u64,
        /// The epoch the bytes belong to.
        epoch: u32,
        /// That epoch's start offset.
        epoch_start: u64,
        /// The master's high watermark: what every in-sync replica holds.
        confirmed: u64,
        /// The bytes.
        bytes: Bytes,
    },
    /// Slave → master: one past its last written byte and its last synced.
    Ack {
        /// Written (page cache).
        written: u64,
        /// fdatasynced.
        synced: u64,
    },
}

/// Why a replication frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HaCodecError {
    /// The length is over [`HA_MAX_FRAME`].
    #[error("replication frame of {0} bytes is over the maximum")]
    TooLarge(usize),
    /// The body is not a frame.
    #[error("malformed replication frame: {0}")]
    Malformed(String),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The codec of [`HaFrame`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct HaCodec;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 1 << 20 }>()
}

fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, HaCodecError> {
    let (value, used) =
        bincode::serde::decode_from_slice(body, config()).map_err(|e| HaCodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(HaCodecError::Malformed("trailing bytes".into()));
    }
    Ok(value)
}

fn u64_at(body: &[u8], at: usize) -> u64 {
    body.get(at..at + 8).and_then(|b| b.try_into().ok()).map_or(0, u64::from_le_bytes)
}

impl Decoder for HaCodec {
    type Item = HaFrame;
    type Error = HaCodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<HaFrame>, HaCodecError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > HA_MAX_FRAME || len == 0 {
            return Err(HaCodecError::TooLarge(len));
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let mut frame = src.split_to(len);
        let kind = frame.get_u8();
        let body = &frame[..];
        let decoded = match kind {
            KIND_HELLO => HaFrame::Hello(decode_body(body)?),
            KIND_WELCOME => HaFrame::Welcome(decode_body(body)?),
            KIND_REFUSED => HaFrame::Refused(decode_body(body)?),
            KIND_DATA if body.len() >= DATA_HEADER => {
                let epoch = body.get(8..12).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes);
                let (offset, epoch_start, confirmed) = (u64_at(body, 0), u64_at(body, 12), u64_at(body, 20));
                frame.advance(DATA_HEADER);
                HaFrame::Data { offset, epoch, epoch_start, confirmed, bytes: frame.freeze() }
            }
            KIND_ACK if body.len() == 16 => HaFrame::Ack { written: u64_at(body, 0), synced: u64_at(body, 8) },
            other => return Err(HaCodecError::Malformed(format!("kind {other} with {} bytes", body.len()))),
        };
        Ok(Some(decoded))
    }
}

fn encode_body<T: Serialize>(kind: u8, value: &T, dst: &mut BytesMut) -> Result<(), HaCodecError> {
    let body = bincode::serde::encode_to_vec(value, config()).map_err(|e| HaCodecError::Malformed(e.to_string()))?;
    dst.put_u32(body.len() as u32 + 1);
    dst.put_u8(kind);
    dst.put_slice(&body);
    Ok(())
}

impl Encoder<HaFrame> for HaCodec {
    type Error = HaCodecError;

    fn encode(&mut self, frame: HaFrame, dst: &mut BytesMut) -> Result<(), HaCodecError> {
        match frame {
            HaFrame::Hello(hello) => encode_body(KIND_HELLO, &hello, dst),
            HaFrame::Welcome(welcome) => encode_body(KIND_WELCOME, &welcome, dst),
            HaFrame::Refused(reason) => encode_body(KIND_REFUSED, &reason, dst),
            HaFrame::Data { offset, epoch, epoch_start, confirmed, bytes } => {
                let len = 1 + DATA_HEADER + bytes.len();
                if len > HA_MAX_FRAME {
                    return Err(HaCodecError::TooLarge(len));
                }
                dst.reserve(4 + len);
                dst.put_u32(len as u32);
                dst.put_u8(KIND_DATA);
                dst.put_u64_le(offset);
                dst.put_u32_le(epoch);
                dst.put_u64_le(epoch_start);
                dst.put_u64_le(confirmed);
                dst.put_slice(&bytes);
                Ok(())
            }
            HaFrame::Ack { written, synced } => {
                dst.put_u32(17);
                dst.put_u8(KIND_ACK);
                dst.put_u64_le(written);
                dst.put_u64_le(synced);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: HaFrame) {
        let mut buf = BytesMut::new();
        HaCodec.encode(frame.clone(), &mut buf).expect("encode");
        assert_eq!(HaCodec.decode(&mut buf).expect("decode"), Some(frame));
        assert!(buf.is_empty());
    }

    #[test]
    fn every_frame_round_trips() {
        let epochs = vec![EpochEntry { epoch: 1, start: 0 }, EpochEntry { epoch: 3, start: 4096 }];
        round_trip(HaFrame::Hello(HaHello {
            magic: HA_MAGIC,
            version: HA_VERSION,
            cluster: "c".into(),
            broker_name: "broker-a".into(),
            broker_id: 2,
            segment_bytes: 1 << 20,
            end: 77,
            epochs: epochs.clone(),
        }));
        round_trip(HaFrame::Welcome(HaWelcome { epoch: 3, epochs, master_end: 9000, start: 77 }));
        round_trip(HaFrame::Refused("no".into()));
        let bytes = Bytes::from_static(b"log bytes");
        round_trip(HaFrame::Data { offset: 5, epoch: 3, epoch_start: 4096, confirmed: 4, bytes });
        round_trip(HaFrame::Data { offset: 5, epoch: 3, epoch_start: 4096, confirmed: 4, bytes: Bytes::new() });
        round_trip(HaFrame::Ack { written: 10, synced: 8 });
    }

    #[test]
    fn garbage_is_refused_not_taken_for_an_ack() {
        // Eight bytes of anything (what RocketMQ's HA port took for an ack).
        let mut buf = BytesMut::from(&[0u8, 0, 0, 4, 5, 1, 2, 3][..]);
        assert!(HaCodec.decode(&mut buf).is_err(), "an ack is exactly 16 bytes");
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        assert!(HaCodec.decode(&mut buf).is_err(), "a huge length is refused before allocation");
        let mut buf = BytesMut::from(&[0u8, 0, 0, 3, 1, 0xff, 0xff][..]);
        assert!(HaCodec.decode(&mut buf).is_err(), "a hello that does not decode");
    }
}
