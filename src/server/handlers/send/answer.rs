//! Answering stored sends: each request's acks, taken from its part's
//! placements, its counters and trace events.

use super::tally::Tally;
use super::trace;
use crate::actors::queue::fanout::Placements;
use crate::actors::queue::Placed;
use crate::server::context::{BrokerCore, ConnInfo};
use crate::server::handlers::Reply;
use brook_proto::request::StoredAck;
use brook_proto::{MessageId, Response, WireError};
use smallvec::SmallVec;

/// What answering a produce's requests takes once it is stored.
pub(super) struct AnswerSends {
    /// Requests already answered (refused).
    pub(super) answers: Vec<(Option<u64>, Reply)>,
    /// The rest, in store order, and how many belong to each stored part.
    pub(super) members: Vec<(Option<u64>, Answering)>,
    pub(super) sizes: Vec<usize>,
    pub(super) tallies: Vec<Tally>,
}

impl AnswerSends {
    /// Every request's answer, its stores' placements known.
    pub(super) fn answer(
        self,
        core: &BrokerCore,
        conn: &ConnInfo,
        placements: Placements,
    ) -> Vec<(Option<u64>, Reply)> {
        let AnswerSends { mut answers, members, sizes, tallies } = self;
        let Placements { stored, outcomes } = placements;
        let now = brook_proto::time::now_ms();
        let send_code = brook_proto::Request::SEND_CODE;
        let mut members = members.into_iter();
        for ((outcome, size), tally) in outcomes.into_iter().zip(sizes).zip(tallies) {
            let group = members.by_ref().take(size);
            match outcome {
                Ok(range) => {
                    tally.count();
                    let mut rest = stored.get(range).unwrap_or(&[]);
                    for (id, answering) in group {
                        let (own, after) = rest.split_at(answering.dues.len().min(rest.len()));
                        rest = after;
                        core.metrics.rpc(send_code, true, now.saturating_sub(answering.received_at) as u64);
                        answers.push((id, Ok(finish_send(core, conn, answering, own))));
                    }
                }
                Err(e) => {
                    let e = WireError::from(e);
                    for (id, answering) in group {
                        core.metrics.rpc(send_code, false, now.saturating_sub(answering.received_at) as u64);
                        answers.push((id, Err(e.clone())));
                    }
                }
            }
        }
        answers
    }
}

/// A submitted send's answer, waiting for its store.
pub(super) struct Answering {
    pub(super) topic: String,
    pub(super) queue: u32,
    pub(super) store_queue: u32,
    pub(super) dues: SmallVec<[Option<i64>; 1]>,
    pub(super) traced: SmallVec<[bool; 16]>,
    pub(super) received_at: i64,
}

/// The answer to a stored send (and its trace events).
fn finish_send(core: &BrokerCore, conn: &ConnInfo, answering: Answering, stored: &[Placed]) -> Response {
    let Answering { topic, queue, store_queue, dues, traced, received_at } = answering;
    let acks: Vec<StoredAck> = stored
        .iter()
        .zip(dues)
        .map(|(s, deliver_at)| StoredAck {
            log_offset: s.pos.log_offset,
            queue,
            queue_offset: s.queue_offset,
            deliver_at: s.due.or(deliver_at),
        })
        .collect();
    if traced.contains(&true) {
        let cost_ms = crate::clock::now_ms() - received_at;
        let sent = acks
            .iter()
            .zip(&traced)
            .filter(|(_, t)| **t)
            .map(|(ack, _)| trace::SentTrace {
                msg_id: MessageId { broker: core.advertised, log_offset: ack.log_offset }.to_hex(),
                topic: &topic,
                queue: store_queue,
                offset: ack.queue_offset,
                received_at,
                cost_ms,
            })
            .collect();
        trace::sent(core, conn, sent);
    }
    Response::Sent(acks)
}
