//! The Fanout: carries the appends of many queues to the queue actors'
//! thread in one mailbox push, and hands each to its queue actor there.
//!
//! A connection that read sends for many queues at once (thousands of
//! queues, one request each) used to push to every queue actor from its own
//! thread, each push a cross-thread wake-up. Through the fanout, the batch
//! crosses once and each queue is reached by a push on its own thread.
//! Everything a connection stores goes this way, so its sends to one queue
//! keep their order.

use crate::actors::queue::{Produce, QueueActor};
use actix::prelude::*;

/// Appends for many queues, each handed on in list order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ProduceAll(pub Vec<(Addr<QueueActor>, Produce)>);

/// Lives on the queue actors' thread.
pub struct Fanout;

impl Actor for Fanout {
    type Context = Context<Self>;
}

impl Handler<ProduceAll> for Fanout {
    type Result = ();

    fn handle(&mut self, ProduceAll(appends): ProduceAll, _: &mut Context<Self>) {
        for (queue, produce) in appends {
            // A stopped queue drops the produce, and with it the reply: the
            // sender sees the queue gone.
            queue.do_send(produce);
        }
    }
}
