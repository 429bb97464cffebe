//! Messages as a producer sends them and as the broker hands them back.

use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::collections::BTreeMap;

/// A message as produced: where it goes and what it carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Target topic. In a send it may be left empty: the message goes to
    /// the send's topic (clients leave it out on the wire that way).
    pub topic: String,
    /// Optional tag, used for broker-side filtering (`TagA || TagB`).
    pub tags: Option<String>,
    /// Business keys (an order id, say) for query by key.
    pub keys: Vec<String>,
    /// Free-form string properties.
    pub properties: BTreeMap<String, String>,
    /// The payload.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// When the producer created the message, ms since the epoch.
    pub born_ts: i64,
}

impl Message {
    /// A message with a topic and a body; everything else empty.
    pub fn new(topic: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self { topic: topic.into(), body: body.into(), ..Self::default() }
    }

    /// Sets the tag.
    #[must_use]
    pub fn with_tags(mut self, tags: impl Into<String>) -> Self {
        self.tags = Some(tags.into());
        self
    }

    /// Adds a key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        // Most messages carry one key: room for exactly one, not the four
        // a first push makes room for.
        if self.keys.capacity() == 0 {
            self.keys.reserve_exact(1);
        }
        self.keys.push(key.into());
        self
    }

    /// Delivers the message after delay level `level` (1-based; the
    /// broker's `delay_levels` say how long each is).
    #[must_use]
    pub fn with_delay_level(self, level: u32) -> Self {
        self.with_property(crate::system::PROP_DELAY_LEVEL, level.to_string())
    }

    /// Delivers the message `ms` milliseconds after the broker stores it.
    #[must_use]
    pub fn with_delay_ms(self, ms: u64) -> Self {
        self.with_property(crate::system::PROP_DELAY_MS, ms.to_string())
    }

    /// Delivers the message at `at_ms` (ms since the epoch).
    #[must_use]
    pub fn with_deliver_at(self, at_ms: i64) -> Self {
        self.with_property(crate::system::PROP_DELIVER_AT, at_ms.to_string())
    }

    /// Whether the property `name` is set to `true` (the reserved flags:
    /// transactional, traced).
    pub fn flag(&self, name: &str) -> bool {
        self.properties.get(name).is_some_and(|v| v == "true")
    }

    /// Sets a property.
    #[must_use]
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }
}

/// A message as stored: the produced message plus where and when the broker
/// put it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StoredMessage {
    /// Message id (broker address + commit-log offset), see [`crate::MessageId`].
    pub msg_id: String,
    /// The queue within the topic.
    pub queue: u32,
    /// Offset within the queue (an entry number).
    pub queue_offset: u64,
    /// Byte offset in the commit log.
    pub log_offset: u64,
    /// When the broker stored it, ms since the epoch.
    pub store_ts: i64,
    /// Record flags (see docs/FORMAT.md).
    pub flags: u32,
    /// How many times this message was handed back for a retry.
    pub reconsume_times: u32,
    /// The message as produced.
    pub message: Message,
}

impl StoredMessage {
    /// The property `name`, if set.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.message.properties.get(name).map(String::as_str)
    }

    /// The topic the message was first sent to: its own, or for a retried
    /// or dead-lettered copy the one it came from.
    pub fn origin_topic(&self) -> &str {
        self.property(crate::system::PROP_RETRY_TOPIC).unwrap_or(&self.message.topic)
    }
}

/// A [`StoredMessage`] with every field borrowed: a broker encodes a pull's
/// answer from these, straight from its log's bytes, without building the
/// owned message. Same wire form as [`StoredMessage`] when `properties` are
/// sorted by name without repeats (as the map keeps them).
#[derive(Debug, Clone, Serialize)]
pub struct StoredMessageOut<'a> {
    /// Message id.
    pub msg_id: &'a str,
    /// The queue within the topic.
    pub queue: u32,
    /// Offset within the queue.
    pub queue_offset: u64,
    /// Byte offset in the commit log.
    pub log_offset: u64,
    /// When the broker stored it.
    pub store_ts: i64,
    /// Record flags.
    pub flags: u32,
    /// How many times it was handed back for a retry.
    pub reconsume_times: u32,
    /// The message as produced.
    pub message: MessageOut<'a>,
}

/// The [`Message`] of a [`StoredMessageOut`].
#[derive(Debug, Clone, Serialize)]
pub struct MessageOut<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Tag.
    pub tags: Option<&'a str>,
    /// Business keys.
    pub keys: &'a [&'a str],
    /// Properties, sorted by name, each name once.
    #[serde(serialize_with = "pairs_as_map")]
    pub properties: &'a [(&'a str, &'a str)],
    /// The payload.
    #[serde(with = "serde_bytes")]
    pub body: &'a [u8],
    /// When the producer created it.
    pub born_ts: i64,
}

fn pairs_as_map<S: serde::Serializer>(pairs: &&[(&str, &str)], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

/// A produced message decoded in place: every field borrows from the frame
/// that carried it. The broker stores sends from these, so a message costs no
/// allocation between the socket and the log. Same wire form as [`Message`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct MessageRef<'a> {
    /// Target topic (empty: the send's).
    #[serde(borrow)]
    pub topic: &'a str,
    /// Optional tag.
    #[serde(borrow)]
    pub tags: Option<&'a str>,
    /// Business keys; most messages carry one or none.
    #[serde(borrow)]
    pub keys: SmallVec<[&'a str; 2]>,
    /// Properties in wire order.
    #[serde(borrow)]
    pub properties: PropertiesRef<'a>,
    /// The payload.
    pub body: &'a [u8],
    /// When the producer created the message, ms since the epoch.
    pub born_ts: i64,
}

impl MessageRef<'_> {
    /// The property `name`, if set (the last one, as [`Message`]'s map
    /// keeps it, should a peer repeat a name).
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.0.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// Whether the property `name` is set to `true`.
    pub fn flag(&self, name: &str) -> bool {
        self.property(name) == Some("true")
    }

    /// The owned message.
    pub fn to_message(&self) -> Message {
        Message {
            topic: self.topic.to_string(),
            tags: self.tags.map(str::to_string),
            keys: self.keys.iter().map(|k| k.to_string()).collect(),
            properties: self.properties.0.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
            body: self.body.to_vec(),
            born_ts: self.born_ts,
        }
    }
}

/// A message's properties as borrowed pairs. On the wire a map (a count,
/// then name and value), like [`Message::properties`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PropertiesRef<'a>(pub Vec<(&'a str, &'a str)>);

impl<'de: 'a, 'a> Deserialize<'de> for PropertiesRef<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Pairs<'a> {
            type Value = PropertiesRef<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of borrowed strings")
            }

            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                // The hint is the peer's claim: cap what it may reserve.
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(pair) = map.next_entry::<&'a str, &'a str>()? {
                    pairs.push(pair);
                }
                Ok(PropertiesRef(pairs))
            }
        }
        deserializer.deserialize_map(Pairs(std::marker::PhantomData))
    }
}
