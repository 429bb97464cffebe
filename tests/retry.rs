//! Retries and dead letters over a real brookd: a failing message comes
//! back through the group's retry topic after each back-off with its count,
//! dead-letters after the group's maximum and can be resent from there;
//! orderly consumers retry in place and keep order; a consumer process
//! killed while holding messages loses none of them.

mod common;

use brook_client::{ConsumeResult, Message, Producer, PushConfig, PushConsumer, StartFrom, StoredMessage};
use common::{base_env, wait_for, Brookd};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env(dir: &Path) -> Vec<(String, String)> {
    base_env(dir, "std")
}

/// Every delivery: when, and what.
type Deliveries = Arc<Mutex<Vec<(Instant, StoredMessage)>>>;

fn config(group: &str, topic: &str) -> PushConfig {
    let mut config = PushConfig::new(group).subscribe(topic, None).start_from(StartFrom::Earliest);
    config.long_poll = Duration::from_millis(500);
    config.commit_interval = Duration::from_millis(100);
    config.heartbeat_interval = Duration::from_millis(500);
    config
}

/// A consumer recording each delivery and failing while `fail` says so.
async fn consumer(
    broker: &Brookd,
    config: PushConfig,
    seen: Deliveries,
    fail: impl Fn(&StoredMessage) -> bool + Send + Sync + 'static,
) -> PushConsumer {
    let fail = Arc::new(fail);
    PushConsumer::start(&broker.addr, config, move |m: StoredMessage| {
        let (seen, fail) = (seen.clone(), fail.clone());
        async move {
            let failed = fail(&m);
            seen.lock().expect("lock").push((Instant::now(), m));
            if failed {
                ConsumeResult::Later
            } else {
                ConsumeResult::Success
            }
        }
    })
    .await
    .expect("start consumer")
}

fn body(m: &StoredMessage) -> String {
    String::from_utf8_lossy(&m.message.body).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_message_returns_after_each_backoff_with_its_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    broker.connect().await.create_topic("pay", 2).await.expect("create");
    let seen: Deliveries = Arc::default();
    let backoff = [100, 200, 300].map(Duration::from_millis).to_vec();
    let c = consumer(&broker, config("payers", "pay").retry(16, backoff.clone()), seen.clone(), |m| {
        body(m) == "flaky" && m.reconsume_times < 3
    })
    .await;
    let producer = Producer::connect(&broker.addr).await.expect("producer");
    let ack = producer.send(Message::new("pay", "flaky").with_key("order-1")).await.expect("send");
    producer.send(Message::new("pay", "steady")).await.expect("send");
    wait_for("four deliveries of the flaky message", Duration::from_secs(20), || {
        seen.lock().expect("lock").iter().filter(|(_, m)| body(m) == "flaky").count() >= 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let seen = seen.lock().expect("lock").clone();
    let flaky: Vec<&(Instant, StoredMessage)> = seen.iter().filter(|(_, m)| body(m) == "flaky").collect();
    assert_eq!(flaky.len(), 4, "three failures, then success, then nothing");
    assert_eq!(seen.iter().filter(|(_, m)| body(m) == "steady").count(), 1);
    for (n, (_, m)) in flaky.iter().enumerate() {
        assert_eq!(m.reconsume_times, n as u32, "reconsume count of delivery {n}");
        assert_eq!(m.message.topic, "pay", "the listener sees the original topic");
        assert_eq!(m.msg_id, ack.msg_id.to_string(), "the id is the one the producer got");
        assert_eq!(m.message.keys, vec!["order-1".to_string()]);
    }
    for (n, pair) in flaky.windows(2).enumerate() {
        let gap = pair[1].0 - pair[0].0;
        assert!(gap >= backoff[n], "retry {} came after {gap:?}, before its back-off {:?}", n + 1, backoff[n]);
    }
    c.shutdown().await;
    let info = broker.connect().await.describe_group("payers").await.expect("describe");
    assert_eq!(info.dlq_messages, 0);
    assert_eq!(info.offsets.iter().map(|o| o.lag).sum::<u64>(), 0, "all committed: {:?}", info.offsets);
}

fn ctl(broker: &Brookd, args: &[&str]) -> String {
    let out = Command::new(common::bin("brookctl")).arg("--addr").arg(&broker.addr).args(args).output().expect("run");
    assert!(out.status.success(), "brookctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_maximum_a_message_is_dead_lettered_once_and_can_be_resent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    broker.connect().await.create_topic("mail", 1).await.expect("create");
    let seen: Deliveries = Arc::default();
    let healed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let fail = {
        let healed = healed.clone();
        move |m: &StoredMessage| body(m) == "poison" && !healed.load(std::sync::atomic::Ordering::SeqCst)
    };
    let c = consumer(&broker, config("mailers", "mail").retry(2, vec![Duration::from_millis(50)]), seen.clone(), fail)
        .await;
    let producer = Producer::connect(&broker.addr).await.expect("producer");
    let ack = producer.send(Message::new("mail", "poison")).await.expect("send");
    let conn = broker.connect().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while conn.describe_group("mailers").await.expect("describe").dlq_messages == 0 {
        assert!(Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seen.lock().expect("lock").len(), 3, "first delivery and two retries, then no more");
    assert_eq!(conn.describe_group("mailers").await.expect("describe").dlq_messages, 1, "dead-lettered once");
    let listed: Vec<Value> = ctl(&broker, &["dlq", "list", "mailers", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(listed.len(), 1);
    let id = ack.msg_id.to_string();
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(listed[0]["reconsume"], 3);
    assert_eq!(listed[0]["body"], "poison");
    assert!(ctl(&broker, &["group", "describe", "mailers"]).contains("1 dead letters"));

    healed.store(true, std::sync::atomic::Ordering::SeqCst);
    let resent = ctl(&broker, &["dlq", "resend", "mailers", "--id", &id]);
    assert!(resent.contains(&id), "{resent}");
    wait_for("the resent message", Duration::from_secs(10), || seen.lock().expect("lock").len() == 4).await;
    {
        let seen = seen.lock().expect("lock");
        let (_, last) = seen.last().expect("delivery");
        assert_eq!((body(last).as_str(), last.reconsume_times, last.msg_id.as_str()), ("poison", 0, id.as_str()));
        assert_eq!(last.message.topic, "mail");
    }
    let missing = Command::new(common::bin("brookctl"))
        .args(["--addr", &broker.addr, "dlq", "resend", "mailers", "--id", "not-an-id"])
        .output()
        .expect("run");
    assert!(!missing.status.success());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderly_consumers_retry_in_place_then_dead_letter_and_keep_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    broker.connect().await.create_topic("ledger", 1).await.expect("create");
    let mut cfg = config("bookkeepers", "ledger").orderly(true);
    cfg.max_reconsume_times = Some(2);
    cfg.suspend = Duration::from_millis(100);
    let seen: Deliveries = Arc::default();
    let c = consumer(&broker, cfg, seen.clone(), |m| body(m) == "m1").await;
    let producer = Producer::connect(&broker.addr).await.expect("producer");
    for i in 0..5 {
        producer.send_to(Message::new("ledger", format!("m{i}")), 0).await.expect("send");
    }
    wait_for("the queue to move past the failing message", Duration::from_secs(20), || {
        seen.lock().expect("lock").iter().any(|(_, m)| body(m) == "m4")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = seen.lock().expect("lock").clone();
    let order: Vec<(String, u32)> = seen.iter().map(|(_, m)| (body(m), m.reconsume_times)).collect();
    let expected: Vec<(String, u32)> = [("m0", 0), ("m1", 0), ("m1", 1), ("m1", 2), ("m2", 0), ("m3", 0), ("m4", 0)]
        .iter()
        .map(|(b, n)| (b.to_string(), *n))
        .collect();
    assert_eq!(order, expected, "retried in place, then dead-lettered, order kept");
    for pair in seen.windows(2).filter(|p| body(&p[0].1) == "m1" && body(&p[1].1) == "m1") {
        assert!(pair[1].0 - pair[0].0 >= Duration::from_millis(100), "suspended between retries");
    }
    c.shutdown().await;
    let conn = broker.connect().await;
    let dead = conn.dlq_list("bookkeepers").await.expect("dlq");
    assert_eq!(dead.iter().map(body).collect::<Vec<_>>(), vec!["m1".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_held_by_a_killed_consumer_process_go_to_another_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    let conn = broker.connect().await;
    conn.create_topic("jobs", 1).await.expect("create");
    let producer = Producer::connect(&broker.addr).await.expect("producer");
    for i in 0..10 {
        producer.send(Message::new("jobs", format!("job-{i}"))).await.expect("send");
    }
    // A consumer process that takes a message and sits on it.
    let mut holder = Command::new(common::bin("brookctl"))
        .args(["--addr", &broker.addr, "consume", "jobs", "--group", "workers", "--from", "earliest"])
        .args(["--hold-ms", "600000", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn consumer");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = conn.describe_group("workers").await;
        if info.is_ok_and(|i| i.members.iter().any(|m| m.queues.iter().any(|q| q.topic == "jobs"))) {
            break;
        }
        assert!(Instant::now() < deadline, "the consumer process never joined");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.kill().expect("SIGKILL the consumer");
    let _ = holder.wait();
    let seen: Deliveries = Arc::default();
    let c = consumer(&broker, config("workers", "jobs"), seen.clone(), |_| false).await;
    wait_for("every job", Duration::from_secs(20), || seen.lock().expect("lock").len() >= 10).await;
    let mut bodies: Vec<String> = seen.lock().expect("lock").iter().map(|(_, m)| body(m)).collect();
    bodies.sort();
    let mut expected: Vec<String> = (0..10).map(|i| format!("job-{i}")).collect();
    expected.sort();
    assert_eq!(bodies, expected, "nothing lost because a consumer died");
    c.shutdown().await;
}

#[test]
fn brookctl_shows_a_retry_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    ctl(&broker, &["topic", "create", "cli-retry", "--queues", "1"]);
    ctl(&broker, &["send", "cli-retry", "again"]);
    let out = ctl(
        &broker,
        &[
            "consume",
            "cli-retry",
            "--group",
            "shell",
            "--from",
            "earliest",
            "--fail-times",
            "2",
            "--retry-backoff",
            "100ms",
            "--count",
            "1",
            "--timeout-ms",
            "20000",
            "--json",
        ],
    );
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    let chain: Vec<(String, u64)> = lines
        .iter()
        .map(|l| (l["result"].as_str().unwrap_or_default().to_string(), l["reconsume"].as_u64().unwrap_or(99)))
        .collect();
    assert_eq!(chain, vec![("later".to_string(), 0), ("later".to_string(), 1), ("success".to_string(), 2)], "{out}");
    assert!(lines.iter().all(|l| l["topic"] == "cli-retry" && l["body"] == "again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_panics_or_overruns_its_timeout_is_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    broker.connect().await.create_topic("slow", 1).await.expect("create");
    let mut cfg = config("sloths", "slow").retry(16, vec![Duration::from_millis(50)]);
    cfg.consume_timeout = Duration::from_millis(300);
    let seen: Deliveries = Arc::default();
    let c = PushConsumer::start(&broker.addr, cfg, {
        let seen = seen.clone();
        move |m: StoredMessage| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("lock").push((Instant::now(), m.clone()));
                match m.reconsume_times {
                    0 => panic!("listener bug on the first delivery"),
                    1 => tokio::time::sleep(Duration::from_secs(5)).await,
                    _ => {}
                }
                ConsumeResult::Success
            }
        }
    })
    .await
    .expect("start");
    Producer::connect(&broker.addr).await.expect("producer").send(Message::new("slow", "x")).await.expect("send");
    wait_for("the third delivery", Duration::from_secs(20), || seen.lock().expect("lock").len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts: Vec<u32> = seen.lock().expect("lock").iter().map(|(_, m)| m.reconsume_times).collect();
    assert_eq!(counts, vec![0, 1, 2], "a panic and a timeout each cost one retry");
    c.shutdown().await;
}
