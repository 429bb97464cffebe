//! A send's wait under `replication = sync`: its records are acknowledged
//! once every in-sync replica holds them, or the answer gives up after
//! `replication_timeout_ms` with `ReplicationTimeout` (the records stay as
//! they are, readable once replicated).

use crate::actors::appender::AppendWait;
use crate::actors::queue::fanout::Placements;
use crate::error::Error;
use crate::server::context::BrokerCore;

/// Where the `parts` parts of a produce were stored, or, past the
/// replication timeout, that they were not acknowledged.
pub(super) async fn wait(core: &BrokerCore, stored: AppendWait, parts: usize) -> Placements {
    if !core.replication.is_sync() {
        return stored.wait().await;
    }
    tokio::time::timeout(core.replication.timeout, stored.wait()).await.unwrap_or_else(|_| {
        let timeout_ms = u64::try_from(core.replication.timeout.as_millis()).unwrap_or(u64::MAX);
        let end = core.writer_stats.write_pos();
        Placements {
            stored: Vec::new(),
            outcomes: (0..parts).map(|_| Err(Error::ReplicationTimeout { timeout_ms, end })).collect(),
        }
    })
}
