//! Call order is wire order, through the client's producer against a real
//! brookd: pipelined `send_ordered` calls with one sharding key are stored
//! in call order whatever the window, and producers pipelining ordered
//! sends through a SIGKILL of the broker (sync flush) lose no acknowledged
//! message, store none twice and keep every key in call order; a
//! round-robin producer beside them stores each of its sends once too. A
//! big send that the broker prepares off the writer's thread is not
//! overtaken by the small one sent right after it.

mod common;

use brook_client::{Backoff, Connection, Message, Producer, ProducerConfig, SendAck};
use common::{base_env, Brookd};
use futures::stream::{FuturesOrdered, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

const KEYS: usize = 16;
const QUEUES: u32 = 4;

/// Every message of `topic` in storage order, per queue: (queue, body).
async fn stored(conn: &Connection, topic: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for queue in 0..QUEUES {
        let mut offset = 0;
        loop {
            let page = conn.pull(topic, queue, offset, 1024, 0, None, 0).await.expect("pull");
            out.extend(page.messages.iter().map(|m| (queue, String::from_utf8_lossy(&m.message.body).into_owned())));
            if page.next_offset >= page.max_offset {
                break;
            }
            offset = page.next_offset;
        }
    }
    out
}

/// Checks that every (producer, key)'s sequence numbers appear in
/// increasing order within storage order; returns how often each body was
/// stored.
fn in_call_order(stored: &[(u32, String)]) -> HashMap<String, usize> {
    let mut last: HashMap<(String, String), (u32, u64)> = HashMap::new();
    let mut times = HashMap::new();
    for (queue, body) in stored {
        *times.entry(body.clone()).or_insert(0) += 1;
        if body.starts_with("rr:") {
            // Round-robin sends: no order to keep, only counted.
            continue;
        }
        let mut parts = body.splitn(3, ':');
        let (producer, key) = (parts.next().expect("producer"), parts.next().expect("key"));
        let seq: u64 = parts.next().and_then(|s| s.parse().ok()).expect("seq");
        if let Some((q, previous)) = last.insert((producer.to_string(), key.to_string()), (*queue, seq)) {
            assert_eq!(q, *queue, "one key, one queue");
            assert!(seq > previous, "{producer}/{key}: {seq} stored after {previous}");
        }
    }
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_ordered_sends_are_stored_in_call_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = base_env(dir.path(), "std");
    env.push(("BROOK_STORE__SEGMENT_BYTES".into(), (4u64 << 20).to_string()));
    let broker = Brookd::start(&env);
    let admin = broker.connect().await;
    const WINDOW: usize = 256;
    const SENDS: usize = 20_000;
    for round in 0..10 {
        let topic = format!("call-order-{round}");
        admin.create_topic(&topic, QUEUES).await.expect("topic");
        // A fresh producer each round: the first window races the topic's
        // route, which is where call order used to be lost.
        let producer = Producer::connect(&broker.addr).await.expect("producer");
        let mut in_flight = FuturesOrdered::new();
        let mut acks: Vec<SendAck> = Vec::with_capacity(SENDS);
        for i in 0..SENDS {
            let key = format!("k{}", i % KEYS);
            let body = format!("p:{key}:{i}");
            in_flight.push_back(producer.send_ordered(Message::new(topic.as_str(), body), &key));
            if in_flight.len() >= WINDOW {
                acks.push(in_flight.next().await.expect("in flight").expect("acked"));
            }
        }
        while let Some(ack) = in_flight.next().await {
            acks.push(ack.expect("acked"));
        }
        // Acks in call order carry increasing offsets per key.
        let mut last: HashMap<usize, u64> = HashMap::new();
        for (i, ack) in acks.iter().enumerate() {
            if let Some(previous) = last.insert(i % KEYS, ack.queue_offset) {
                assert!(ack.queue_offset > previous, "round {round}: send {i} acked before an earlier one");
            }
        }
        let stored = stored(&admin, &topic).await;
        assert_eq!(stored.len(), SENDS, "round {round}");
        assert!(in_call_order(&stored).values().all(|n| *n == 1), "round {round}: stored once each");
    }
}

/// A producer that keeps retrying through a broker restart.
async fn patient_producer(addr: &str) -> Producer {
    let config = ProducerConfig {
        retries: 80,
        backoff: Backoff { initial: Duration::from_millis(50), max: Duration::from_millis(300) },
        ..ProducerConfig::default()
    };
    Producer::with_config(addr, config).await.expect("producer")
}

/// On a connection served on the writer's thread, a big send (a thousand
/// messages, decoded and encoded on the pool) and a one-message send called
/// right after it: the small one arrives in a read turn of its own and is
/// ready long before the big one, yet is stored after it, every time (the
/// first rounds race that way; later ones run after the connection moved
/// to the pool, where both are prepared in turn).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_send_after_a_big_one_is_stored_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&base_env(dir.path(), "std"));
    let conn = broker.connect().await;
    conn.create_topic("mixed", 1).await.expect("create");
    let body = "x".repeat(1024);
    let mut expected = 0;
    for round in 0..20 {
        let big: Vec<_> = (0..1000).map(|i| Message::new("mixed", format!("{round}/{i}/{body}"))).collect();
        let big = conn.send("mixed", 0, big);
        let small = conn.send("mixed", 0, vec![Message::new("mixed", format!("{round}/small"))]);
        let (big, small) = (big.await.expect("big send"), small.await.expect("small send"));
        let offsets: Vec<u64> = big.iter().map(|a| a.queue_offset).collect();
        assert_eq!(offsets, (expected..expected + 1000).collect::<Vec<_>>(), "round {round}: the big send in one run");
        assert_eq!(small[0].queue_offset, expected + 1000, "round {round}: the small send right after the big one");
        expected += 1001;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn ordered_sends_ride_through_a_sigkill_stored_once_and_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = base_env(dir.path(), "std");
    env.push(("BROOK_STORE__FLUSH".into(), "sync".into()));
    let mut broker = Brookd::start(&env);
    let addr = broker.addr.clone();
    common::pin_listen(&mut env, &addr);
    broker.connect().await.create_topic("kill", QUEUES).await.expect("topic");
    const PER_PRODUCER: usize = 3_000;
    let acked_count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut producers = Vec::new();
    for p in 0..3 {
        let producer = patient_producer(&addr).await;
        let acked_count = acked_count.clone();
        producers.push(tokio::spawn(async move {
            let mut outcomes: BTreeMap<usize, Result<SendAck, String>> = BTreeMap::new();
            let mut in_flight = FuturesOrdered::new();
            for i in 0..PER_PRODUCER {
                let key = format!("k{}", i % KEYS);
                let send = producer.send_ordered(Message::new("kill", format!("p{p}:{key}:{i}")), &key);
                in_flight.push_back(async move { (i, send.await) });
                if in_flight.len() >= 64 {
                    let (i, result) = in_flight.next().await.expect("in flight");
                    acked_count.fetch_add(usize::from(result.is_ok()), std::sync::atomic::Ordering::Relaxed);
                    outcomes.insert(i, result.map_err(|e| e.to_string()));
                }
            }
            while let Some((i, result)) = in_flight.next().await {
                outcomes.insert(i, result.map_err(|e| e.to_string()));
            }
            (p, outcomes)
        }));
    }
    let round_robin = {
        let producer = patient_producer(&addr).await;
        tokio::spawn(async move {
            let mut in_flight = FuturesOrdered::new();
            let mut acked = Vec::new();
            for i in 0..PER_PRODUCER {
                let body = format!("rr:{i}");
                let send = producer.send(Message::new("kill", body.clone()));
                in_flight.push_back(async move { (body, send.await) });
                if in_flight.len() >= 64 {
                    let (body, result) = in_flight.next().await.expect("in flight");
                    acked.push((body, result.map_err(|e| e.to_string())));
                }
            }
            while let Some((body, result)) = in_flight.next().await {
                acked.push((body, result.map_err(|e| e.to_string())));
            }
            acked
        })
    };
    common::wait_for("a third of the sends acknowledged", Duration::from_secs(60), || {
        acked_count.load(std::sync::atomic::Ordering::Relaxed) >= PER_PRODUCER
    })
    .await;
    broker.kill9();
    let broker = Brookd::start(&env);
    let mut acked = Vec::new();
    for task in producers {
        let (p, outcomes) = task.await.expect("producer");
        for (i, outcome) in outcomes {
            let key = format!("k{}", i % KEYS);
            match outcome {
                Ok(_) => acked.push(format!("p{p}:{key}:{i}")),
                Err(e) => panic!("producer {p} send {i} failed after its retries: {e}"),
            }
        }
    }
    for (body, result) in round_robin.await.expect("round robin") {
        result.unwrap_or_else(|e| panic!("{body} failed after its retries: {e}"));
        acked.push(body);
    }
    let stored = stored(&broker.connect().await, "kill").await;
    let times = in_call_order(&stored);
    for body in &acked {
        assert_eq!(times.get(body), Some(&1), "{body} acknowledged: stored exactly once");
    }
    assert!(times.values().all(|n| *n == 1), "nothing stored twice");
    assert_eq!(acked.len(), 4 * PER_PRODUCER);
}
