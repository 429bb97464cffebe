//! brookd's HTTP listener against a real broker: `/healthz`, `/readyz`, and
//! `/metrics` in the Prometheus text format under RocketMQ's names, whose
//! numbers follow what was sent, consumed and left unconsumed.

mod common;

use brook_client::{ConsumeResult, Message, Producer, PushConfig, PushConsumer, StartFrom};
use common::{base_env, wait_for, Brookd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn http(addr: &str, method: &str, path: &str) -> (u16, String, String) {
    common::http::request(addr, method, path, "")
}

/// The value of the series named `name` whose labels include every pair
/// of `labels`.
fn value(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        if metric != name || !labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))) {
            return None;
        }
        value.parse().ok()
    })
}

/// Every metric the shipped Grafana dashboard asks for is on `page`.
fn dashboard_metrics_are_on(page: &str) {
    let dashboard = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/brook.json"))
        .expect("deploy/grafana/brook.json");
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("valid JSON");
    let mut asked = std::collections::BTreeSet::new();
    for (i, _) in dashboard.match_indices("rocketmq_").chain(dashboard.match_indices("brook_")) {
        let name: String = dashboard[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        asked.insert(name);
    }
    assert!(asked.len() >= 10, "{asked:?}");
    for name in asked {
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        assert!(page.contains(&format!("# TYPE {family} ")), "the dashboard asks for {name}, not on the page");
    }
}

/// The group's lag, age, ready and in-flight gauges after it read ten and
/// five more arrived; the storage and connection gauges.
fn group_and_storage_gauges(page: &str) {
    let lag = [("consumer_group", "billing"), ("topic", "orders"), ("is_retry", "false")];
    assert_eq!(value(page, "rocketmq_consumer_lag_messages", &lag), Some(5.0), "five sent after the group left");
    assert!(value(page, "rocketmq_consumer_lag_latency", &lag) >= Some(0.0), "the oldest unread one's age");
    assert_eq!(value(page, "rocketmq_consumer_ready_messages", &lag), Some(5.0), "never pulled");
    assert_eq!(value(page, "rocketmq_consumer_inflight_messages", &lag), Some(0.0), "all it pulled it committed");
    assert!(value(page, "rocketmq_storage_dispatch_behind_bytes", &[]) >= Some(0.0));
    assert!(value(page, "brook_writer_queue_depth", &[]) >= Some(0.0));
    assert_eq!(value(page, "rocketmq_producer_connections", &[("language", "rust")]), Some(1.0), "the producer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_follow_the_broker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = base_env(dir.path(), "std");
    env.push(("BROOK_BROKER_NAME".into(), "broker-m".into()));
    env.push(("BROOK_GROUPS__OFFSET_FLUSH_INTERVAL_MS".into(), "200".into()));
    let broker = Brookd::start(&env);
    let web = broker.http_addr.clone().expect("brookd logs its http address");

    assert_eq!(http(&web, "GET", "/healthz").0, 200);
    let (status, _, body) = http(&web, "GET", "/readyz");
    assert_eq!((status, body.trim()), (200, "ready"));
    assert_eq!(http(&web, "GET", "/nope").0, 404);
    assert_ne!(http(&web, "POST", "/metrics").0, 200, "metrics are read-only");

    let conn = broker.connect().await;
    conn.create_topic("orders", 2).await.expect("create");
    let producer = Producer::connect(broker.addr.as_str()).await.expect("producer");
    for i in 0..10 {
        producer.send(Message::new("orders", format!("order {i}"))).await.expect("send");
    }
    producer.send(Message::new("orders", "later").with_delay_level(1)).await.expect("delayed send");
    producer.send(Message::new("orders", "at a time").with_delay_ms(200)).await.expect("timed send");

    // A group reads the ten, then five more arrive unread.
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let config = PushConfig::new("billing").subscribe("orders", None).start_from(StartFrom::Earliest);
    let consumer = PushConsumer::start(broker.addr.as_str(), config, move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
        async { ConsumeResult::Success }
    })
    .await
    .expect("consumer");
    wait_for("the group reads the messages", Duration::from_secs(30), || seen.load(Ordering::Relaxed) >= 10).await;
    consumer.shutdown().await;
    for i in 0..5 {
        producer.send(Message::new("orders", format!("unread {i}"))).await.expect("send");
    }

    let (status, content_type, page) = http(&web, "GET", "/metrics");
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(page.trim_end().ends_with("# EOF"), "a complete exposition");
    let common = [("cluster", "DefaultCluster"), ("node_type", "broker"), ("node_id", "broker-m")];
    let normal = [("topic", "orders"), ("message_type", "NORMAL"), ("is_system", "false")];
    assert_eq!(value(&page, "rocketmq_messages_in_total", &normal), Some(15.0), "{page}");
    assert_eq!(
        value(&page, "rocketmq_messages_in_total", &[("topic", "orders"), ("message_type", "DELAY")]),
        Some(2.0)
    );
    assert!(value(&page, "rocketmq_messages_in_total", &common).is_some(), "common labels on every series");
    let body_bytes: f64 = (0..10).map(|i| format!("order {i}").len() as f64).sum::<f64>()
        + (0..5).map(|i| format!("unread {i}").len() as f64).sum::<f64>();
    assert_eq!(value(&page, "rocketmq_throughput_in_total", &normal), Some(body_bytes));
    assert_eq!(value(&page, "rocketmq_message_size_count", &[]), Some(17.0));
    assert_eq!(value(&page, "rocketmq_message_size_bucket", &[("le", "1024.0")]), Some(17.0), "all under 1 KiB");
    assert_eq!(value(&page, "rocketmq_message_size_bucket", &[("le", "+Inf")]), Some(17.0), "cumulative");
    assert!(value(&page, "rocketmq_messages_out_total", &[("topic", "orders")]) >= Some(10.0));
    assert_eq!(value(&page, "rocketmq_topic_number", &[]).map(|n| n >= 1.0), Some(true));
    assert_eq!(value(&page, "rocketmq_consumer_group_number", &[]), Some(1.0));
    group_and_storage_gauges(&page);
    assert!(value(&page, "rocketmq_storage_size", &[]) > Some(0.0));
    assert_eq!(value(&page, "brook_io_backend", &[("backend", "std")]), Some(1.0));
    assert_eq!(value(&page, "brook_writable", &[]), Some(1.0));
    let sends = [("request_code", "5"), ("result", "success"), ("le", "+Inf")];
    assert!(value(&page, "rocketmq_rpc_latency_bucket", &sends) >= Some(17.0), "every send timed");
    assert!(value(&page, "rocketmq_rpc_latency_count", &[("request_code", "1")]) >= Some(1.0), "create topic");
    assert!(value(&page, "brook_connections", &[]) >= Some(1.0));
    assert!(value(&page, "brook_records_written_total", &[]) >= Some(17.0));
    assert!(value(&page, "brook_group_commit_records_count", &[]) >= Some(1.0));
    // Async flush: an fdatasync within flush_interval_ms (500) of a write;
    // the timed message goes into the wheel and out at its time.
    wait_for("an fdatasync is timed and the timer fires", Duration::from_secs(30), || {
        let page = http(&web, "GET", "/metrics").2;
        value(&page, "brook_fdatasync_latency_us_count", &[]) > Some(0.0)
            && value(&page, "rocketmq_timer_enqueue_total", &[]) == Some(1.0)
            && value(&page, "rocketmq_timer_dequeue_total", &[]) == Some(1.0)
    })
    .await;
    dashboard_metrics_are_on(&page);
    // Every series line is `name{labels} value`.
    for line in page.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (_, number) = line.rsplit_once(' ').expect("name and value");
        assert!(number.parse::<f64>().is_ok() || number == "+Inf", "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_http_listen_turns_the_listener_off_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = base_env(dir.path(), "std");
    env.retain(|(k, _)| k != "BROOK_HTTP__LISTEN");
    env.push(("BROOK_HTTP__LISTEN".into(), String::new()));
    let broker = Brookd::start(&env);
    assert_eq!(broker.http_addr, None, "no http listener");
    drop(broker);
    let out = std::process::Command::new(common::bin("brookd"))
        .arg("--print-config")
        .env("BROOK_HTTP__LISTEN", "not an address")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.listen"));
}

/// Connections are served on the log writer's thread up to
/// `server.writer_connections`, by the pool past it, and a place on the
/// writer's thread comes free when its connection closes. Sends through
/// both kinds, interleaved into one queue, are stored in the order they
/// were acknowledged, and pulls and admin requests work from either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_writers_room_are_served_by_the_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = base_env(dir.path(), "std");
    env.push(("BROOK_SERVER__WRITER_CONNECTIONS".into(), "2".into()));
    let broker = Brookd::start(&env);
    let web = broker.http_addr.clone().expect("brookd logs its http address");
    let homes = |web: &str| {
        let page = http(web, "GET", "/metrics").2;
        (value(&page, "brook_connections", &[]), value(&page, "brook_writer_thread_connections", &[]))
    };

    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(broker.connect().await);
    }
    wait_for("four connections, two on the writer's thread", Duration::from_secs(30), || {
        homes(&web) == (Some(4.0), Some(2.0))
    })
    .await;
    conns[0].create_topic("mixed", 1).await.expect("create from the writer's thread");
    conns[3].describe_topic("mixed").await.expect("describe from the pool");
    for i in 0..40 {
        let msg = Message::new("mixed", format!("m{i}"));
        let acks = conns[i % 4].send("mixed", 0, vec![msg]).await.expect("send");
        assert_eq!(acks[0].queue_offset, i as u64, "acknowledged in turn");
    }
    for conn in [&conns[1], &conns[2]] {
        let read = common::drain_queue(conn, "mixed", 0, 0, 40, Duration::from_secs(30)).await;
        let bodies: Vec<_> = read.iter().map(|m| String::from_utf8_lossy(&m.message.body).to_string()).collect();
        assert_eq!(bodies, (0..40).map(|i| format!("m{i}")).collect::<Vec<_>>());
    }

    // The first two held the writer's places: closed, they free both.
    conns.drain(..2);
    wait_for("two left, both on the pool", Duration::from_secs(30), || homes(&web) == (Some(2.0), Some(0.0))).await;
    let again = broker.connect().await;
    wait_for("the next one on the writer's thread", Duration::from_secs(30), || homes(&web) == (Some(3.0), Some(1.0)))
        .await;
    let acks = again.send("mixed", 0, vec![Message::new("mixed", "m40")]).await.expect("send");
    assert_eq!(acks[0].queue_offset, 40);
}

/// A connection that keeps pipelining batches moves off the writer's
/// thread to the pool, in the middle of its sends, and none of them is
/// lost, doubled or reordered by the move; a connection sending one
/// message at a time stays on the writer's thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelining_connection_moves_to_the_pool_keeping_its_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&base_env(dir.path(), "std"));
    let web = broker.http_addr.clone().expect("brookd logs its http address");
    let on_writer = |web: &str| value(&http(web, "GET", "/metrics").2, "brook_writer_thread_connections", &[]);
    let lone = broker.connect().await;
    lone.create_topic("piped", 1).await.expect("create");
    let piped = broker.connect().await;
    wait_for("both on the writer's thread", Duration::from_secs(30), || on_writer(&web) == Some(2.0)).await;

    let body = "b".repeat(200);
    let mut next = 0u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while on_writer(&web) != Some(1.0) {
        assert!(std::time::Instant::now() < deadline, "the pipelining connection never moved");
        // Ten batches in flight at once, then a send of one from the other.
        let batches: Vec<_> = (0..10)
            .map(|_| piped.send("piped", 0, (0..100).map(|_| Message::new("piped", body.clone())).collect()))
            .collect();
        for batch in batches {
            let offsets: Vec<u64> = batch.await.expect("batch").iter().map(|a| a.queue_offset).collect();
            assert_eq!(offsets, (next..next + 100).collect::<Vec<_>>(), "each batch whole and in call order");
            next += 100;
        }
        let ack = lone.send("piped", 0, vec![Message::new("piped", "one")]).await.expect("send");
        assert_eq!(ack[0].queue_offset, next);
        next += 1;
    }
    // Moved: it goes on sending and reading on the pool.
    let acks = piped.send("piped", 0, vec![Message::new("piped", "after")]).await.expect("send after the move");
    assert_eq!(acks[0].queue_offset, next);
    let read = common::drain_queue(&piped, "piped", 0, 0, next as usize + 1, Duration::from_secs(30)).await;
    assert_eq!(read.len() as u64, next + 1, "every message stored once");
    assert!(read.iter().enumerate().all(|(i, m)| m.queue_offset == i as u64));
    assert_eq!(String::from_utf8_lossy(&read[next as usize].message.body), "after");
}
