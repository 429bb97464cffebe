//! Strict order over a real brookd: 8 producers each send 10,000 messages
//! over 64 sharding keys; an orderly push group of 3 members — one leaves and
//! one joins mid-run — sees every key's messages in send order, loses none,
//! and never has two members inside one queue at once. Re-deliveries happen
//! only across a rebalance, and only as a rewind to the queue's committed
//! head, never as a skip.

mod common;

use brook_client::{ConsumeResult, Message, Producer, PushConfig, PushConsumer, StartFrom, StoredMessage};
use common::{base_env, Brookd};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PRODUCERS: usize = 8;
const PER_PRODUCER: usize = 10_000;
const KEYS: usize = 64;
const QUEUES: u32 = 8;

#[derive(Default)]
struct Observed {
    /// (queue, offset, producer, seq) in delivery order.
    deliveries: Vec<(u32, u64, usize, usize)>,
    /// Which member is inside the listener for each queue right now.
    active: HashMap<u32, String>,
    overlap: bool,
}

async fn member(addr: &str, name: &str, seen: Arc<Mutex<Observed>>) -> PushConsumer {
    let mut config = PushConfig::new("ordered")
        .subscribe("orders", None)
        .member(name)
        .orderly(true)
        .start_from(StartFrom::Earliest)
        .heartbeat(Duration::from_millis(200), Duration::from_secs(3));
    config.long_poll = Duration::from_secs(1);
    config.lock_renew = Duration::from_millis(500);
    let me = name.to_string();
    PushConsumer::start(addr, config, move |m: StoredMessage| {
        let (seen, me) = (seen.clone(), me.clone());
        async move {
            let body = String::from_utf8_lossy(&m.message.body).to_string();
            let mut parts = body.split(':');
            let producer: usize = parts.next().and_then(|p| p.parse().ok()).expect("producer");
            let seq: usize = parts.next().and_then(|p| p.parse().ok()).expect("seq");
            {
                let mut seen = seen.lock().expect("lock");
                if let Some(other) = seen.active.insert(m.queue, me.clone()) {
                    if other != me {
                        seen.overlap = true;
                    }
                }
                seen.deliveries.push((m.queue, m.queue_offset, producer, seq));
            }
            tokio::task::yield_now().await;
            seen.lock().expect("lock").active.remove(&m.queue);
            ConsumeResult::Success
        }
    })
    .await
    .expect("start member")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn every_keys_messages_arrive_in_send_order_across_rebalances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = base_env(dir.path(), "uring");
    env.push(("BROOK_GROUPS__LOCK_TTL_MS".into(), "3000".into()));
    env.push(("BROOK_STORE__SEGMENT_BYTES".into(), (4u64 << 20).to_string()));
    let broker = Brookd::start(&env);
    broker.connect().await.create_topic("orders", QUEUES).await.expect("create");
    let seen: Arc<Mutex<Observed>> = Arc::default();
    let a = member(&broker.addr, "a", seen.clone()).await;
    let b = member(&broker.addr, "b", seen.clone()).await;
    let c = member(&broker.addr, "c", seen.clone()).await;

    let producing = Arc::new(AtomicBool::new(true));
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let producer = Producer::connect(&broker.addr).await.expect("producer");
        producers.push(tokio::spawn(async move {
            for seq in 0..PER_PRODUCER {
                let key = format!("key-{}", (p * 7 + seq) % KEYS);
                let msg = Message::new("orders", format!("{p}:{seq}")).with_key(key.clone());
                producer.send_ordered(msg, &key).await.expect("ordered send");
            }
        }));
    }
    // Mid-run: one member leaves, another joins.
    let total = PRODUCERS * PER_PRODUCER;
    let progress = |share: usize| {
        let seen = seen.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(240);
            while seen.lock().expect("lock").deliveries.len() < total * share / 100 {
                assert!(Instant::now() < deadline, "stalled before {share}%");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    progress(25).await;
    b.shutdown().await;
    progress(50).await;
    let d = member(&broker.addr, "d", seen.clone()).await;
    for p in producers {
        p.await.expect("producer task");
    }
    producing.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let unique: HashSet<(u32, u64)> = seen.lock().expect("lock").deliveries.iter().map(|d| (d.0, d.1)).collect();
        if unique.len() >= total {
            break;
        }
        assert!(Instant::now() < deadline, "only {} of {total} delivered", unique.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for m in [a, c, d] {
        m.shutdown().await;
    }

    let seen = seen.lock().expect("lock");
    assert!(!seen.overlap, "two members consumed one queue at the same time");
    // Per queue: offsets advance by one, or rewind (a re-delivery from the
    // committed head after a rebalance); they never skip.
    let mut last: HashMap<u32, u64> = HashMap::new();
    let mut rewinds = 0;
    for (queue, offset, _, _) in &seen.deliveries {
        if let Some(prev) = last.get(queue) {
            assert!(*offset <= prev + 1, "queue {queue} skipped from {prev} to {offset}");
            if *offset <= *prev {
                rewinds += 1;
            }
        } else {
            assert_eq!(*offset, 0, "queue {queue} started at {offset}");
        }
        last.insert(*queue, *offset);
    }
    // Per producer and key, first deliveries follow send order.
    let mut firsts: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    let mut counted: HashSet<(u32, u64)> = HashSet::new();
    for (queue, offset, producer, seq) in &seen.deliveries {
        if counted.insert((*queue, *offset)) {
            firsts.entry((*producer, (producer * 7 + seq) % KEYS)).or_default().push(*seq);
        }
    }
    assert_eq!(counted.len(), total, "none lost, none extra");
    for ((producer, key), seqs) in &firsts {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "producer {producer} key {key} out of order");
    }
    let duplicates = seen.deliveries.len() - total;
    println!("deliveries {} (duplicates {duplicates}, rewinds {rewinds})", seen.deliveries.len());
    assert!(duplicates == 0 || rewinds > 0, "duplicates only as rewinds at a rebalance");
}
