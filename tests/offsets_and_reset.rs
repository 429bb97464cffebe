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

/// A consumer whose offset stands beyond its queue's end — the queue is
/// shorter than where the group read to, as on a slave that was behind and
/// became master — goes back to the end and takes what is stored next,
/// instead of waiting for the queue to pass its offset and skipping all in
/// between. It says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_beyond_its_queue_end_goes_on_from_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&small_index_env(dir.path()));
    let conn = broker.connect().await;
    conn.create_topic("short", 1).await.expect("create");
    for i in 0..3 {
        conn.send("short", 0, vec![Message::new("short", format!("old{i}"))]).await.expect("send");
    }
    // Offsets only move forward, and a reset is kept within the queue: a
    // commit puts the group at 1000 of a queue of 3.
    let ahead = brook_client::QueueOffset { topic: "short".into(), queue: 0, offset: 1000 };
    let commit = brook_proto::Request::CommitOffsets {
        group: "ahead".into(),
        member: "m0".into(),
        offsets: vec![ahead],
        generation: 0,
    };
    conn.request(commit).await.expect("commit");
    let events = Arc::new(Mutex::new(Vec::new()));
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let config = {
        let events = events.clone();
        PushConfig::new("ahead")
            .subscribe("short", None)
            .member("m0")
            .on_event(move |e| events.lock().expect("events").push(e.clone()))
    };
    let seen = got.clone();
    let consumer = PushConsumer::start(&broker.addr, config, move |m: StoredMessage| {
        seen.lock().expect("got").push(body(&m));
        async { ConsumeResult::Success }
    })
    .await
    .expect("consumer");
    common::wait_for("the consumer meets the end", Duration::from_secs(30), || {
        !events.lock().expect("events").is_empty()
    })
    .await;
    for i in 0..5 {
        conn.send("short", 0, vec![Message::new("short", format!("new{i}"))]).await.expect("send");
    }
    common::wait_for("the new messages consumed", Duration::from_secs(30), || {
        got.lock().expect("got").iter().filter(|b| b.starts_with("new")).count() == 5
    })
    .await;
    let moved: Vec<(u64, u64)> = events
        .lock()
        .expect("events")
        .iter()
        .map(|e| match e {
            brook_client::ConsumerEvent::BeyondQueueEnd { from, to, .. } => (*from, *to),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(moved, vec![(1000, 3)]);
    // Its commits take the group's offset back from past the end: a
    // consumer started later resumes after what was consumed, not at 1000.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = common::committed(&conn, "ahead", "short").await;
        if now == vec![(0, 8)] {
            break;
        }
        assert!(Instant::now() < deadline, "the group's offset stays past the queue's end: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    consumer.shutdown().await;
    conn.send("short", 0, vec![Message::new("short", "later")]).await.expect("send");
    let seen = got.clone();
    let consumer = PushConsumer::start(&broker.addr, PushConfig::new("ahead").subscribe("short", None), move |m| {
        seen.lock().expect("got").push(body(&m));
        async { ConsumeResult::Success }
    })
    .await
    .expect("consumer");
    common::wait_for("the next message consumed", Duration::from_secs(30), || {
        got.lock().expect("got").iter().any(|b| b == "later")
    })
    .await;
    consumer.shutdown().await;
    assert_eq!(events.lock().expect("events").len(), 1, "no second trip past the end");
}
