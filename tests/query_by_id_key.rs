//! Finding messages over a real brookd: by id, and by key (across a segment
//! roll, for every key of a batch, and after SIGKILL with the index never
//! flushed or deleted).

mod common;

use brook_client::{Message, Producer, StoredMessage};
use brook_proto::ErrorCode;
use common::{small_index_env, Brookd};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

fn body(m: &StoredMessage) -> String {
    String::from_utf8_lossy(&m.message.body).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_id_and_by_key_across_a_segment_roll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&small_index_env(dir.path()));
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
    let broker = Brookd::start(&small_index_env(dir.path()));
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
    let mut env = small_index_env(dir);
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
    let broker = Brookd::start(&small_index_env(dir.path()));
    assert_keys_found(&broker).await;
    // The index deleted outright is rebuilt from the log too.
    drop(broker);
    std::fs::remove_dir_all(dir.path().join("index")).expect("remove index");
    let broker = Brookd::start(&small_index_env(dir.path()));
    assert_keys_found(&broker).await;
}
