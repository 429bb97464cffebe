//! Replay over a real brookd: offsets by time, and a group reset to a time
//! that replays exactly what was stored since.

mod common;

use brook_client::{ConsumeResult, Message, Producer, PushConfig, PushConsumer, ResetTo, StartFrom, StoredMessage};
use brook_proto::ErrorCode;
use common::{small_index_env, Brookd};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn body(m: &StoredMessage) -> String {
    String::from_utf8_lossy(&m.message.body).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_by_time_and_a_reset_replays_exactly_what_was_stored_since() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&small_index_env(dir.path()));
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
