//! `replication`: a master and a slave of its own. First how far the slave
//! trails (async replication) while producers pipeline into the master —
//! the age of each message of one queue when a consumer reading the slave
//! gets it — then how fast a slave started `--catchup-gib` behind catches
//! up. The cost of sync replication is `produce --slave` with
//! `--broker-env BROOK_REPLICATION=sync` against `produce` alone.

use crate::broker::Broker;
use crate::scenarios::produce;
use crate::stats::new_histogram;
use crate::Common;
use brook_client::{Connection, Message};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Waits until the broker at `admin` counts a slave in its in-sync set.
pub(crate) async fn wait_in_sync(admin: &Connection) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = admin.broker_status().await.map_err(|e| e.to_string())?;
        if status.replica.slaves.iter().any(|s| s.in_sync) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the slave never joined the in-sync set".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn log_end(conn: &Connection) -> Result<u64, String> {
    Ok(conn.broker_status().await.map_err(|e| e.to_string())?.replica.end)
}

fn broker_env(common: &Common) -> Vec<(String, String)> {
    common.broker_env.iter().filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
}

pub(crate) async fn run(common: &Common, catchup_gib: u64) -> Result<bool, String> {
    let env = broker_env(common);
    let mut broker = Broker::start_master(&common.flush, &env)?;
    broker.start_slave()?;
    let admin = Connection::connect_as(&broker.addr, "brook-bench").await.map_err(|e| e.to_string())?;
    wait_in_sync(&admin).await?;
    let slave_addr = broker.slave.as_ref().map(|s| s.addr.clone()).ok_or("no slave")?;
    let (master, slave) = (
        Connection::connect(&broker.addr).await.map_err(|e| e.to_string())?,
        Connection::connect(&slave_addr).await.map_err(|e| e.to_string())?,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_lag(master, slave, stop.clone()));
    let ok = produce::run(&broker, &admin, common).await?;
    stop.store(true, Ordering::Relaxed);
    let lag = sampler.await.map_err(|e| e.to_string())??;
    println!(
        "replication lag (async, under the load above; store on the master → read from the slave, ms resolution): p50 {:.0} ms p99 {:.0} ms p999 {:.0} ms max {:.0} ms over {} messages",
        lag.value_at_quantile(0.5) as f64 / 1000.0,
        lag.value_at_quantile(0.99) as f64 / 1000.0,
        lag.value_at_quantile(0.999) as f64 / 1000.0,
        lag.max() as f64 / 1000.0,
        lag.len()
    );
    drop(broker);
    if catchup_gib > 0 {
        catch_up(common, &env, catchup_gib).await?;
    }
    Ok(ok)
}

/// Reads queue 0 of the bench topic from the slave, long-polling, and
/// takes each message's age when it arrives: now − its store time on the
/// master (one clock: the same machine), in whole milliseconds — how long
/// until a consumer of the slave could have it.
async fn sample_lag(
    _master: Connection,
    slave: Connection,
    stop: Arc<AtomicBool>,
) -> Result<hdrhistogram::Histogram<u64>, String> {
    let mut hist = new_histogram();
    let mut offset = 0;
    while !stop.load(Ordering::Relaxed) {
        match slave.pull("bench", 0, offset, 256, 0, None, 200).await {
            Ok(page) => {
                let now = brook_proto::time::now_ms();
                for m in &page.messages {
                    let _ = hist.record(((now - m.store_ts).max(0) as u64 * 1000).max(1));
                }
                offset = page.next_offset;
            }
            // The topic reaches the slave a moment after it is created.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    Ok(hist)
}

/// Fills a master's log with `gib` GiB, then starts a slave and times it
/// until its log ends where the master's does.
async fn catch_up(common: &Common, env: &[(String, String)], gib: u64) -> Result<(), String> {
    let mut broker = Broker::start_master(&common.flush, env)?;
    let conn = Connection::connect(&broker.addr).await.map_err(|e| e.to_string())?;
    conn.create_topic("catchup", 8).await.map_err(|e| e.to_string())?;
    let target = gib << 30;
    let batch: Vec<Message> = (0..16).map(|_| Message::new("catchup", vec![b'c'; 4096])).collect();
    let filling = Instant::now();
    let mut in_flight = std::collections::VecDeque::new();
    let mut queue = 0;
    while log_end(&conn).await? < target {
        for _ in 0..256 {
            in_flight.push_back(conn.send("catchup", queue % 8, batch.clone()));
            queue += 1;
            if in_flight.len() >= 64 {
                if let Some(sent) = in_flight.pop_front() {
                    sent.await.map_err(|e| e.to_string())?;
                }
            }
        }
    }
    for sent in in_flight {
        sent.await.map_err(|e| e.to_string())?;
    }
    let end = log_end(&conn).await?;
    println!("catch-up: master filled to {} MiB in {:.1} s", end >> 20, filling.elapsed().as_secs_f64());
    let started = Instant::now();
    broker.start_slave()?;
    let slave_addr = broker.slave.as_ref().map(|s| s.addr.clone()).ok_or("no slave")?;
    let slave = Connection::connect(&slave_addr).await.map_err(|e| e.to_string())?;
    while log_end(&slave).await? < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "catch-up: a slave started {} MiB behind caught up in {secs:.2} s: {:.0} MB/s (process start included)",
        end >> 20,
        end as f64 / 1e6 / secs
    );
    Ok(())
}
