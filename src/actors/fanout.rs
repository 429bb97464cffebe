//! The Fanout: carries the appends of many queues to the queues' thread in
//! one mailbox push, and applies each to its queue's state there.
//!
//! A connection that read sends for many queues at once (thousands of
//! queues, one request each) used to push to every queue actor from its own
//! thread, each push a cross-thread wake-up and a mailbox message. Through
//! the fanout, the batch crosses once and no queue mailbox is involved.
//! The queues' records go to the writer as one append. Everything a
//! connection stores goes this way, so its sends to one queue keep their
//! order.

use crate::actors::queue::{self, ActiveQueues, Barrier, Produce, QueueSpec};
use actix::prelude::*;
use std::sync::Arc;

/// Most bytes one combined writer append carries, so a large batch of sends
/// still leaves the writer groups to form.
const COMBINE_BYTES: usize = 1 << 20;

/// Appends for many queues, applied in list order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ProduceAll(pub Vec<(Arc<QueueSpec>, Produce)>);

/// Visit queues with a checkpoint's barrier: every queue (`all`) or the
/// active ones. Sent after the writer answered the checkpoint's `Sync`, and
/// behind every append sent before it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BarrierQueues {
    /// The barrier (its round collects the answers).
    pub barrier: Barrier,
    /// Every queue, not just the active ones.
    pub all: bool,
}

/// Lives on the queues' thread.
pub struct Fanout {
    /// Queues that took appends since their last barrier.
    pub active: Arc<ActiveQueues>,
}

impl Actor for Fanout {
    type Context = Context<Self>;
}

impl Handler<ProduceAll> for Fanout {
    type Result = ();

    fn handle(&mut self, ProduceAll(appends): ProduceAll, _: &mut Context<Self>) {
        let mut combined = queue::Combined::default();
        for (queue, produce) in appends {
            combined.add(&queue, produce);
            if combined.bytes() >= COMBINE_BYTES {
                combined.send();
            }
        }
        combined.send();
    }
}

impl Handler<BarrierQueues> for Fanout {
    type Result = ();

    fn handle(&mut self, BarrierQueues { barrier, all }: BarrierQueues, _: &mut Context<Self>) {
        queue::barrier_here(&barrier, all, &self.active);
    }
}
