//! Message traces over a real brookd: the timeline of a message retried
//! once.

mod common;

use brook_client::{ConsumeResult, Message, Producer, PushConfig, PushConsumer, StartFrom, StoredMessage};
use common::{small_index_env, Brookd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_of_a_message_retried_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&small_index_env(dir.path()));
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
