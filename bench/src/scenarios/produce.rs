//! `produce`: send as fast as the mode (sync, pipelined, batch) allows.

use crate::broker::Broker;
use crate::scenarios::{budget, finish, produce_load, topic};
use crate::Common;
use brook_client::Connection;

pub(crate) async fn run(broker: &Broker, admin: &Connection, common: &Common) -> Result<bool, String> {
    let targets = topic(admin, "bench", common.queues).await?;
    let (acks, mut summary) = produce_load(broker, common, targets, budget(common), "produce").await?;
    if let Some(rss) = broker.rss_bytes() {
        summary.notes.push(("broker rss".into(), format!("{} MiB", rss >> 20)));
    }
    finish(admin, common, &acks, summary).await
}
