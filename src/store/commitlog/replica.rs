//! A slave's writes: bytes of its master's log, already sealed, placed at
//! the same offsets. The master padded and rolled its segments; the bytes
//! carry that, so a slave's segments fill and roll at the same places.

use super::space::GroupError;
use super::{Buf, CommitLog, FileWrite, Slice, WriteJob};
use std::io;

impl CommitLog {
    /// Writes `bytes` — the master's log from `offset`, which must be this
    /// log's end — rolling into the next segment where the master did. A
    /// write refused for space leaves the log as it was.
    pub async fn write_replicated(&mut self, offset: u64, bytes: bytes::Bytes) -> Result<(), GroupError> {
        if offset != self.write_pos {
            let msg = format!("replicated bytes at {offset}, but the log ends at {}", self.write_pos);
            return Err(GroupError::Failed(io::Error::new(io::ErrorKind::InvalidInput, msg)));
        }
        let before = self.place();
        let written = self.place_replicated(bytes).await;
        self.unless_out_of_space(before, written)
    }

    async fn place_replicated(&mut self, bytes: bytes::Bytes) -> io::Result<()> {
        let len = bytes.len();
        let mut job = WriteJob { bufs: vec![Buf::Shared(bytes)], ..WriteJob::default() };
        let mut at = 0;
        while at < len {
            if self.active_room() == 0 {
                self.roll().await?;
            }
            let n = (self.active_room() as usize).min(len - at);
            let write = FileWrite {
                file: self.active.clone(),
                offset: self.write_pos - self.active_base,
                slices: vec![Slice { buf: 0, start: at, end: at + n }],
            };
            let (base, file) = (self.active_base, self.active.clone());
            self.mark_dirty(base, &file);
            job.writes.push(write);
            self.write_pos += n as u64;
            at += n;
        }
        self.carry_to_block_end(&mut job);
        self.prepare_next();
        // Small writes on this thread, as the master's own groups are.
        let inline = len as u64 <= self.inline_write_max;
        self.run_job(job, inline).await
    }
}
