//! The broker's own state: whether it takes writes (and if not, why and
//! since when), its disk and its log.

use crate::server::context::BrokerCore;
use crate::server::handlers::Reply;
use crate::store::retention::{DiskUsage, StatvfsUsage};
use brook_proto::response::BrokerStatus;
use brook_proto::Response;

/// What `brookctl broker status` shows.
pub fn status(core: &BrokerCore) -> Reply {
    let stats = &core.writer_stats;
    let (disk_full_since_ms, poisoned) = (stats.disk_full_since(), stats.poisoned());
    let dir = core.reader.segments().dir();
    Ok(Response::Status(Box::new(BrokerStatus {
        version: env!("CARGO_PKG_VERSION").to_string(),
        addr: core.advertised.to_string(),
        writable: disk_full_since_ms.is_none() && poisoned.is_none() && core.replication.refusal().is_none(),
        disk_full_since_ms,
        poisoned,
        // A file system that cannot be read shows as empty, not as an error:
        // the rest of the status is still worth having.
        disk_free_bytes: crate::store::retention::free_bytes(dir).unwrap_or(0),
        disk_used_ratio: StatvfsUsage.used_ratio(dir).unwrap_or(0.0),
        log_range: (core.reader.segments().min_offset(), stats.write_pos()),
        topics: u32::try_from(core.topics.list().len()).unwrap_or(u32::MAX),
        uptime_ms: u64::try_from(core.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        cluster: core.identity.cluster.clone(),
        broker_name: core.identity.broker_name.clone(),
        broker_id: core.identity.broker_id,
        msgs_in_per_s: core.traffic.rates().0,
        msgs_out_per_s: core.traffic.rates().1,
        replica: core.replication.status(),
    })))
}
