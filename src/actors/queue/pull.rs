//! Reads from a queue: the entries a pull may have now, and long polling —
//! pulls that find nothing new are parked and answered the moment an
//! append makes something visible, or when their time is up.

use crate::actors::queue::state::QueueState;
use crate::actors::queue::{Pull, PullEntries};
use crate::error::{Error, Result};
use tokio::sync::oneshot;

/// Most consume-queue entries one pull examines (filtered ones included).
const MAX_SCAN: usize = 4096;
/// Most messages one pull returns.
pub const MAX_PULL_MESSAGES: u32 = 1024;

/// A pull waiting for records (long polling).
pub(crate) struct Parked {
    pub(super) id: u64,
    pub(super) pull: Pull,
    pub(super) reply: oneshot::Sender<Result<PullEntries>>,
}

impl QueueState {
    /// Reads up to the pull's limits from `offset`; `None` when nothing new
    /// is there yet.
    pub(super) fn collect(&self, pull: &Pull) -> Result<Option<PullEntries>> {
        let cq = self.cq()?;
        let (min, max) = (cq.min_offset(), cq.next_offset());
        if pull.offset < min {
            return Err(Error::BelowRetained { requested: pull.offset, min });
        }
        if pull.offset > max {
            return Err(Error::BeyondEnd { requested: pull.offset, max });
        }
        if pull.offset == max {
            return Ok(None);
        }
        let max_messages = pull.max_messages.clamp(1, MAX_PULL_MESSAGES) as usize;
        let mut out = PullEntries { next_offset: pull.offset, min_offset: min, max_offset: max, ..Default::default() };
        let mut bytes = 0u64;
        let mut scanned = 0;
        'scan: while out.next_offset < max && scanned < MAX_SCAN {
            let chunk = cq
                .read(out.next_offset, (MAX_SCAN - scanned).min(256))
                .map_err(|e| Error::io(format!("read consume queue {}", self.name), e))?;
            if chunk.is_empty() {
                break;
            }
            for entry in chunk {
                if out.entries.len() >= max_messages
                    || (!out.entries.is_empty() && bytes + u64::from(entry.size) > u64::from(pull.max_bytes))
                {
                    break 'scan;
                }
                if pull.filter.may_match(entry.tag_hash) {
                    bytes += u64::from(entry.size);
                    out.entries.push((out.next_offset, entry));
                }
                out.next_offset += 1;
                scanned += 1;
            }
        }
        Ok(Some(out))
    }

    /// What a pull gets now, or the pull to park.
    pub(super) fn pull(&mut self, pull: Pull) -> std::result::Result<Result<PullEntries>, Pull> {
        match self.collect(&pull) {
            Ok(Some(found)) if !found.entries.is_empty() || pull.long_poll.is_zero() => Ok(Ok(found)),
            Ok(Some(found)) => {
                // All filtered out: park past them rather than spin.
                let mut pull = pull;
                pull.offset = found.next_offset;
                Err(pull)
            }
            Ok(None) if pull.long_poll.is_zero() => {
                let (min, max) = self.cq().map(|cq| (cq.min_offset(), cq.next_offset())).unwrap_or((0, 0));
                Ok(Ok(PullEntries { entries: Vec::new(), next_offset: pull.offset, min_offset: min, max_offset: max }))
            }
            Ok(None) => Err(pull),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Parks `pull`; returns its id (for expiry) and where its answer comes.
    pub(super) fn park(&mut self, pull: Pull) -> (u64, oneshot::Receiver<Result<PullEntries>>) {
        let (reply, rx) = oneshot::channel();
        let id = self.next_park_id;
        self.next_park_id += 1;
        self.parked.push(Parked { id, pull, reply });
        (id, rx)
    }

    pub(super) fn wake_parked(&mut self) {
        if self.parked.is_empty() {
            return;
        }
        let parked = std::mem::take(&mut self.parked);
        for mut waiting in parked {
            match self.collect(&waiting.pull) {
                Ok(Some(found)) if !found.entries.is_empty() => {
                    let _ = waiting.reply.send(Ok(found));
                }
                // Everything new was filtered out: keep waiting from past it.
                Ok(Some(found)) => {
                    waiting.pull.offset = found.next_offset;
                    self.parked.push(waiting);
                }
                Ok(None) => self.parked.push(waiting),
                Err(e) => {
                    let _ = waiting.reply.send(Err(e));
                }
            }
        }
    }

    pub(super) fn expire(&mut self, id: u64) {
        if let Some(index) = self.parked.iter().position(|p| p.id == id) {
            let waiting = self.parked.swap_remove(index);
            let (min, max) = self.cq().map(|cq| (cq.min_offset(), cq.next_offset())).unwrap_or((0, 0));
            let _ = waiting.reply.send(Ok(PullEntries {
                entries: Vec::new(),
                next_offset: waiting.pull.offset,
                min_offset: min,
                max_offset: max,
            }));
        }
    }
}
