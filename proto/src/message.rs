//! Messages as a producer sends them and as the broker hands them back.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A message as produced: where it goes and what it carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Target topic.
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
