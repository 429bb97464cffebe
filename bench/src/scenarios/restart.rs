//! `restart`: fill the log to `--log-gib`, SIGKILL the broker, and time
//! until it serves again.

use crate::broker::Broker;
use crate::load::{Budget, Mode};
use crate::scenarios::{produce_load, topic};
use crate::stats::{new_histogram, Summary};
use crate::Common;
use brook_client::Connection;
use std::time::Instant;

pub(crate) async fn run(mut broker: Broker, admin: &Connection, common: &Common, log_gib: u64) -> Result<bool, String> {
    let targets = topic(admin, "bench-restart", common.queues).await?;
    let fill = Common { mode: Mode::Batch, batch: 256, inflight: 4, size: common.size.max(1024), ..common.clone() };
    let goal = log_gib << 30;
    let (mut stored, mut body_bytes) = (0, 0);
    broker.log_bytes().ok_or("--addr brokers cannot be restarted")?;
    while body_bytes < goal {
        let (_, filled) =
            produce_load(&broker, &fill, targets.clone(), Budget::new(Some(200_000), None), "fill").await?;
        stored += filled.messages;
        body_bytes += filled.bytes;
    }
    let log = broker.log_bytes().unwrap_or(0);
    eprintln!(
        "stored {stored} messages ({:.2} GiB of bodies, {:.2} GiB of segment files); SIGKILL",
        body_bytes as f64 / f64::from(1u32 << 30),
        log as f64 / f64::from(1u32 << 30)
    );
    let listening = broker.kill_and_restart()?;
    let started = Instant::now();
    let conn = Connection::connect_as(&broker.addr, "restart-probe").await.map_err(|e| e.to_string())?;
    conn.describe_topic("bench-restart").await.map_err(|e| e.to_string())?;
    let serving = listening + started.elapsed();
    let mut hist = new_histogram();
    let _ = hist.record(serving.as_micros() as u64);
    let summary = Summary {
        scenario: "restart".into(),
        messages: 0,
        bytes: 0,
        errors: 0,
        elapsed: serving,
        hist,
        latency_of: "kill→serving",
        fields: Vec::new(),
        notes: vec![
            (
                "log".into(),
                format!(
                    "{:.2} GiB of bodies in {:.2} GiB of segments",
                    body_bytes as f64 / f64::from(1u32 << 30),
                    log as f64 / f64::from(1u32 << 30)
                ),
            ),
            (
                "serving again".into(),
                format!("{:.3} s after SIGKILL (listening at {:.3} s)", serving.as_secs_f64(), listening.as_secs_f64()),
            ),
        ],
    };
    summary.print();
    Ok(true)
}
