//! `failover`: three controller voters (name servers with `--controller`)
//! and a replica set of three brokers in controller mode, with the
//! defaults (1 s heartbeats, 3 s expiry); producers (`--producers`, each
//! awaiting every ack) and a push consumer group work through the name
//! servers while the master is SIGKILLed, `--rounds` times (the killed one
//! returns as a slave before the next round). Per round: the time from the
//! kill to the first send acknowledged by the new master, to the first
//! message sent after the kill that the consumers get, and the acks per
//! second before, between the kill and the new master's first ack, and
//! after.

use crate::broker::{Broker, NameServer};
use crate::load::message;
use crate::Common;
use brook_client::{Connection, ConsumeResult, Endpoint, Producer, PushConfig, PushConsumer, StartFrom, StoredMessage};
use brook_proto::controller::{ControllerRequest, ControllerResponse, ReplicaSetView};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "bench-failover";
const SET: &str = "bench-set";

/// What the scenario is asked to do.
pub(crate) struct FailoverRun {
    /// Masters killed, one after another.
    pub rounds: usize,
    /// Load before each kill.
    pub kill_after: Duration,
}

/// Acks and deliveries as they happen.
#[derive(Default)]
struct Timeline {
    /// Each ack: when, and which broker stored it.
    acks: Vec<(Instant, String)>,
    /// Each delivery: when, and the message's born time (ms since epoch).
    deliveries: Vec<(Instant, i64)>,
}

async fn set_view(names: &str) -> Option<ReplicaSetView> {
    for addr in names.split(',') {
        let asked = async {
            let conn = Connection::connect_as(addr, "brook-bench").await.ok()?;
            match conn.request(brook_proto::Request::Controller(ControllerRequest::Info)).await.ok()? {
                brook_proto::Response::Controller(ControllerResponse::Info(info)) => {
                    info.sets.into_iter().find(|s| s.broker_name == SET)
                }
                _ => None,
            }
        };
        if let Ok(Some(view)) = tokio::time::timeout(Duration::from_secs(2), asked).await {
            return Some(view);
        }
    }
    None
}

/// The members' index of the master, once every member is in sync.
async fn wait_settled(names: &str, members: &[Broker]) -> Result<usize, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(view) = set_view(names).await {
            let master = view.master.and_then(|m| view.members.get(&m).cloned());
            if let (Some(addr), true) = (master, view.in_sync.len() == members.len()) {
                if let Some(i) = members.iter().position(|b| b.addr == addr) {
                    return Ok(i);
                }
            }
        }
        if Instant::now() > deadline {
            return Err("the replica set did not settle (a master and every member in sync) in 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn member_env(common: &Common, names: &str, ip: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("BROOK_LISTEN".to_string(), format!("{ip}:10911")),
        ("BROOK_HTTP__LISTEN".to_string(), String::new()),
        ("BROOK_BROKER_NAME".to_string(), SET.to_string()),
        ("BROOK_NAMESRV_ADDRS".to_string(), names.to_string()),
        ("BROOK_CONTROLLER_MODE".to_string(), "true".to_string()),
    ];
    env.extend(
        common.broker_env.iter().filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))),
    );
    env
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

#[expect(clippy::too_many_lines, reason = "one scenario told start to end: cluster, load, rounds, summary")]
pub(crate) async fn run(common: &Common, plan: FailoverRun) -> Result<bool, String> {
    let peers = "1=127.0.3.1:9880,2=127.0.3.2:9880,3=127.0.3.3:9880";
    let mut dirs = Vec::new();
    let mut voters = Vec::new();
    for i in 1..=3u64 {
        voters.push(NameServer::start_voter(&format!("127.0.3.{i}:9876"), i, peers, &mut dirs)?);
    }
    let names = voters.iter().map(|v| v.addr.clone()).collect::<Vec<_>>().join(",");
    let mut members = Vec::new();
    for i in 11..=13 {
        members.push(Broker::start(&common.flush, &member_env(common, &names, &format!("127.0.3.{i}")))?);
    }
    let first = wait_settled(&names, &members).await?;
    let admin = Connection::connect_as(&members[first].addr, "brook-bench").await.map_err(|e| e.to_string())?;
    admin.create_topic(TOPIC, common.queues).await.map_err(|e| e.to_string())?;
    let router = brook_client::Router::connect(Endpoint::namesrv_list(&names), "brook-bench")
        .await
        .map_err(|e| e.to_string())?;
    while router.route(TOPIC).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let producer = Arc::new(Producer::connect(Endpoint::namesrv_list(&names)).await.map_err(|e| e.to_string())?);
    let mut tasks = Vec::new();
    for _ in 0..common.producers.max(1) {
        let (producer, timeline, stop, errors, size) =
            (producer.clone(), timeline.clone(), stop.clone(), errors.clone(), common.size);
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_secs(10), producer.send(message(TOPIC, size, String::new())))
                    .await
                {
                    Ok(Ok(ack)) => {
                        let broker = ack.msg_id.broker.to_string();
                        timeline.lock().map(|mut t| t.acks.push((Instant::now(), broker))).ok();
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    let consumer_timeline = timeline.clone();
    let config = PushConfig::new("bench-failover-group")
        .subscribe(TOPIC, None)
        .start_from(StartFrom::Latest)
        .namesrv(names.split(',').map(str::to_string));
    let consumer = PushConsumer::start(Endpoint::namesrv_list(&names), config, move |m: StoredMessage| {
        let timeline = consumer_timeline.clone();
        async move {
            timeline.lock().map(|mut t| t.deliveries.push((Instant::now(), m.message.born_ts))).ok();
            ConsumeResult::Success
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    let after = common.duration.unwrap_or(Duration::from_secs(5));
    println!(
        "failover: 3 voters, 3 brokers in controller mode, {} producers awaiting each ack, a push consumer",
        common.producers
    );
    println!("round  kill→first ack ms  kill→consumer ms  before msgs/s  kill→ack msgs/s  after msgs/s");
    let (mut to_ack, mut to_consumer) = (Vec::new(), Vec::new());
    let mut ok = true;
    for round in 0..plan.rounds.max(1) {
        let master = wait_settled(&names, &members).await?;
        tokio::time::sleep(plan.kill_after).await;
        let old = members[master].addr.clone();
        let killed_ms = brook_proto::time::now_ms();
        let killed = Instant::now();
        members[master].kill();
        let deadline = killed + Duration::from_secs(60);
        let first_ack = loop {
            let found =
                timeline.lock().ok().and_then(|t| t.acks.iter().find(|(at, b)| *at > killed && *b != old).map(|a| a.0));
            if let Some(at) = found {
                break Some(at);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let Some(first_ack) = first_ack else {
            println!("{round:>5}  no ack through a new master within 60 s");
            ok = false;
            break;
        };
        tokio::time::sleep(after).await;
        let t = timeline.lock().map_err(|_| "timeline poisoned")?;
        let consumed = t.deliveries.iter().find(|(at, born)| *at > killed && *born > killed_ms).map(|d| d.0);
        let count = |from: Instant, to: Instant| t.acks.iter().filter(|(at, _)| *at >= from && *at < to).count() as f64;
        let window = Duration::from_secs(2);
        let before = count(killed - window, killed) / window.as_secs_f64();
        let gap = first_ack - killed;
        let during = count(killed, first_ack) / gap.as_secs_f64().max(1e-3);
        let later = first_ack + Duration::from_millis(500);
        let after_rate = count(later, later + window) / window.as_secs_f64();
        drop(t);
        let consumer_ms = consumed.map(|c| (c - killed).as_millis());
        println!(
            "{round:>5}  {:>17}  {:>16}  {before:>13.0}  {during:>15.0}  {after_rate:>12.0}",
            gap.as_millis(),
            consumer_ms.map_or("never".into(), |ms| ms.to_string())
        );
        to_ack.push(gap.as_millis() as f64);
        to_consumer.push(consumer_ms.map_or(f64::INFINITY, |ms| ms as f64));
        members[master].restart()?;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    consumer.shutdown().await;
    println!(
        "RESULT scenario=failover rounds={} kill_to_first_ack_ms_median={:.0} kill_to_consumer_ms_median={:.0} send_errors={}",
        to_ack.len(),
        median(to_ack),
        median(to_consumer),
        errors.load(Ordering::Relaxed)
    );
    Ok(ok)
}
