//! `produce`: send as fast as the mode (sync, pipelined, batch) allows.

use crate::broker::Broker;
use crate::disk;
use crate::scenarios::{budget, finish, produce_load, topic};
use crate::Common;
use brook_client::Connection;

pub(crate) async fn run(broker: &Broker, admin: &Connection, common: &Common) -> Result<bool, String> {
    let targets = topic(admin, "bench", common.queues).await?;
    // Sync flush: the disk's own fdatasync, just before the load, so the
    // ack's share that is not the disk comes from one run.
    let fsync = match common.flush.as_str() {
        "sync" => {
            Some(disk::probe(&broker.scratch_dir(), FSYNC_PROBE_ROUNDS).map_err(|e| format!("fsync probe: {e}"))?)
        }
        _ => None,
    };
    let (acks, mut summary) = produce_load(broker, common, targets, budget(common), "produce").await?;
    if let Some(rss) = broker.rss_bytes() {
        summary.notes.push(("broker rss".into(), format!("{} MiB", rss >> 20)));
    }
    if let Some(fsync) = fsync {
        let ack_p50 = if summary.hist.is_empty() { 0 } else { summary.hist.value_at_quantile(0.5) };
        let ratio = ack_p50 as f64 / fsync.p50_us.max(1) as f64;
        summary.notes.push((
            "disk fdatasync".into(),
            format!(
                "p50 {} µs p99 {} µs (4 KiB pwrite + fdatasync, same file system, just before); ack p50 / it = {ratio:.2}",
                fsync.p50_us, fsync.p99_us
            ),
        ));
        summary.fields.push(("fsync_p50_us".into(), fsync.p50_us.to_string()));
        summary.fields.push(("ack_over_fsync".into(), format!("{ratio:.2}")));
    }
    finish(admin, common, &acks, summary).await
}

/// pwrite + fdatasync pairs the probe times (a second or less).
const FSYNC_PROBE_ROUNDS: usize = 2000;
