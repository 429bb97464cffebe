//! The idempotent producer on the wire. A producer asks the broker for an
//! id (`InitProducer`); each send it makes to a queue then carries
//! [`ProducerSeq`]: the id, the epoch of its sequence on that queue, and the
//! sequence number of the send's first message (message `i` of a batch has
//! `sequence + i`). The broker stores a sequence once per (producer, queue):
//! a repeat is answered with the original placement, a gap is refused.

use serde::{Deserialize, Serialize};

/// An idempotent send's identity: who sent it, and where in that
/// producer's sequence for the queue its messages sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProducerSeq {
    /// The id the broker gave the producer (never 0).
    pub producer_id: u64,
    /// The sequence's epoch on this queue: a producer that gave up on a
    /// send starts the queue's sequence again at 0 under the next epoch;
    /// sends under an older epoch are refused from then on.
    pub epoch: u32,
    /// The sequence number of the send's first message on this queue,
    /// counting from 0 in each epoch.
    pub sequence: u32,
}

impl ProducerSeq {
    /// The sequence number of message `index` of the send (`None` past
    /// `u32::MAX`: a producer bumps its epoch before that).
    pub fn of(&self, index: usize) -> Option<u32> {
        u32::try_from(index).ok().and_then(|i| self.sequence.checked_add(i))
    }
}
