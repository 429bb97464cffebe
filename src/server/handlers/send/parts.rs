//! The parts of one produce as the send path builds them, a part per run
//! of requests for one queue (and lane): each request's messages encoded
//! into the open part; a part that fails to encode fails its requests alone.

use super::tally::Tally;
use super::{Answering, Items, PreparedSend};
use crate::actors::appender::Encoded;
use crate::actors::queue::idempotence::PartProducer;
use crate::metrics::Metrics;
use crate::server::handlers::Reply;
use brook_proto::WireError;

/// The parts of a produce as the send path builds them: requests are
/// encoded into the open part, and a part that fails to encode fails its
/// requests alone.
pub(super) struct Parts {
    pub(super) encoded: Encoded,
    pub(super) members: Vec<(Option<u64>, Answering)>,
    pub(super) sizes: Vec<usize>,
    /// What each part counts once stored (one per entry of `sizes`).
    pub(super) tallies: Vec<Tally>,
    /// The open part's.
    pub(super) tally: Tally,
    pub(super) answers: Vec<(Option<u64>, Reply)>,
    /// The open part: its first member and the first encoding error.
    pub(super) open: Option<(usize, Option<crate::error::Error>)>,
}

impl Parts {
    pub(super) fn open(
        &mut self,
        spec: std::sync::Arc<crate::actors::queue::QueueSpec>,
        queue: u32,
        lane: Option<PartProducer>,
    ) {
        self.encoded.begin_as(spec, queue, lane);
        self.open = Some((self.members.len(), None));
    }

    pub(super) fn add(&mut self, id: Option<u64>, items: &Items<'_>, prepared: PreparedSend<'_>, metrics: &Metrics) {
        self.tally.add(metrics, &prepared, items);
        for (msg, code) in items {
            if let Err(e) = msg.encode(&mut self.encoded, *code) {
                if let Some((_, failed)) = &mut self.open {
                    failed.get_or_insert(e);
                }
            }
        }
        self.members.push((id, prepared.answering()));
    }

    pub(super) fn close(&mut self) {
        let tally = std::mem::take(&mut self.tally);
        match self.open.take() {
            None => {}
            Some((first, None)) => {
                self.sizes.push(self.members.len() - first);
                self.tallies.push(tally);
            }
            // Every field was checked while preparing; a failure here is a
            // bug, and it fails only this part.
            Some((first, Some(e))) => {
                self.encoded.abandon();
                let e = WireError::from(e);
                self.answers.extend(self.members.drain(first..).map(|(id, _)| (id, Err(e.clone()))));
            }
        }
    }
}
