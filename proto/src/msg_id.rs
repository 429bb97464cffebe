//! Message ids in RocketMQ's "offset message id" form: the storing broker's
//! address and the record's commit-log offset, hex encoded. Because the id
//! names where the message lives, looking a message up by id needs no index.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// Where a message is stored: broker address plus commit-log offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// The address clients reach the storing broker on.
    pub broker: SocketAddr,
    /// Byte offset of the record in the broker's commit log.
    pub log_offset: u64,
}

/// Why a string is not a message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a message id: {0}")]
pub struct ParseMessageIdError(String);

impl MessageId {
    /// The id's text. Every send answer carries one per message, so the
    /// digits are written into a stack buffer and copied out once instead
    /// of through `core::fmt` or a push per digit (both showed up in send
    /// profiles).
    pub fn to_hex(&self) -> String {
        self.hex_into(&mut [0u8; 56]).to_owned()
    }

    /// The id's text written into `out`, for callers that only borrow it
    /// (a pull's answer encodes one per message).
    pub fn hex_into<'a>(&self, out: &'a mut [u8; 56]) -> &'a str {
        const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
        // At most 16 address + 4 port + 8 offset bytes, two digits each.
        let mut len = 0;
        let mut push = |bytes: &[u8]| {
            for b in bytes {
                out[len] = DIGITS[usize::from(b >> 4)];
                out[len + 1] = DIGITS[usize::from(b & 0xF)];
                len += 2;
            }
        };
        match self.broker.ip() {
            IpAddr::V4(ip) => push(&ip.octets()),
            IpAddr::V6(ip) => push(&ip.octets()),
        }
        push(&u32::from(self.broker.port()).to_be_bytes());
        push(&self.log_offset.to_be_bytes());
        // Hex digits are ASCII: the check cannot fail.
        std::str::from_utf8(&out[..len]).unwrap_or_default()
    }
}

impl fmt::Display for MessageId {
    /// IPv4: 4 address bytes, 4 port bytes, 8 offset bytes = 32 hex digits
    /// (byte-compatible with RocketMQ). IPv6: 16 + 4 + 8 = 56 hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for MessageId {
    type Err = ParseMessageIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMessageIdError(s.chars().take(80).collect());
        if !s.is_ascii() {
            return Err(err());
        }
        let ip_hex = match s.len() {
            32 => 8,
            56 => 32,
            _ => return Err(err()),
        };
        let hex = |range: std::ops::Range<usize>| {
            s.get(range).and_then(|part| u128::from_str_radix(part, 16).ok()).ok_or_else(err)
        };
        let ip = if ip_hex == 8 {
            IpAddr::V4(Ipv4Addr::from(u32::try_from(hex(0..8)?).map_err(|_| err())?))
        } else {
            IpAddr::V6(Ipv6Addr::from(hex(0..32)?))
        };
        let port = u16::try_from(hex(ip_hex..ip_hex + 8)?).map_err(|_| err())?;
        let log_offset = u64::try_from(hex(ip_hex + 8..ip_hex + 24)?).map_err(|_| err())?;
        Ok(MessageId { broker: SocketAddr::new(ip, port), log_offset })
    }
}

/// As text, so that JSON and other readable forms show the id users type.
impl serde::Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_ids_are_32_hex_digits_and_round_trip() {
        let id = MessageId { broker: "10.1.2.3:10911".parse().expect("addr"), log_offset: 0x1234_5678_9abc };
        let text = id.to_string();
        assert_eq!(text, "0A01020300002A9F0000123456789ABC");
        assert_eq!(text.parse::<MessageId>(), Ok(id));
    }

    #[test]
    fn v6_ids_round_trip() {
        let id = MessageId { broker: "[::1]:9".parse().expect("addr"), log_offset: u64::MAX };
        assert_eq!(id.to_string().len(), 56);
        assert_eq!(id.to_string().parse::<MessageId>(), Ok(id));
    }

    #[test]
    fn ids_serialize_as_their_text() {
        let id = MessageId { broker: "10.1.2.3:10911".parse().expect("addr"), log_offset: 7 };
        let json = serde_json::to_string(&id).expect("json");
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<MessageId>(&json).expect("parse"), id);
        assert!(serde_json::from_str::<MessageId>("\"xyz\"").is_err());
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "xyz", "0A0102030000 A9F0000123456789ABC", "é0102030000 A9F0000123456789ABC"] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad}");
        }
    }
}
