//! Rebuilding the checker's state at start: halves from the oldest
//! unresolved one, the op records written since, and any commit a crash
//! interrupted — finished without writing its visible copy twice.

use crate::actors::scheduler::{entries_from, pull_entries};
use crate::actors::txn_checker::checker::{first_at_or_after, parse_op, Checker, Half, Op, COPY_SEARCH_MS};
use crate::error::Result;
use brook_proto::request::TxnOutcome;
use brook_proto::system::{PROP_ORIGIN_LOG_OFFSET, TRANS_HALF_TOPIC, TRANS_OP_TOPIC};
use std::collections::BTreeMap;
use std::time::Duration;

impl Checker {
    /// Rebuilds the pending table: halves from the oldest unresolved one,
    /// op records written since it, and any commit a crash interrupted.
    pub(super) async fn recover(&mut self) -> Result<()> {
        let from = self.half_next;
        let (halves, next) = entries_from(&self.registry, TRANS_HALF_TOPIC, from).await?;
        self.half_next = next;
        let Some((_, first)) = halves.first() else {
            self.save();
            return Ok(());
        };
        let op_from = first_at_or_after(&self.registry, TRANS_OP_TOPIC, 0, first.log_offset).await?;
        let (ops, _) = entries_from(&self.registry, TRANS_OP_TOPIC, op_from).await?;
        let half_recs = self.appender.read(halves.iter().map(|(_, e)| (e.log_offset, Some(e.size))).collect()).await?;
        for ((cq_offset, entry), rec) in halves.iter().zip(half_recs) {
            match rec {
                Ok(rec) => {
                    let half = self.half_from(*cq_offset, *entry, &rec);
                    self.pending.insert(entry.log_offset, half);
                }
                Err(e) => {
                    slog::error!(self.logger, "half message unreadable, dropped"; "log_offset" => entry.log_offset, "error" => %e)
                }
            }
        }
        let op_recs = self.appender.read(ops.iter().map(|(_, e)| (e.log_offset, Some(e.size))).collect()).await?;
        // half → (log offset, store time) of a commit whose copy is unconfirmed.
        let mut interrupted: BTreeMap<u64, (u64, i64)> = BTreeMap::new();
        for ((_, entry), rec) in ops.iter().zip(op_recs) {
            let Ok(rec) = rec else { continue };
            let Some((half, op)) = parse_op(&rec.message.body) else { continue };
            let ts = rec.head.store_ts;
            match op {
                Op::Commit => {
                    interrupted.insert(half, (entry.log_offset, ts));
                }
                Op::Done | Op::Rollback | Op::Expired => {
                    interrupted.remove(&half);
                    self.pending.remove(&half);
                }
                Op::Checked => {
                    if let Some(h) = self.pending.get_mut(&half) {
                        h.checks += 1;
                        h.next_check = ts.saturating_add(self.config.check_interval_ms as i64);
                    }
                }
            }
        }
        for (half, (op_offset, op_ts)) in interrupted {
            let Some(h) = self.pending.get(&half).cloned() else { continue };
            if !self.copy_exists(&h, op_offset, op_ts).await? {
                self.write_copy(&h).await?;
            }
            self.finish(half, Op::Done, TxnOutcome::Commit).await?;
            slog::info!(self.logger, "interrupted commit completed"; "half" => half);
        }
        slog::info!(self.logger, "transactions recovered"; "pending" => self.pending.len(), "from" => from);
        self.save();
        Ok(())
    }

    /// Whether the visible copy of `h` was written after its `commit` op
    /// record (at `op_offset`, stored at `op_ts`).
    pub(super) async fn copy_exists(&self, h: &Half, op_offset: u64, op_ts: i64) -> Result<bool> {
        let Some(queues) = self.appender.topics().get(&h.topic).map(|t| t.queues) else { return Ok(true) };
        let queue = h.queue.min(queues.saturating_sub(1));
        let mut offset = first_at_or_after(&self.registry, &h.topic, queue, op_offset).await?;
        loop {
            let page = pull_entries(&self.registry, &h.topic, queue, offset, 256, Duration::ZERO).await?;
            if page.entries.is_empty() {
                return Ok(false);
            }
            let recs =
                self.appender.read(page.entries.iter().map(|(_, e)| (e.log_offset, Some(e.size))).collect()).await?;
            for rec in recs.into_iter().flatten() {
                let origin = rec.message.properties.get(PROP_ORIGIN_LOG_OFFSET).and_then(|o| o.parse::<u64>().ok());
                if origin == Some(h.entry.log_offset) {
                    return Ok(true);
                }
                if rec.head.store_ts > op_ts + COPY_SEARCH_MS {
                    return Ok(false);
                }
            }
            offset = page.next_offset;
        }
    }
}
