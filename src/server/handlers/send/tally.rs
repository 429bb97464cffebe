//! What a stored part of a produce adds to the broker's counters
//! (`rocketmq_messages_in` and its kin), counted once the part is stored.

use super::{Items, PreparedSend};
use crate::metrics::{MessageType, Metrics, TopicCounts};
use smallvec::SmallVec;

/// A part's messages by topic and type (RocketMQ's `messages_in` labels),
/// counted once the part is stored.
#[derive(Default)]
pub(super) struct Tally {
    counts: SmallVec<[Counted; 1]>,
}

/// A topic's counters, the messages' type, how many and their body bytes.
type Counted = (std::sync::Arc<TopicCounts>, MessageType, u64, u64);

impl Tally {
    pub(super) fn add(&mut self, metrics: &Metrics, prepared: &PreparedSend<'_>, items: &Items<'_>) {
        let kind = if prepared.store_in == Some(brook_proto::system::TRANS_HALF_TOPIC) {
            MessageType::Transaction
        } else if prepared.dues.iter().any(Option::is_some) {
            MessageType::Delay
        } else {
            MessageType::Normal
        };
        let mut bytes = 0;
        for (msg, _) in items {
            let len = msg.body_len() as u64;
            metrics.message_size.observe(len);
            bytes += len;
        }
        let counts = metrics.stored(prepared.topic);
        match self.counts.last_mut() {
            Some((c, k, n, b)) if std::sync::Arc::ptr_eq(c, &counts) && *k == kind => {
                *n += items.len() as u64;
                *b += bytes;
            }
            _ => self.counts.push((counts, kind, items.len() as u64, bytes)),
        }
    }

    pub(super) fn count(self) {
        for (counts, kind, messages, bytes) in self.counts {
            counts.add(kind, messages, bytes);
        }
    }
}
