//! Find and replay over a real brookd: messages by id, by key (across a
//! segment roll, and after SIGKILL with the index never flushed or deleted),
//! offsets by time, a group reset to a time that replays exactly what was
//! stored since, tag filters whose hashes collide, and property filters
//! (including a malformed one refused with its position).

mod common;

use brook_client::{
    ConsumeResult, Message, Producer, PushConfig, PushConsumer, ResetTo, StartFrom, StoredMessage, Subscription,
};
use brook_proto::ErrorCode;
use common::{base_env, Brookd};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env(dir: &Path) -> Vec<(String, String)> {
    let mut env = base_env(dir, "std");
    env.push(("BROOK_STORE__INDEX_SLOTS".into(), "64".into()));
    env.push(("BROOK_STORE__INDEX_ENTRIES".into(), "50".into()));
    env
}

fn body(m: &StoredMessage) -> String {
    String::from_utf8_lossy(&m.message.body).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_id_and_by_key_across_a_segment_roll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    let conn = broker.connect().await;
    conn.create_topic("orders", 2).await.expect("create");
    let producer = Producer::connect(&broker.addr).await.expect("producer");
    let filler = "f".repeat(2_000);
    let mut acks = Vec::new();
    for round in 0..3 {
        let msg = Message::new("orders", format!("order-42 event {round}"))
            .with_key("order-42")
            .with_tags("created")
            .with_property("region", "eu");
        acks.push(producer.send(msg).await.expect("send"));
        // ~80 KiB between them: each lands in another 64 KiB segment.
        for i in 0..40 {
            producer
                .send(Message::new("orders", filler.clone()).with_key(format!("filler-{round}-{i}")))
                .await
                .expect("send");
        }
    }
    let segments = std::fs::read_dir(dir.path().join("commitlog")).expect("commitlog").count();
    assert!(segments >= 3, "the log rolled ({segments} segments)");
    // By id: the whole message.
    let got = conn.get_message(&acks[1].msg_id.to_string()).await.expect("by id");
    assert_eq!(body(&got), "order-42 event 1");
    assert_eq!((got.queue, got.queue_offset), (acks[1].queue, acks[1].queue_offset));
    assert_eq!(got.message.keys, vec!["order-42".to_string()]);
    assert_eq!(got.message.tags.as_deref(), Some("created"));
    assert_eq!(got.message.properties.get("region").map(String::as_str), Some("eu"));
    assert!(got.store_ts >= got.message.born_ts);
    let bad = conn.get_message("not-an-id").await.expect_err("bad id");
    assert_eq!(bad.code(), Some(ErrorCode::InvalidArgument));
    let nowhere = brook_client::MessageId { broker: broker.addr.parse().expect("addr"), log_offset: 1 << 40 };
    let missing = conn.get_message(&nowhere.to_string()).await.expect_err("nothing there");
    assert_eq!(missing.code(), Some(ErrorCode::MessageNotFound));
    // By key: all three, newest first, across the segments.
    let found = conn.query_by_key("orders", "order-42", 0, i64::MAX, 10).await.expect("by key");
    let bodies: Vec<String> = found.iter().map(body).collect();
    assert_eq!(bodies, vec!["order-42 event 2", "order-42 event 1", "order-42 event 0"]);
    assert_eq!(found[0].msg_id, acks[2].msg_id.to_string());
    // A time window and a limit.
    let window =
        conn.query_by_key("orders", "order-42", found[1].store_ts, found[1].store_ts, 10).await.expect("window");
    assert!(window.iter().all(|m| m.store_ts == found[1].store_ts) && !window.is_empty());
    assert_eq!(conn.query_by_key("orders", "order-42", 0, i64::MAX, 2).await.expect("limit").len(), 2);
    // Another topic's key is not this one's.
    assert!(conn.query_by_key("other", "order-42", 0, i64::MAX, 10).await.expect("other").is_empty());
    // brookctl shows the same.
    let out = std::process::Command::new(common::bin("brookctl"))
        .args(["--addr", &broker.addr, "msg", "by-key", "orders", "order-42", "--json"])
        .output()
        .expect("brookctl");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    let out = std::process::Command::new(common::bin("brookctl"))
        .args(["--addr", &broker.addr, "msg", "get", &acks[0].msg_id.to_string()])
        .output()
        .expect("brookctl");
    assert!(String::from_utf8_lossy(&out.stdout).contains("order-42 event 0"));
}

/// In one batch, messages with no key, two keys and one key: each key
/// finds exactly the messages that carry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_a_batch_point_at_their_own_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    let conn = broker.connect().await;
    conn.create_topic("mixed", 1).await.expect("create");
    let batch = vec![
        Message::new("mixed", "none"),
        Message::new("mixed", "a and b").with_key("a").with_key("b"),
        Message::new("mixed", "b only").with_key("b"),
        Message::new("mixed", "none again"),
        Message::new("mixed", "c").with_key("c"),
    ];
    let acks = conn.send("mixed", 0, batch).await.expect("send");
    assert_eq!(acks.len(), 5);
    let deadline = Instant::now() + Duration::from_secs(20);
    let found = |key: &'static str| {
        let conn = conn.clone();
        async move {
            let found = conn.query_by_key("mixed", key, 0, i64::MAX, 10).await.expect("by key");
            found.iter().map(body).collect::<Vec<_>>()
        }
    };
    // The indexer drains its buffer on a short timer.
    while found("c").await.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(found("a").await, vec!["a and b"]);
    assert_eq!(found("b").await, vec!["b only", "a and b"]);
    assert_eq!(found("c").await, vec!["c"]);
    assert!(found("none").await.is_empty());
}

async fn keyed_then_killed(dir: &Path, extra: &[(&str, &str)]) -> Brookd {
    let mut env = env(dir);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut broker = Brookd::start(&env);
    let conn = broker.connect().await;
    conn.create_topic("crash", 1).await.expect("create");
    let producer = Producer::connect(&broker.addr).await.expect("producer");
    for i in 0..120 {
        producer.send(Message::new("crash", format!("m{i}")).with_key(format!("k{}", i % 7))).await.expect("send");
    }
    broker.kill9();
    broker
}

async fn assert_keys_found(broker: &Brookd) {
    let conn = broker.connect().await;
    for k in 0..7 {
        let found = conn.query_by_key("crash", &format!("k{k}"), 0, i64::MAX, 100).await.expect("by key");
        let expected = (0..120).filter(|i| i % 7 == k).count();
        assert_eq!(found.len(), expected, "key k{k}");
        let unique: BTreeSet<u64> = found.iter().map(|m| m.log_offset).collect();
        assert_eq!(unique.len(), expected, "no duplicates");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_written_before_a_sigkill_are_found_after_restart() {
    // No checkpoint ran: the index on disk covers nothing; the restart
    // re-indexes the log.
    let dir = tempfile::tempdir().expect("tempdir");
    let _ = keyed_then_killed(dir.path(), &[("BROOK_STORE__CHECKPOINT_INTERVAL_MS", "600000")]).await;
    let broker = Brookd::start(&env(dir.path()));
    assert_keys_found(&broker).await;
    // The index deleted outright is rebuilt from the log too.
    drop(broker);
    std::fs::remove_dir_all(dir.path().join("index")).expect("remove index");
    let broker = Brookd::start(&env(dir.path()));
    assert_keys_found(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_by_time_and_a_reset_replays_exactly_what_was_stored_since() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    let conn = broker.connect().await;
    conn.create_topic("replay", 4).await.expect("create");
    let producer = Producer::connect(&broker.addr).await.expect("producer");
    for i in 0..500 {
        producer.send(Message::new("replay", format!("a{i}"))).await.expect("send");
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let middle = brook::clock::now_ms();
    tokio::time::sleep(Duration::from_millis(30)).await;
    for i in 0..500 {
        producer.send(Message::new("replay", format!("b{i}"))).await.expect("send");
    }
    let at = conn.offsets_at_time("replay", middle).await.expect("at time");
    let before: u64 = at.iter().map(|o| o.offset).sum();
    assert_eq!(before, 500, "offsets at the middle time split the two halves: {at:?}");

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut config = PushConfig::new("replayers").subscribe("replay", None).start_from(StartFrom::Earliest);
    config.long_poll = Duration::from_millis(300);
    config.commit_interval = Duration::from_millis(100);
    let consumer = PushConsumer::start(&broker.addr, config, {
        let seen = seen.clone();
        move |m: StoredMessage| {
            let seen = seen.clone();
            async move {
                seen.lock().expect("lock").push(body(&m));
                ConsumeResult::Success
            }
        }
    })
    .await
    .expect("consumer");
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().expect("lock").len() < 1_000 {
        assert!(Instant::now() < deadline, "first pass incomplete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seen.lock().expect("lock").len(), 1_000);
    seen.lock().expect("lock").clear();
    // Reset to the middle while the member keeps running.
    let out = std::process::Command::new(common::bin("brookctl"))
        .args(["--addr", &broker.addr, "group", "reset", "replayers", "replay", "--to-time", &middle.to_string()])
        .output()
        .expect("brookctl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.lock().expect("lock").len() < 500 {
        assert!(Instant::now() < deadline, "replay incomplete: {}", seen.lock().expect("lock").len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let replayed: BTreeSet<String> = seen.lock().expect("lock").iter().cloned().collect();
    let expected: BTreeSet<String> = (0..500).map(|i| format!("b{i}")).collect();
    assert_eq!(seen.lock().expect("lock").len(), 500, "each replayed once");
    assert_eq!(replayed, expected, "exactly the messages stored since the time");
    // Earliest / explicit offsets answer with where they put the group.
    let reset = conn.reset_offsets("replayers", "replay", ResetTo::Offsets(vec![(0, 3)])).await.expect("offsets");
    assert_eq!((reset[0].queue, reset[0].offset), (0, 3));
    let bad = conn.reset_offsets("replayers", "replay", ResetTo::Offsets(vec![(9, 0)])).await.expect_err("no queue 9");
    assert_eq!(bad.code(), Some(ErrorCode::QueueOutOfRange));
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_filters_recheck_strings_when_hashes_collide() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Brookd::start(&env(dir.path()));
    let conn = broker.connect().await;
    conn.create_topic("tagged", 1).await.expect("create");
    for (i, tag) in ["TagA", "TagB", "TagA", "TagC"].iter().enumerate() {
        conn.send("tagged", 0, vec![Message::new("tagged", format!("{tag}-{i}")).with_tags(*tag)]).await.expect("send");
    }
    assert!(broker.terminate().success());
    // Forge a collision: entry 1 (TagB) gets TagA's hash in the consume
    // queue; a clean stop means the restart keeps it.
    let cq = dir.path().join("consumequeue/tagged/0/00000000000000000000");
    let mut bytes = std::fs::read(&cq).expect("cq");
    let a_hash = bytes[12..20].to_vec();
    bytes[20 + 12..20 + 20].copy_from_slice(&a_hash);
    std::fs::write(&cq, &bytes).expect("forge");
    let broker = Brookd::start(&env(dir.path()));
    let conn = broker.connect().await;
    let page = conn.pull("tagged", 0, 0, 32, 0, Some("TagA"), 0).await.expect("pull");
    let bodies: Vec<String> = page.messages.iter().map(body).collect();
    assert_eq!(bodies, vec!["TagA-0", "TagA-2"], "the colliding TagB is not delivered");
    assert_eq!(page.next_offset, 4, "the offset moves past filtered messages");
    let page = conn.pull("tagged", 0, 0, 32, 0, Some("TagB || TagC"), 0).await.expect("pull");
    assert_eq!(page.messages.iter().map(body).collect::<Vec<_>>(), vec!["TagC-3"], "hash pass skips the forged one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_filters_run_on_the_broker_and_bad_ones_are_refused_with_a_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    let conn = broker.connect().await;
    conn.create_topic("payments", 1).await.expect("create");
    let rows = [("eu", "150"), ("us", "500"), ("eu", "50"), ("asia", "300")];
    for (i, (region, amount)) in rows.iter().enumerate() {
        let msg =
            Message::new("payments", format!("p{i}")).with_property("region", *region).with_property("amount", *amount);
        conn.send("payments", 0, vec![msg]).await.expect("send");
    }
    conn.send("payments", 0, vec![Message::new("payments", "no-props")]).await.expect("send");
    let sql = "(region = 'eu' AND amount > 100) OR region IN ('asia')";
    let page = conn.pull_filtered("payments", 0, 0, 32, (None, Some(sql)), 0).await.expect("pull");
    assert_eq!(page.messages.iter().map(body).collect::<Vec<_>>(), vec!["p0", "p3"]);
    assert_eq!(page.next_offset, 5);
    let page = conn.pull_filtered("payments", 0, 0, 32, (None, Some("region IS NULL")), 0).await.expect("pull");
    assert_eq!(page.messages.iter().map(body).collect::<Vec<_>>(), vec!["no-props"]);

    // A push consumer subscribing with a malformed filter is refused at
    // once, with the position.
    let mut config = PushConfig::new("auditors").start_from(StartFrom::Earliest);
    config.subscriptions.push(Subscription { topic: "payments".into(), tags: None, sql: Some("amount >> 3".into()) });
    let err = PushConsumer::start(&broker.addr, config, |_m: StoredMessage| async { ConsumeResult::Success })
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument));
    assert!(err.to_string().contains("position 8"), "{err}");
    let err = conn.pull_filtered("payments", 0, 0, 32, (None, Some("region = ")), 0).await.expect_err("bad pull");
    assert!(err.to_string().contains("position 9"), "{err}");

    // A well-formed one delivers only matches through brookctl.
    let out = std::process::Command::new(common::bin("brookctl"))
        .args(["--addr", &broker.addr, "consume", "payments", "--group", "eu-only", "--from", "earliest"])
        .args(["--sql", "region = 'eu'", "--count", "2", "--timeout-ms", "10000", "--json"])
        .output()
        .expect("brookctl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bodies: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["body"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(bodies, vec!["p0", "p2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_of_a_message_retried_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    broker.connect().await.create_topic("traced", 1).await.expect("create");
    let config = brook_client::ProducerConfig { trace: true, ..Default::default() };
    let producer = Producer::with_config(&broker.addr, config).await.expect("producer");
    let ack = producer.send(Message::new("traced", "watch me")).await.expect("send");
    producer.send(Message::new("untraced-neighbour", "x")).await.ok();
    let deliveries = Arc::new(Mutex::new(0u32));
    let mut config = PushConfig::new("tracers")
        .subscribe("traced", None)
        .start_from(StartFrom::Earliest)
        .retry(5, vec![Duration::from_millis(100)]);
    config.long_poll = Duration::from_millis(300);
    let consumer = PushConsumer::start(&broker.addr, config, {
        let deliveries = deliveries.clone();
        move |_m: StoredMessage| {
            let deliveries = deliveries.clone();
            async move {
                let mut n = deliveries.lock().expect("lock");
                *n += 1;
                if *n == 1 {
                    ConsumeResult::Later
                } else {
                    ConsumeResult::Success
                }
            }
        }
    })
    .await
    .expect("consumer");
    let ctl = || {
        std::process::Command::new(common::bin("brookctl"))
            .args(["--addr", &broker.addr, "msg", "trace", &ack.msg_id.to_string(), "--json"])
            .output()
            .expect("brookctl")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let out = ctl();
        let events: Vec<serde_json::Value> =
            String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        if events.len() >= 7 || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap_or("?")).collect();
    assert_eq!(kinds, vec!["sent", "stored", "delivered", "consumed", "retry", "delivered", "consumed"], "{events:#?}");
    assert_eq!(events[0]["topic"], "traced");
    assert_eq!(events[1]["queue"], 0);
    assert_eq!((events[3]["result"].as_str(), events[3]["reconsume"].as_u64()), (Some("later"), Some(0)));
    assert_eq!(events[4]["group"], "tracers");
    assert_eq!((events[6]["result"].as_str(), events[6]["reconsume"].as_u64()), (Some("success"), Some(1)));
    assert!(events.iter().all(|e| e["msg_id"] == ack.msg_id.to_string().as_str()));
    assert!(events.windows(2).all(|w| w[0]["time"].as_i64() <= w[1]["time"].as_i64()), "a timeline");
    consumer.shutdown().await;
}
