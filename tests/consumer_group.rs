//! Consumer groups over a real brookd: clustering shares queues and
//! re-assigns a dead member's queues within the session timeout;
//! broadcasting gives every member everything; committed offsets and start
//! policies decide where a member begins; long polls wake on arrival.

mod common;

use brook_client::{ConsumeMode, ConsumeResult, Message, Producer, PushConfig, PushConsumer, StartFrom, StoredMessage};
use common::{base_env, wait_for, Brookd};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Seen = Arc<Mutex<Vec<(String, u32, u64, String)>>>;

fn env(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut env = base_env(dir, "uring");
    env.push(("BROOK_GROUPS__SESSION_TIMEOUT_MS".into(), "3000".into()));
    env.push(("BROOK_GROUPS__OFFSET_FLUSH_INTERVAL_MS".into(), "200".into()));
    env
}

fn config(group: &str, topic: &str, member: &str) -> PushConfig {
    let mut config = PushConfig::new(group)
        .subscribe(topic, None)
        .member(member)
        .start_from(StartFrom::Earliest)
        .heartbeat(Duration::from_millis(200), Duration::from_secs(2));
    config.long_poll = Duration::from_secs(2);
    config.commit_interval = Duration::from_millis(100);
    config
}

async fn start(broker: &Brookd, config: PushConfig, seen: Seen) -> PushConsumer {
    let member = config.member.clone();
    PushConsumer::start(&broker.addr, config, move |m: StoredMessage| {
        let (seen, member) = (seen.clone(), member.clone());
        async move {
            seen.lock().expect("lock").push((
                member,
                m.queue,
                m.queue_offset,
                String::from_utf8_lossy(&m.message.body).into(),
            ));
            ConsumeResult::Success
        }
    })
    .await
    .expect("start consumer")
}

async fn produce(producer: &Producer, topic: &str, prefix: &str, n: usize) -> HashSet<String> {
    let mut bodies = HashSet::new();
    for i in 0..n {
        let body = format!("{prefix}-{i}");
        producer.send(Message::new(topic, body.clone())).await.expect("send");
        bodies.insert(body);
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clustering_shares_queues_and_moves_a_dead_members_queues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    broker.connect().await.create_topic("work", 16).await.expect("create");
    let seen: Seen = Arc::default();
    let mut consumers = Vec::new();
    for i in 0..4 {
        consumers.push(start(&broker, config("workers", "work", &format!("c{i}")), seen.clone()).await);
    }
    // Each topic is split on its own; the group's retry topic (one queue)
    // goes to one member.
    let work = |c: &PushConsumer| c.assignment().into_iter().filter(|q| q.topic == "work").collect::<Vec<_>>();
    wait_for("a stable 4-way split", Duration::from_secs(20), || consumers.iter().all(|c| work(c).len() == 4)).await;
    let all: HashSet<_> = consumers.iter().flat_map(work).collect();
    assert_eq!(all.len(), 16, "every queue has exactly one owner");
    let producer = Producer::connect(&broker.addr).await.expect("producer");
    let first = produce(&producer, "work", "a", 800).await;
    wait_for("all of the first batch", Duration::from_secs(30), || seen.lock().expect("lock").len() >= 800).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 800, "each message consumed once");
        let bodies: HashSet<&String> = seen.iter().map(|s| &s.3).collect();
        assert_eq!(bodies.len(), 800);
        let members: HashSet<&String> = seen.iter().map(|s| &s.0).collect();
        assert_eq!(members.len(), 4, "all four members got work");
        assert!(first.iter().all(|b| bodies.contains(b)));
    }
    // Kill one member: no leave, no commit; its queues must move.
    let dead = consumers.remove(1);
    let dead_queues = dead.assignment();
    dead.kill().await;
    let killed_at = Instant::now();
    wait_for("the dead member's queues to move", Duration::from_secs(10), || {
        let owned: HashSet<_> = consumers.iter().flat_map(|c| c.assignment()).collect();
        owned.len() == 17 && dead_queues.iter().all(|q| owned.contains(q))
    })
    .await;
    assert!(killed_at.elapsed() < Duration::from_secs(5), "moved within the session timeout");
    let second = produce(&producer, "work", "b", 400).await;
    wait_for("all of the second batch", Duration::from_secs(30), || {
        let seen = seen.lock().expect("lock");
        let bodies: HashSet<&String> = seen.iter().map(|s| &s.3).collect();
        second.iter().all(|b| bodies.contains(b))
    })
    .await;
    {
        let seen = seen.lock().expect("lock");
        assert!(seen.iter().filter(|s| s.3.starts_with("b-")).all(|s| s.0 != "c1"), "the dead member got nothing");
    }
    for c in consumers {
        c.shutdown().await;
    }
    let info = broker.connect().await.describe_group("workers").await.expect("describe");
    assert!(info.members.is_empty(), "graceful shutdown leaves the group");
    assert_eq!(info.offsets.iter().map(|o| o.lag).sum::<u64>(), 0, "everything committed: {:?}", info.offsets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasting_gives_every_member_every_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    broker.connect().await.create_topic("news", 4).await.expect("create");
    let seen: Seen = Arc::default();
    let mut consumers = Vec::new();
    for i in 0..3 {
        let config = config("readers", "news", &format!("r{i}")).mode(ConsumeMode::Broadcasting);
        consumers.push(start(&broker, config, seen.clone()).await);
    }
    wait_for("every member to own every queue", Duration::from_secs(20), || {
        consumers.iter().all(|c| c.assignment().len() == 4)
    })
    .await;
    let producer = Producer::connect(&broker.addr).await.expect("producer");
    let sent = produce(&producer, "news", "n", 300).await;
    wait_for("900 deliveries", Duration::from_secs(30), || seen.lock().expect("lock").len() >= 900).await;
    {
        let seen = seen.lock().expect("lock");
        let mut per_member: HashMap<&String, HashSet<&String>> = HashMap::new();
        for (member, _, _, body) in seen.iter() {
            per_member.entry(member).or_default().insert(body);
        }
        assert_eq!(per_member.len(), 3);
        for (member, bodies) in per_member {
            assert_eq!(bodies.len(), 300, "{member} got everything");
            assert!(sent.iter().all(|b| bodies.contains(b)));
        }
    }
    let info = broker.connect().await.describe_group("readers").await.expect("describe");
    assert_eq!(info.mode, ConsumeMode::Broadcasting);
    assert!(info.offsets.iter().all(|o| o.member.is_some()), "offsets are kept per member");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_and_start_policies_decide_where_a_member_begins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Brookd::start(&env(dir.path()));
    broker.connect().await.create_topic("log", 1).await.expect("create");
    let producer = Producer::connect(&broker.addr).await.expect("producer");
    produce(&producer, "log", "old", 50).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cut = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_millis() as i64;
    tokio::time::sleep(Duration::from_millis(50)).await;
    produce(&producer, "log", "new", 30).await;
    // Latest: nothing old.
    let seen_latest: Seen = Arc::default();
    let latest =
        start(&broker, config("g-latest", "log", "m").start_from(StartFrom::Latest), seen_latest.clone()).await;
    // Timestamp: exactly the new ones.
    let seen_ts: Seen = Arc::default();
    let ts = start(&broker, config("g-time", "log", "m").start_from(StartFrom::Timestamp(cut)), seen_ts.clone()).await;
    // Earliest: everything.
    let seen_all: Seen = Arc::default();
    let all = start(&broker, config("g-all", "log", "m"), seen_all.clone()).await;
    wait_for("earliest to read 80", Duration::from_secs(20), || seen_all.lock().expect("lock").len() >= 80).await;
    wait_for("timestamp to read 30", Duration::from_secs(20), || seen_ts.lock().expect("lock").len() >= 30).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(seen_latest.lock().expect("lock").is_empty(), "latest starts after what was stored");
    assert!(seen_ts.lock().expect("lock").iter().all(|s| s.3.starts_with("new-")), "timestamp starts at the cut");
    assert_eq!(seen_ts.lock().expect("lock").len(), 30);
    for c in [latest, ts, all] {
        c.shutdown().await;
    }
    // Offsets survive a restart: the group resumes, it does not re-read.
    assert!(broker.terminate().success());
    let port = broker.addr.rsplit(':').next().expect("port").to_string();
    let mut env = env(dir.path());
    common::pin_listen(&mut env, &format!("127.0.0.1:{port}"));
    broker = Brookd::start(&env);
    let producer = Producer::connect(&broker.addr).await.expect("producer");
    produce(&producer, "log", "later", 5).await;
    let again: Seen = Arc::default();
    let resumed = start(&broker, config("g-all", "log", "m"), again.clone()).await;
    wait_for("the 5 new ones", Duration::from_secs(20), || again.lock().expect("lock").len() >= 5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let again = again.lock().expect("lock");
        assert_eq!(again.len(), 5, "resumed from the committed offset: {again:?}");
        assert!(again.iter().all(|s| s.3.starts_with("later-")));
    }
    resumed.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_consumer_gets_a_new_message_within_100ms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    let conn = broker.connect().await;
    conn.create_topic("lp", 1).await.expect("create");
    let mut delays = Vec::new();
    for round in 0..7u64 {
        let puller = broker.connect().await;
        let parked = tokio::spawn(async move {
            let result = puller.pull("lp", 0, round, 10, 0, None, 10_000).await.expect("pull");
            (result, Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!parked.is_finished(), "parked, not answered empty");
        conn.send("lp", 0, vec![Message::new("lp", format!("m{round}"))]).await.expect("send");
        let acked = Instant::now();
        let (result, woke) = parked.await.expect("join");
        assert_eq!(result.messages.len(), 1);
        delays.push(woke.saturating_duration_since(acked));
    }
    delays.sort();
    // The median of several rounds, so one scheduling hiccup on a shared
    // machine cannot fail the test.
    let median = delays[delays.len() / 2];
    assert!(median < Duration::from_millis(100), "median wake-up {median:?} (all: {delays:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_member_expires_after_its_session_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    let conn = broker.connect().await;
    conn.create_topic("quiet", 2).await.expect("create");
    let beat = brook_proto::request::Heartbeat {
        group: "sleepy".into(),
        member: "m".into(),
        subscriptions: vec![brook_client::Subscription { topic: "quiet".into(), tags: None, sql: None }],
        mode: ConsumeMode::Clustering,
        start: StartFrom::Latest,
        orderly: false,
        session_timeout_ms: 300,
        retry: Default::default(),
    };
    // One heartbeat, then silence on a connection that stays open.
    conn.request(brook_proto::Request::Heartbeat(beat)).await.expect("heartbeat");
    assert_eq!(conn.describe_group("sleepy").await.expect("describe").members.len(), 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let members = conn.describe_group("sleepy").await.expect("describe").members.len();
        if members == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "member never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!conn.is_closed(), "expired by silence, not by a closed connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_oneway_and_batch_sends_reach_a_batch_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = env(dir.path());
    env.push(("BROOK_AUTO_CREATE_TOPICS".into(), "true".into()));
    let broker = Brookd::start(&env);
    let producer = Producer::connect(&broker.addr).await.expect("producer");
    // The first send creates the topic with the default 4 queues.
    producer.send(Message::new("auto", "first")).await.expect("auto-created");
    assert_eq!(broker.connect().await.describe_topic("auto").await.expect("describe").queues, 4);
    let pending: Vec<_> = (0..200).map(|i| producer.send_async(Message::new("auto", format!("async-{i}")))).collect();
    for p in pending {
        p.await.expect("join").expect("async send");
    }
    for i in 0..20 {
        producer.send_oneway(Message::new("auto", format!("oneway-{i}"))).await.expect("oneway");
    }
    let batch: Vec<Message> = (0..30).map(|i| Message::new("auto", format!("batch-{i}"))).collect();
    let acks = producer.send_batch(batch).await.expect("batch");
    assert!(acks.windows(2).all(|w| w[0].queue == w[1].queue && w[1].queue_offset == w[0].queue_offset + 1));
    let bodies: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = bodies.clone();
    let consumer =
        PushConsumer::start_batch(&broker.addr, config("batcher", "auto", "b"), move |batch: Vec<StoredMessage>| {
            let sink = sink.clone();
            async move {
                assert!(batch.windows(2).all(|w| w[0].queue == w[1].queue && w[0].queue_offset < w[1].queue_offset));
                sink.lock()
                    .expect("lock")
                    .extend(batch.into_iter().map(|m| String::from_utf8_lossy(&m.message.body).into_owned()));
                ConsumeResult::Success
            }
        })
        .await
        .expect("consumer");
    wait_for("all 251 messages", Duration::from_secs(30), || bodies.lock().expect("lock").len() >= 251).await;
    consumer.shutdown().await;
    let got: HashSet<String> = bodies.lock().expect("lock").iter().cloned().collect();
    assert_eq!(got.len(), 251);
    assert!((0..20).all(|i| got.contains(&format!("oneway-{i}"))), "one-way sends were stored");
}
