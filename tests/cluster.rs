//! A cluster of real processes on this machine: two `brook-namesrv` and
//! three `brookd`, each on its own loopback address. Producers and a
//! consumer group go through the name servers; a checker records every
//! acknowledged and every delivered message and judges loss, duplicates
//! and order from that record. One broker is killed with SIGKILL under
//! load and restarted on its data dir; name servers are killed and
//! restarted empty.

mod common;

use brook_client::producer::queue_for_key;
use brook_client::{
    ClientError, ConsumeResult, Endpoint, Message, MessageId, Producer, ProducerConfig, PushConfig, PushConsumer,
    SendAck, StartFrom, StoredMessage,
};
use brook_proto::route::MASTER_ID;
use brook_proto::{ErrorCode, Request, Response};
use common::{base_env, wait_for, Brookd};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOPIC: &str = "orders";
const GROUP: &str = "billing";

/// A broker of the test cluster: name, loopback address, data dir.
fn broker_env(dir: &Path, name: &str, listen: &str, names: &str) -> Vec<(String, String)> {
    let mut env = base_env(dir, "std");
    env.retain(|(k, _)| k != "BROOK_LISTEN");
    env.push(("BROOK_LISTEN".into(), listen.into()));
    env.push(("BROOK_BROKER_NAME".into(), name.into()));
    env.push(("BROOK_NAMESRV_ADDRS".into(), names.into()));
    // The shortest interval allowed: a restarted name server is refilled
    // within it.
    env.push(("BROOK_REGISTER_INTERVAL_MS".into(), "10000".into()));
    env.push(("BROOK_GROUPS__SESSION_TIMEOUT_MS".into(), "3000".into()));
    env.push(("BROOK_GROUPS__OFFSET_FLUSH_INTERVAL_MS".into(), "200".into()));
    env
}

struct Cluster {
    names: Vec<Brookd>,
    brokers: Vec<Brookd>,
    envs: Vec<Vec<(String, String)>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `n_names` name servers on 127.0.0.2.., `n_brokers` brokers named
    /// broker-1.. on 127.0.0.11..
    fn start(n_names: usize, n_brokers: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let names: Vec<Brookd> = (0..n_names).map(|i| Brookd::namesrv(&format!("127.0.0.{}:0", 2 + i))).collect();
        let list = names.iter().map(|n| n.addr.clone()).collect::<Vec<_>>().join(",");
        let mut brokers = Vec::new();
        let mut envs = Vec::new();
        for i in 1..=n_brokers {
            let data = dir.path().join(format!("broker-{i}"));
            let env = broker_env(&data, &format!("broker-{i}"), &format!("127.0.0.{}:0", 10 + i), &list);
            let broker = Brookd::start(&env);
            // Restarts come back on the same address.
            let mut env = env;
            common::pin_listen(&mut env, &broker.addr);
            brokers.push(broker);
            envs.push(env);
        }
        Cluster { names, brokers, envs, _dir: dir }
    }

    /// Waits until every name server lists every broker (registration
    /// follows a broker's start by a moment).
    async fn registered(self) -> Cluster {
        for ns in &self.names {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while listed(&ns.addr).await.len() < self.brokers.len() {
                assert!(tokio::time::Instant::now() < deadline, "brokers did not register with {}", ns.addr);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        self
    }

    fn namesrv_list(&self) -> String {
        self.names.iter().map(|n| n.addr.clone()).collect::<Vec<_>>().join(",")
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::namesrv_list(&self.namesrv_list())
    }

    /// Runs brookctl through the name servers; its stdout, or a panic with
    /// its stderr.
    fn ctl(&self, args: &[&str]) -> String {
        let out = Command::new(common::bin("brookctl"))
            .arg("--namesrv")
            .arg(self.namesrv_list())
            .args(args)
            .output()
            .expect("run brookctl");
        assert!(out.status.success(), "brookctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Asks one name server directly.
async fn ask(namesrv: &str, request: Request) -> Result<Response, ClientError> {
    let router = brook_client::Router::connect(Endpoint::namesrv([namesrv]), "test").await?;
    router.ask_names(request).await
}

/// The replica sets holding `topic` with a master, as one name server
/// routes it.
async fn routed_sets(namesrv: &str, topic: &str) -> BTreeSet<String> {
    match ask(namesrv, Request::GetRoute { topic: topic.into() }).await {
        Ok(Response::Route(route)) => {
            route.brokers.iter().filter(|b| b.master().is_some()).map(|b| b.broker_name.clone()).collect()
        }
        _ => BTreeSet::new(),
    }
}

async fn wait_routed(namesrv: &str, sets: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while routed_sets(namesrv, TOPIC).await.len() != sets {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{namesrv} did not route {sets} replica sets of {TOPIC}: {:?}",
            routed_sets(namesrv, TOPIC).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The brokers a name server lists: (name, id, address).
async fn listed(namesrv: &str) -> Vec<(String, u64, String)> {
    match ask(namesrv, Request::GetClusterInfo).await {
        Ok(Response::Cluster(brokers)) => brokers.into_iter().map(|b| (b.broker_name, b.broker_id, b.addr)).collect(),
        other => panic!("cluster info from {namesrv}: {other:?}"),
    }
}

/// One delivery: the storing broker's address, queue, offset.
type Delivery = (String, u32, u64);

/// What was acknowledged and what was delivered.
#[derive(Default)]
struct Record {
    /// Body → its ack.
    acked: Mutex<HashMap<String, SendAck>>,
    /// Body → where each delivery came from.
    delivered: Mutex<HashMap<String, Vec<Delivery>>>,
}

impl Record {
    fn ack(&self, body: &str, ack: SendAck) {
        self.acked.lock().expect("acked").insert(body.to_string(), ack);
    }

    fn missing(&self) -> Vec<String> {
        let delivered = self.delivered.lock().expect("delivered");
        let mut missing: Vec<String> =
            self.acked.lock().expect("acked").keys().filter(|b| !delivered.contains_key(*b)).cloned().collect();
        missing.sort();
        missing
    }

    fn duplicates(&self) -> usize {
        self.delivered.lock().expect("delivered").values().filter(|d| d.len() > 1).count()
    }

    async fn wait_all_delivered(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let missing = self.missing();
            if missing.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} acknowledged messages never delivered, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn member_config(member: &str, namesrv: &str) -> PushConfig {
    let mut config = PushConfig::new(GROUP)
        .subscribe(TOPIC, None)
        .member(member)
        .start_from(StartFrom::Earliest)
        .heartbeat(Duration::from_millis(500), Duration::from_secs(3))
        .namesrv(namesrv.split(','))
        .route_refresh(Duration::from_secs(1));
    config.long_poll = Duration::from_secs(2);
    config.commit_interval = Duration::from_millis(100);
    config
}

async fn member(record: &Arc<Record>, name: &str, namesrv: &str) -> PushConsumer {
    let record = record.clone();
    PushConsumer::start("unused:0", member_config(name, namesrv), move |m: StoredMessage| {
        let record = record.clone();
        async move {
            let id: MessageId = m.msg_id.parse().expect("message id");
            let body = String::from_utf8_lossy(&m.message.body).into_owned();
            record.delivered.lock().expect("delivered").entry(body).or_default().push((
                id.broker.to_string(),
                m.queue,
                m.queue_offset,
            ));
            ConsumeResult::Success
        }
    })
    .await
    .expect("start member")
}

async fn producer(cluster: &Cluster) -> Producer {
    let config = ProducerConfig { route_ttl: Duration::from_secs(1), ..ProducerConfig::default() };
    Producer::with_config(cluster.endpoint(), config).await.expect("producer")
}

/// Which replica set's queue `key` maps to, as the producer sees it.
async fn set_of_key(producer: &Producer, key: &str) -> String {
    let view = producer.router().topic(TOPIC).await.expect("view");
    view.queues[queue_for_key(key, view.queues.len() as u32) as usize].broker.clone()
}

/// Ordered keys' acks: per key, one queue, offsets rising with the
/// sequence number in the body.
fn assert_keys_in_order(record: &Record) {
    let acked = record.acked.lock().expect("acked");
    let mut by_key: BTreeMap<&str, Vec<(u64, &SendAck)>> = BTreeMap::new();
    for (body, ack) in acked.iter() {
        if let Some(rest) = body.strip_prefix("key-") {
            let (key, seq) = rest.split_once('/').expect("key/seq");
            by_key.entry(key).or_default().push((seq.parse().expect("seq"), ack));
        }
    }
    for (key, mut acks) in by_key {
        acks.sort_by_key(|(seq, _)| *seq);
        let brokers: BTreeSet<String> = acks
            .iter()
            .map(|(_, a)| a.msg_id.to_string().parse::<MessageId>().expect("id").broker.to_string())
            .collect();
        assert_eq!(brokers.len(), 1, "key {key} stayed on one broker");
        for pair in acks.windows(2) {
            assert_eq!(pair[0].1.queue, pair[1].1.queue, "key {key} stayed in one queue");
            assert!(pair[0].1.queue_offset < pair[1].1.queue_offset, "key {key} stored in send order");
        }
    }
}

/// `cluster list`, `topic create --cluster`, `topic route` through the
/// name servers.
async fn admin_through_name_servers(cluster: &Cluster) {
    let brokers = cluster.ctl(&["cluster", "list", "--json"]);
    let brokers: Vec<serde_json::Value> = brokers.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(brokers.len(), 3, "{brokers:?}");
    for (i, b) in brokers.iter().enumerate() {
        assert_eq!(b["cluster"], "DefaultCluster");
        assert_eq!(b["broker_name"], format!("broker-{}", i + 1));
        assert_eq!(b["broker_id"], MASTER_ID);
        assert_eq!(b["role"], "master");
        assert_eq!(b["addr"], cluster.brokers[i].addr.as_str());
    }
    let created = cluster.ctl(&["topic", "create", TOPIC, "--queues", "4", "--cluster", "DefaultCluster"]);
    assert_eq!(created.lines().count(), 3, "created on every master: {created}");
    for ns in &cluster.names {
        wait_routed(&ns.addr, 3).await;
    }
    let route = cluster.ctl(&["topic", "route", TOPIC, "--json"]);
    assert_eq!(route.lines().count(), 3, "{route}");
    assert!(route.contains("\"write_queues\":4"), "{route}");
}

/// A group of three through the name servers: four queues each, all
/// twelve covered.
async fn group_of_three(record: &Arc<Record>, list: &str) -> Vec<PushConsumer> {
    let mut members = Vec::new();
    for i in 0..3 {
        members.push(member(record, &format!("m{i}"), list).await);
    }
    wait_for("each member holds 4 of the 12 queues", Duration::from_secs(30), || {
        // Each also holds one of the three retry queues (one per broker).
        let held: Vec<Vec<(String, brook_client::QueueRef)>> = members
            .iter()
            .map(|m| m.assignment_by_broker().into_iter().filter(|(_, q)| q.topic == TOPIC).collect())
            .collect();
        let all: BTreeSet<_> = held.iter().flatten().cloned().collect();
        held.iter().all(|h| h.len() == 4) && all.len() == 12
    })
    .await;
    members
}

/// Sends from every producer go round all brokers and are each consumed
/// exactly once.
async fn every_message_once(producers: &[Arc<Producer>], record: &Record) {
    for (p, producer) in producers.iter().enumerate() {
        for n in 0..60 {
            let body = format!("p{p}-{n}");
            let ack = producer.send(Message::new(TOPIC, body.clone())).await.expect("send");
            record.ack(&body, ack);
        }
    }
    let spread: BTreeSet<String> = record
        .acked
        .lock()
        .expect("acked")
        .values()
        .map(|a| a.msg_id.to_string().parse::<MessageId>().expect("id").broker.to_string())
        .collect();
    assert_eq!(spread.len(), 3, "sends went round all three brokers");
    record.wait_all_delivered(Duration::from_secs(30)).await;
    assert_eq!(record.duplicates(), 0, "every message consumed once");
}

/// Load while a broker dies: two producers of unordered sends (any error
/// fails the test) and one of ordered sends over `keys`, where only keys
/// in `on_victim` may fail (their errors are collected).
struct Load {
    stop: Arc<AtomicBool>,
    victim_errors: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(producers: &[Arc<Producer>], record: &Arc<Record>, keys: &[String], on_victim: &[String]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let victim_errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut tasks = Vec::new();
        for (p, producer) in producers.iter().enumerate().take(2) {
            let (producer, record, stop) = (producer.clone(), record.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!("load{p}-{n}");
                    match producer.send(Message::new(TOPIC, body.clone())).await {
                        Ok(ack) => record.ack(&body, ack),
                        Err(e) => panic!("a non-ordered send failed: {e}"),
                    }
                    n += 1;
                }
            }));
        }
        let (producer, record, stop2, errors) =
            (producers[2].clone(), record.clone(), stop.clone(), victim_errors.clone());
        let (keys, on_victim) = (keys.to_vec(), on_victim.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut seq = 0;
            while !stop2.load(Ordering::Relaxed) {
                for key in &keys {
                    let body = format!("key-{key}/{seq}");
                    match producer.send_ordered(Message::new(TOPIC, body.clone()), key).await {
                        Ok(ack) => record.ack(&body, ack),
                        Err(e) if on_victim.contains(key) => errors.lock().expect("errors").push(e.to_string()),
                        Err(e) => panic!("ordered key {key} off the dead broker failed: {e}"),
                    }
                }
                seq += 1;
            }
        }));
        Load { stop, victim_errors, tasks }
    }

    fn errors(&self) -> Vec<String> {
        self.victim_errors.lock().expect("errors").clone()
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("load task");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_shares_queues_and_survives_a_killed_broker() {
    let mut cluster = Cluster::start(2, 3).registered().await;
    let list = cluster.namesrv_list();

    admin_through_name_servers(&cluster).await;
    let record = Arc::new(Record::default());
    let members = group_of_three(&record, &list).await;
    let mut producers = Vec::new();
    for _ in 0..3 {
        producers.push(Arc::new(producer(&cluster).await));
    }
    every_message_once(&producers, &record).await;
    let lines = cluster.ctl(&["group", "describe", GROUP, "--json"]);
    let described: serde_json::Value = serde_json::from_str(lines.trim()).expect("json");
    assert_eq!(described["members"].as_array().map(Vec::len), Some(3), "{described}");

    // Load, then SIGKILL broker-2.
    let victim = "broker-2";
    let keys: Vec<String> = (0..12).map(|k| format!("k{k}")).collect();
    let mut on_victim = Vec::new();
    for key in &keys {
        if set_of_key(&producers[0], key).await == victim {
            on_victim.push(key.clone());
        }
    }
    assert!(!on_victim.is_empty() && on_victim.len() < keys.len(), "keys on and off {victim}: {on_victim:?}");
    let load = Load::start(&producers, &record, &keys, &on_victim);
    let acked_before = record.acked.lock().expect("acked").len();
    wait_for("load runs", Duration::from_secs(30), || record.acked.lock().expect("acked").len() > acked_before + 300)
        .await;
    cluster.brokers[1].kill9();
    let at_kill = record.acked.lock().expect("acked").len();
    wait_for("load goes on without broker-2", Duration::from_secs(30), || {
        record.acked.lock().expect("acked").len() > at_kill + 600
    })
    .await;
    wait_for("keys on broker-2 fail while it is down", Duration::from_secs(30), || {
        load.errors().len() >= on_victim.len()
    })
    .await;
    let errors = load.errors();
    assert!(errors.iter().all(|e| e.contains(victim)), "each failure names {victim}: {errors:?}");
    let delivered_down = record.delivered.lock().expect("delivered").len();
    wait_for("consumers go on with the other brokers", Duration::from_secs(30), || {
        record.delivered.lock().expect("delivered").len() > delivered_down + 300
    })
    .await;

    // Restart on the same address and data dir: it rejoins, its keys work
    // again and its messages are consumed.
    let env = cluster.envs[1].clone();
    cluster.brokers[1] = Brookd::start(&env);
    for ns in &cluster.names {
        wait_routed(&ns.addr, 3).await;
    }
    let errors_at_restart = load.errors().len();
    let before_restart: BTreeSet<String> = record.acked.lock().expect("acked").keys().cloned().collect();
    wait_for("ordered keys on broker-2 are sent again", Duration::from_secs(30), || {
        let acked = record.acked.lock().expect("acked");
        acked.len() > before_restart.len() + 300
            && on_victim
                .iter()
                .all(|k| acked.keys().any(|b| b.starts_with(&format!("key-{k}/")) && !before_restart.contains(b)))
    })
    .await;
    let late_errors = load.errors().len() - errors_at_restart;
    load.finish().await;
    record.wait_all_delivered(Duration::from_secs(60)).await;
    assert_keys_in_order(&record);
    println!(
        "cluster: {} acknowledged, all delivered, {} delivered twice (at-least-once across the kill), {} key failures while down, {late_errors} after restart",
        record.acked.lock().expect("acked").len(),
        record.duplicates(),
        errors.len()
    );
    for member in members {
        member.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_go_on_without_name_servers_and_a_restarted_one_is_refilled() {
    let mut cluster = Cluster::start(2, 2).registered().await;
    cluster.ctl(&["topic", "create", TOPIC, "--queues", "2"]);
    for ns in &cluster.names {
        wait_routed(&ns.addr, 2).await;
    }
    let producer = producer(&cluster).await;
    let record = Arc::new(Record::default());
    let send = |tag: &'static str| {
        let (producer, record) = (&producer, record.clone());
        async move {
            for n in 0..20 {
                let body = format!("{tag}-{n}");
                let ack = producer.send(Message::new(TOPIC, body.clone())).await.expect("send");
                record.ack(&body, ack);
            }
        }
    };
    send("all-up").await;
    // One name server gone: nothing notices.
    let first = cluster.names[0].addr.clone();
    cluster.names[0].kill9();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send("one-down").await;
    // Both gone: the last route stands (refreshes fail every second).
    cluster.names[1].kill9();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send("both-down").await;
    let sets: BTreeSet<String> = record
        .acked
        .lock()
        .expect("acked")
        .iter()
        .filter(|(b, _)| b.starts_with("both-down"))
        .map(|(_, a)| a.msg_id.to_string().parse::<MessageId>().expect("id").broker.to_string())
        .collect();
    assert_eq!(sets.len(), 2, "still round both brokers");

    // Restarted empty on its old address: it knows nothing until the next
    // registrations (at most register_interval_ms = 10 s) refill it.
    cluster.names[0] = Brookd::namesrv(&first);
    assert!(listed(&first).await.len() < 2, "restarted empty");
    send("restarted-empty").await;
    wait_routed(&first, 2).await;
    assert_eq!(listed(&first).await.len(), 2, "refilled");
    // A new client that only knows the restarted one works.
    let fresh = Producer::connect(Endpoint::namesrv([first.as_str()])).await.expect("producer");
    fresh.send(Message::new(TOPIC, "fresh")).await.expect("send through the refilled name server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_at_a_name_server_gets_clear_errors_and_changes_nothing() {
    use brook_proto::route::{BrokerRegistration, TopicConf, PERM_READ_WRITE};
    use common::raw::{ask as raw_ask, connected, raw, read_frame};
    use std::io::Write;

    let cluster = Cluster::start(1, 1).registered().await;
    let ns = cluster.names[0].addr.clone();
    cluster.ctl(&["topic", "create", TOPIC, "--queues", "2"]);
    wait_routed(&ns, 1).await;
    let before = listed(&ns).await;
    let route_before = ask(&ns, Request::GetRoute { topic: TOPIC.into() }).await.expect("route");

    // Garbage instead of a hello: an error frame, then the close.
    let mut stream = raw(&ns);
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
    stream.flush().expect("flush");
    let answer = read_frame(&mut stream);
    assert!(
        matches!(answer, Some(brook_proto::Frame::Response { body: Err(ref e), .. }) if e.code == ErrorCode::MalformedFrame || e.code == ErrorCode::FrameTooLarge),
        "{answer:?}"
    );
    assert!(read_frame(&mut stream).is_none(), "closed after a bad frame");

    // A frame claiming 1 GiB.
    let mut stream = connected(&ns);
    stream.write_all(&(1u32 << 30).to_be_bytes()).expect("write");
    let answer = read_frame(&mut stream);
    assert!(
        matches!(answer, Some(brook_proto::Frame::Response { body: Err(ref e), .. }) if e.code == ErrorCode::FrameTooLarge),
        "{answer:?}"
    );

    // Bogus registrations: refused with the reason, nothing recorded.
    let good = BrokerRegistration {
        cluster: "DefaultCluster".into(),
        broker_name: "intruder".into(),
        broker_id: 0,
        addr: "127.0.0.99:1".into(),
        version: "0".into(),
        topics: vec![TopicConf { name: TOPIC.into(), write_queues: 2, read_queues: 2, perm: PERM_READ_WRITE }],
        msgs_in_per_s: 0.0,
        msgs_out_per_s: 0.0,
        replica: Default::default(),
    };
    let bogus = [
        BrokerRegistration { broker_name: "bad name!".into(), ..good.clone() },
        BrokerRegistration { cluster: String::new(), ..good.clone() },
        BrokerRegistration { addr: "not an address".into(), ..good.clone() },
        BrokerRegistration {
            topics: vec![TopicConf { name: TOPIC.into(), write_queues: 0, read_queues: 2, perm: PERM_READ_WRITE }],
            ..good.clone()
        },
        BrokerRegistration {
            topics: vec![TopicConf { name: TOPIC.into(), write_queues: 2, read_queues: 2, perm: 0xFF }],
            ..good.clone()
        },
        BrokerRegistration {
            topics: vec![TopicConf { name: "../etc".into(), write_queues: 2, read_queues: 2, perm: PERM_READ_WRITE }],
            ..good.clone()
        },
    ];
    let mut stream = connected(&ns);
    for (i, reg) in bogus.into_iter().enumerate() {
        let answer = raw_ask(&mut stream, i as u64 + 1, Request::RegisterBroker(Box::new(reg)));
        let err = answer.expect_err("refused");
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{err:?}");
    }
    // Broker requests at a name server, and names that are not names.
    let err = raw_ask(&mut stream, 50, Request::ListGroups).expect_err("not a broker");
    assert_eq!(err.code, ErrorCode::NotSupported);
    let err = raw_ask(&mut stream, 51, Request::GetRoute { topic: "no such/topic".into() }).expect_err("bad name");
    assert_eq!(err.code, ErrorCode::InvalidName);
    let err = raw_ask(&mut stream, 52, Request::GetRoute { topic: "unknown".into() }).expect_err("unknown");
    assert_eq!(err.code, ErrorCode::TopicNotFound);
    assert_eq!(listed(&ns).await, before, "nothing registered");
    // The broker's console shows the route the name server gives.
    let web = cluster.brokers[0].http_addr.clone().expect("http listener");
    let (status, _, route) = common::http::request(&web, "GET", &format!("/api/topics/{TOPIC}/route"), "");
    assert_eq!(status, 200, "{route}");
    assert!(route.contains("broker-1") && route.contains(&cluster.brokers[0].addr), "{route}");
    assert_eq!(ask(&ns, Request::GetRoute { topic: TOPIC.into() }).await.expect("route"), route_before);
    // Still serving.
    assert!(matches!(raw_ask(&mut stream, 53, Request::Ping), Ok(Response::Pong)));
}
