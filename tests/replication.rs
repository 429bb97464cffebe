//! Replication over real processes, each broker on its own loopback
//! address: a master streams its log to slaves; under `sync` replication a
//! send is acknowledged only once every in-sync slave holds it. The
//! checks read the data dirs themselves (CRC over the log files) and what
//! consumers get from the slaves.

mod common;

use brook_client::{ClientError, Connection, Message, QueueOffset, SendAck};
use brook_proto::route::ReplicaStatus;
use brook_proto::{ErrorCode, Request, Response};
use common::{base_env, wait_for, Brookd};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOPIC: &str = "payments";
const QUEUES: u32 = 4;
const SEGMENT: u64 = 65536;

/// A replica-set member's environment: its own loopback address, id 0
/// (master) or a slave of `master_ha`.
fn member_env(dir: &Path, ip: &str, id: u64, master_ha: Option<&str>) -> Vec<(String, String)> {
    let mut env = base_env(dir, "std");
    env.retain(|(k, _)| k != "BROOK_LISTEN" && k != "BROOK_HTTP__LISTEN");
    env.push(("BROOK_LISTEN".into(), format!("{ip}:0")));
    env.push(("BROOK_HTTP__LISTEN".into(), String::new()));
    env.push(("BROOK_BROKER_ID".into(), id.to_string()));
    env.push(("BROOK_HA_LISTEN".into(), format!("{ip}:0")));
    if let Some(master) = master_ha {
        env.push(("BROOK_MASTER_HA_ADDR".into(), master.into()));
    }
    env
}

fn with(mut env: Vec<(String, String)>, pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    for (k, v) in pairs {
        env.retain(|(key, _)| key != k);
        env.push(((*k).into(), (*v).into()));
    }
    env
}

/// The same environment, listening where `broker` did (for a restart).
fn pinned(env: &[(String, String)], broker: &Brookd) -> Vec<(String, String)> {
    with(env.to_vec(), &[("BROOK_LISTEN", &broker.addr)])
}

/// Where a master's replication listener is.
fn ha_addr(master: &Brookd) -> String {
    let entry = master.log_entry("replication listening").expect("the master logs its replication listener");
    entry["ha_addr"].as_str().expect("ha_addr").to_string()
}

async fn replica(broker: &Brookd) -> ReplicaStatus {
    match broker.connect().await.request(Request::BrokerStatus).await.expect("status") {
        Response::Status(status) => status.replica,
        other => panic!("unexpected {other:?}"),
    }
}

async fn wait_in_sync(master: &Brookd, slaves: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = replica(master).await;
        if status.slaves.iter().filter(|s| s.in_sync).count() >= slaves {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "slaves never joined the in-sync set: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `slave`'s log ends where `end` is.
async fn wait_caught_up(slave: &Brookd, end: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = replica(slave).await;
        if status.end >= end {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "slave stuck at {} of {end}: {status:?}", status.end);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create_topic(master: &Brookd) {
    let conn = master.connect().await;
    conn.request(Request::CreateTopic { name: TOPIC.into(), queues: QUEUES }).await.expect("create topic");
}

/// CRC32C of the log's bytes `[0, upto)`, read from the segment files.
fn log_crc(data_dir: &Path, upto: u64) -> u32 {
    let mut crc = 0;
    let mut base = 0;
    while base < upto {
        let path = data_dir.join("commitlog").join(format!("{base:020}"));
        let mut bytes = Vec::new();
        std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)).expect("segment");
        let take = (upto - base).min(SEGMENT) as usize;
        crc = crc32c::crc32c_append(crc, &bytes[..take]);
        base += SEGMENT;
    }
    crc
}

/// Sends `n` messages pipelined (`window` in flight) over `conn`; returns
/// the acknowledged ones (queue, offset, body) and how many failed.
async fn send_pipelined(conn: &Connection, prefix: &str, n: usize, window: usize) -> (Vec<(SendAck, String)>, usize) {
    let mut acked = Vec::new();
    let mut failed = 0;
    let mut in_flight = std::collections::VecDeque::new();
    for i in 0..n {
        let body = format!("{prefix}-{i}");
        let queue = (i as u32) % QUEUES;
        in_flight.push_back((body.clone(), conn.send(TOPIC, queue, vec![Message::new(TOPIC, body)])));
        if in_flight.len() >= window || i + 1 == n {
            while let Some((body, answer)) = in_flight.pop_front() {
                match answer.await {
                    Ok(mut acks) => acked.push((acks.remove(0), body)),
                    Err(_) => failed += 1,
                }
                if in_flight.len() < window / 2 && i + 1 < n {
                    break;
                }
            }
        }
    }
    (acked, failed)
}

/// Every body of `TOPIC` a slave serves, pulled queue by queue.
async fn bodies_on(broker: &Brookd, want: usize) -> BTreeSet<String> {
    let conn = broker.connect().await;
    let mut seen = BTreeSet::new();
    for queue in 0..QUEUES {
        let msgs = common::drain_queue(&conn, TOPIC, queue, 0, usize::MAX, Duration::from_millis(1500)).await;
        seen.extend(msgs.into_iter().map(|m| String::from_utf8_lossy(&m.message.body).into_owned()));
    }
    assert!(seen.len() >= want.min(1), "nothing read");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_the_masters_sigkill_on_both_slaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sync = [("BROOK_REPLICATION", "sync"), ("BROOK_STORE__FLUSH", "sync"), ("BROOK_MIN_INSYNC_REPLICAS", "3")];
    let mut master = Brookd::start(&with(member_env(&dir.path().join("m"), "127.0.0.31", 0, None), &sync));
    let ha = ha_addr(&master);
    let slaves: Vec<Brookd> = [(1, "127.0.0.32"), (2, "127.0.0.33")]
        .iter()
        .map(|(id, ip)| {
            let env = with(member_env(&dir.path().join(format!("s{id}")), ip, *id, Some(&ha)), &sync[1..2]);
            Brookd::start(&env)
        })
        .collect();
    create_topic(&master).await;
    wait_in_sync(&master, 2).await;

    // Producers pipelining; the master dies in the middle.
    let conn = master.connect().await;
    let (before, failed) = send_pipelined(&conn, "before", 600, 32).await;
    assert_eq!(failed, 0, "every send is acknowledged while both slaves keep up");
    let racing = {
        let conn = master.connect().await;
        tokio::spawn(async move { send_pipelined(&conn, "racing", 3000, 32).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    master.kill9();
    let (racing, _) = racing.await.expect("racing sends");
    let acked: Vec<(SendAck, String)> = before.into_iter().chain(racing).collect();
    let newest = acked.iter().map(|(a, _)| a.msg_id.log_offset).max().expect("something acked");

    // Both slaves hold every acknowledged record, byte for byte as the
    // master wrote it.
    let mut ends = Vec::new();
    for slave in &slaves {
        let status = replica(slave).await;
        assert!(status.end > newest, "slave ends at {} before the newest ack at {newest}", status.end);
        ends.push(status.end);
    }
    let upto = *ends.iter().min().expect("two slaves");
    let master_crc = log_crc(&master.data_dir, upto);
    for slave in &slaves {
        assert_eq!(log_crc(&slave.data_dir, upto), master_crc, "slave log differs from the master's below {upto}");
    }
    // Consumers reading from a slave get every acknowledged message.
    for slave in &slaves {
        let bodies = bodies_on(slave, acked.len()).await;
        let missing: Vec<&String> = acked.iter().map(|(_, b)| b).filter(|b| !bodies.contains(*b)).collect();
        assert!(
            missing.is_empty(),
            "{} acknowledged messages missing on a slave: {:?}",
            missing.len(),
            &missing[..5.min(missing.len())]
        );
    }
    // And a slave takes no writes.
    let refused = slaves[0].connect().await.send(TOPIC, 0, vec![Message::new(TOPIC, "x")]).await;
    assert!(matches!(refused, Err(ClientError::Broker(ref e)) if e.code == ErrorCode::NotMaster), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(feature = "failpoints"), ignore = "the crash in the middle of the cut is a failpoint")]
async fn a_restarted_slave_catches_up_and_a_diverged_log_is_cut_even_across_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    // The master keeps almost nothing of its log in the page cache: a
    // slave catching up is served from the disk, a frame at a time.
    let a_env = with(member_env(&a_dir, "127.0.0.41", 0, None), &[("BROOK_STORE__LOG_CACHE_BYTES", "4096")]);
    let mut a = Brookd::start(&a_env);
    let a_ha = ha_addr(&a);
    let b_env = member_env(&b_dir, "127.0.0.42", 1, Some(&a_ha));
    let mut b = Brookd::start(&b_env);
    create_topic(&a).await;
    let conn = a.connect().await;
    let (first, _) = send_pipelined(&conn, "first", 300, 16).await;
    wait_caught_up(&b, replica(&a).await.end).await;

    // The slave dies; the master goes on; the slave returns and catches up
    // from where it was.
    b.kill9();
    let (second, _) = send_pipelined(&conn, "second", 300, 16).await;
    b = Brookd::start(&pinned(&b_env, &b));
    let a_end = replica(&a).await.end;
    wait_caught_up(&b, a_end).await;
    assert_eq!(log_crc(&b_dir, a_end), log_crc(&a_dir, a_end));
    assert!(b.logs().iter().any(|l| l.contains("replicating from the master")), "b follows a again");

    // Divergence: b stops; a writes more that b never gets; a dies; b
    // becomes the master (a new epoch from its end) and takes new writes;
    // a returns as b's slave: its extra tail is cut — with a SIGKILL in
    // the middle of the cut — and it ends up byte for byte b's.
    b.kill9();
    let (lost, _) = send_pipelined(&conn, "only-on-a", 100, 16).await;
    assert_eq!(lost.len(), 100);
    drop(conn);
    a.kill9();
    let b_master_env = with(pinned(&b_env, &b), &[("BROOK_BROKER_ID", "0")]);
    let b_master_env: Vec<_> = b_master_env.into_iter().filter(|(k, _)| k != "BROOK_MASTER_HA_ADDR").collect();
    b = Brookd::start(&b_master_env);
    let b_ha = ha_addr(&b);
    let (third, failed) = send_pipelined(&b.connect().await, "third", 200, 16).await;
    assert_eq!(failed, 0);
    let a_slave_env = with(
        pinned(&a_env, &a),
        &[("BROOK_BROKER_ID", "1"), ("BROOK_MASTER_HA_ADDR", &b_ha), ("BROOK_FAILPOINT", "truncation.cut")],
    );
    // It may restart itself before it says it listens: waited for by the
    // cut it announces.
    a = Brookd::start_until(&a_slave_env, "this log ran past the master's: cutting it and restarting");
    wait_for("a marks the cut", Duration::from_secs(30), || a_dir.join("truncate").exists()).await;
    // It restarts itself to cut, and stalls in the middle of it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.kill9();
    assert!(a_dir.join("truncate").exists(), "the mark outlives the crash");
    let a_slave_env: Vec<_> = a_slave_env.into_iter().filter(|(k, _)| k != "BROOK_FAILPOINT").collect();
    a = Brookd::start(&a_slave_env);
    assert!(!a_dir.join("truncate").exists(), "the cut is done before the broker serves");
    let b_end = replica(&b).await.end;
    wait_caught_up(&a, b_end).await;
    assert_eq!(log_crc(&a_dir, b_end), log_crc(&b_dir, b_end), "the old master's log is now the new master's");
    let bodies = bodies_on(&a, 1).await;
    for (_, body) in first.iter().chain(&second).chain(&third) {
        assert!(bodies.contains(body), "{body} missing on the old master");
    }
    let resurrected: Vec<&String> = lost.iter().map(|(_, b)| b).filter(|b| bodies.contains(*b)).collect();
    assert!(resurrected.is_empty(), "cut messages delivered again: {resurrected:?}");
    assert_eq!(replica(&a).await.epoch, replica(&b).await.epoch, "a follows b's epoch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slave_that_stops_catching_up_leaves_the_in_sync_set_and_rejoins() {
    for min_insync in ["1", "2"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = [
            ("BROOK_REPLICATION", "sync"),
            ("BROOK_MIN_INSYNC_REPLICAS", min_insync),
            ("BROOK_HA_MAX_CATCHUP_LAG_MS", "1500"),
            ("BROOK_REPLICATION_TIMEOUT_MS", "500"),
        ];
        let master = Brookd::start(&with(member_env(&dir.path().join("m"), "127.0.0.51", 0, None), &settings));
        let ha = ha_addr(&master);
        let slave = Brookd::start(&member_env(&dir.path().join("s"), "127.0.0.52", 1, Some(&ha)));
        create_topic(&master).await;
        wait_in_sync(&master, 1).await;
        let conn = master.connect().await;
        conn.send(TOPIC, 0, vec![Message::new(TOPIC, "in sync")]).await.expect("acked with the slave in sync");

        // Cut off: the slave stops answering (SIGSTOP: its connection stays
        // up, its acks stop).
        signal(&slave, libc::SIGSTOP);
        let stalled = conn.send(TOPIC, 0, vec![Message::new(TOPIC, "stalled")]).await;
        assert!(
            matches!(stalled, Err(ClientError::Broker(ref e)) if e.code == ErrorCode::ReplicationTimeout),
            "a write the slave cannot confirm is not acknowledged: {stalled:?}"
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while replica(&master).await.slaves.iter().any(|s| s.in_sync) {
            assert!(tokio::time::Instant::now() < deadline, "the lagging slave never left the in-sync set");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let end_before = replica(&master).await.end;
        let after = conn.send(TOPIC, 0, vec![Message::new(TOPIC, "alone")]).await;
        match min_insync {
            "1" => assert!(after.is_ok(), "min_insync_replicas = 1: the master goes on alone: {after:?}"),
            _ => {
                assert!(
                    matches!(after, Err(ClientError::Broker(ref e)) if e.code == ErrorCode::NotEnoughReplicas),
                    "min_insync_replicas = 2: refused: {after:?}"
                );
                assert_eq!(replica(&master).await.end, end_before, "nothing of a refused send is stored");
            }
        }

        // Back: it catches up and rejoins; writes are acknowledged again.
        signal(&slave, libc::SIGCONT);
        wait_in_sync(&master, 1).await;
        conn.send(TOPIC, 0, vec![Message::new(TOPIC, "rejoined")]).await.expect("acked after the slave rejoined");
        let bodies = bodies_on(&slave, 1).await;
        for body in ["in sync", "stalled", "rejoined"] {
            assert!(bodies.contains(body), "{body} not on the slave (min_insync {min_insync})");
        }
        assert_eq!(bodies.contains("alone"), min_insync == "1", "a refused write is stored nowhere");
    }
}

/// Sends `sig`; a SIGSTOP returns once every thread has stopped (`kill`
/// returns before a thread running on another CPU has, and in that window
/// a slave could still acknowledge a write).
fn signal(broker: &Brookd, sig: i32) {
    // SAFETY: a signal to our own child process.
    unsafe {
        libc::kill(broker.pid() as i32, sig);
    }
    if sig != libc::SIGSTOP {
        return;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let stopped = |stat: String| stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) == Some("T");
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", broker.pid())).expect("tasks");
        let states: Vec<bool> =
            tasks.flatten().map(|t| std::fs::read_to_string(t.path().join("stat")).is_ok_and(stopped)).collect();
        if states.iter().all(|s| *s) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the broker did not stop");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_at_the_replication_port_counts_for_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = [("BROOK_REPLICATION", "sync"), ("BROOK_MIN_INSYNC_REPLICAS", "2")];
    let master = Brookd::start(&with(member_env(&dir.path().join("m"), "127.0.0.61", 0, None), &settings));
    let ha = ha_addr(&master);
    create_topic(&master).await;
    // Eight bytes of anything (what RocketMQ took for a slave's ack), an
    // ack frame with no hello, and a hello from another replica set.
    let mut ack_without_hello = vec![0, 0, 0, 17, 5];
    ack_without_hello.extend_from_slice(&u64::MAX.to_le_bytes());
    ack_without_hello.extend_from_slice(&u64::MAX.to_le_bytes());
    for payload in [vec![0xff; 8], b"GET / HTTP/1.1\r\n\r\n".to_vec(), ack_without_hello] {
        let mut stream = std::net::TcpStream::connect(&ha).expect("connect");
        let _ = stream.write_all(&payload);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        assert!(rest.is_empty(), "the master answered garbage with {rest:?}");
    }
    let stranger = brook_proto::ha::HaHello {
        magic: brook_proto::ha::HA_MAGIC,
        version: brook_proto::ha::HA_VERSION,
        cluster: "DefaultCluster".into(),
        broker_name: "broker-z".into(),
        broker_id: 1,
        segment_bytes: SEGMENT,
        end: 0,
        epochs: Vec::new(),
    };
    let mut framed = tokio_util::codec::Framed::new(
        tokio::net::TcpStream::connect(&ha).await.expect("connect"),
        brook_proto::ha::HaCodec,
    );
    use futures::{SinkExt, StreamExt};
    framed.send(brook_proto::ha::HaFrame::Hello(stranger)).await.expect("hello");
    let answer = framed.next().await;
    assert!(matches!(answer, Some(Ok(brook_proto::ha::HaFrame::Refused(_)))), "{answer:?}");

    assert!(replica(&master).await.slaves.is_empty(), "nothing counted as a slave");
    let refused = master.connect().await.send(TOPIC, 0, vec![Message::new(TOPIC, "x")]).await;
    assert!(
        matches!(refused, Err(ClientError::Broker(ref e)) if e.code == ErrorCode::NotEnoughReplicas),
        "{refused:?}"
    );
    // Logged through the broker's asynchronous drain: it may trail the
    // answers above on a loaded machine.
    common::wait_for("the dropped connection's log line", Duration::from_secs(10), || {
        master.log_entry("replication connection dropped: not a slave's hello").is_some()
    })
    .await;
}

async fn topics_on(broker: &Brookd) -> Vec<(String, u32)> {
    match broker.connect().await.request(Request::ListTopics).await.expect("list") {
        Response::Topics(list) => list.into_iter().map(|t| (t.name, t.queues)).collect(),
        other => panic!("unexpected {other:?}"),
    }
}

async fn committed_on(broker: &Brookd, group: &str) -> Vec<(u32, u64)> {
    common::committed(&broker.connect().await, group, TOPIC).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_offsets_and_delay_progress_reach_the_slave_through_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sync = [("BROOK_REPLICATION", "sync"), ("BROOK_DELAY_LEVELS", "1s 2s")];
    let mut master = Brookd::start(&with(member_env(&dir.path().join("m"), "127.0.0.71", 0, None), &sync));
    let ha = ha_addr(&master);
    let slave_env = with(member_env(&dir.path().join("s"), "127.0.0.72", 1, Some(&ha)), &sync[1..]);
    let mut slave = Brookd::start(&slave_env);
    create_topic(&master).await;
    wait_in_sync(&master, 1).await;
    let conn = master.connect().await;
    // A topic with queues and no message yet, one created and deleted.
    conn.request(Request::CreateTopic { name: "empty-yet".into(), queues: 6 }).await.expect("create");
    conn.request(Request::CreateTopic { name: "short-lived".into(), queues: 1 }).await.expect("create");
    conn.request(Request::DeleteTopic { name: "short-lived".into() }).await.expect("delete");
    // A group's offsets, moved by a reset.
    send_pipelined(&conn, "m", 40, 8).await;
    let to = brook_proto::request::ResetTo::Offsets(vec![(0, 3), (1, 5)]);
    conn.request(Request::ResetOffsets { group: "auditors".into(), topic: TOPIC.into(), to }).await.expect("reset");
    // A member's commit moves another queue's; a late, lower one does not.
    for offset in [4, 1] {
        let offsets = vec![QueueOffset { topic: TOPIC.into(), queue: 2, offset }];
        let commit = Request::CommitOffsets { group: "auditors".into(), member: "a1".into(), offsets, generation: 0 };
        conn.request(commit).await.expect("commit");
    }
    // A delayed message, delivered by the master.
    conn.send(TOPIC, 2, vec![Message::new(TOPIC, "delayed-once").with_delay_level(1)]).await.expect("delayed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !bodies_on(&master, 1).await.contains("delayed-once") {
        assert!(tokio::time::Instant::now() < deadline, "the master never delivered the delayed message");
    }
    wait_caught_up(&slave, replica(&master).await.end).await;

    let topics = topics_on(&slave).await;
    assert!(topics.contains(&("empty-yet".to_string(), 6)), "{topics:?}");
    assert!(topics.contains(&(TOPIC.to_string(), QUEUES)), "{topics:?}");
    assert!(!topics.iter().any(|(name, _)| name == "short-lived"), "{topics:?}");
    let offsets = committed_on(&slave, "auditors").await;
    assert!(offsets.contains(&(0, 3)) && offsets.contains(&(1, 5)) && offsets.contains(&(2, 4)), "{offsets:?}");

    // Promoted (the master gone, the slave restarted as id 0), it neither
    // delivers the delayed message again nor forgets the group's place.
    master.kill9();
    slave.terminate();
    let promoted_env: Vec<_> = with(pinned(&slave_env, &slave), &[("BROOK_BROKER_ID", "0")])
        .into_iter()
        .filter(|(k, _)| k != "BROOK_MASTER_HA_ADDR")
        .collect();
    slave = Brookd::start(&promoted_env);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let conn = slave.connect().await;
    let delivered = common::drain_queue(&conn, TOPIC, 2, 0, usize::MAX, Duration::from_millis(1500)).await;
    let copies = delivered.iter().filter(|m| m.message.body == b"delayed-once").count();
    assert_eq!(copies, 1, "the promoted slave resumed the delay level where the master was");
    let offsets = committed_on(&slave, "auditors").await;
    assert!(offsets.contains(&(0, 3)) && offsets.contains(&(1, 5)) && offsets.contains(&(2, 4)), "{offsets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_held_for_their_replicas_survive_a_checkpoint_and_a_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Checkpoints write every queue's tail (recovery would otherwise scan
    // the whole small log anyway).
    let settings =
        [("BROOK_REPLICATION", "sync"), ("BROOK_REPLICATION_TIMEOUT_MS", "300"), ("BROOK_STORE__LOG_CACHE_BYTES", "2")];
    let master_env = with(member_env(&dir.path().join("m"), "127.0.0.81", 0, None), &settings);
    let mut master = Brookd::start(&master_env);
    let ha = ha_addr(&master);
    let slave = Brookd::start(&member_env(&dir.path().join("s"), "127.0.0.82", 1, Some(&ha)));
    create_topic(&master).await;
    wait_in_sync(&master, 1).await;
    let conn = master.connect().await;
    conn.send(TOPIC, 0, vec![Message::new(TOPIC, "replicated")]).await.expect("acked");
    // The slave stops answering: these are written but held back from
    // their queue, unacknowledged, while checkpoints run.
    signal(&slave, libc::SIGSTOP);
    for i in 0..3 {
        let held = conn.send(TOPIC, 0, vec![Message::new(TOPIC, format!("held-{i}"))]).await;
        assert!(matches!(held, Err(ClientError::Broker(ref e)) if e.code == ErrorCode::ReplicationTimeout), "{held:?}");
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    master.kill9();
    drop(slave);
    // Alone now: the held records get their entries back from the log, at
    // the offsets they were given, and the next send follows them.
    let alone: Vec<_> = pinned(&master_env, &master).into_iter().filter(|(k, _)| k != "BROOK_REPLICATION").collect();
    let master = Brookd::start(&alone);
    let conn = master.connect().await;
    let msgs = common::drain_queue(&conn, TOPIC, 0, 0, 4, Duration::from_secs(5)).await;
    let bodies: Vec<String> = msgs.iter().map(|m| String::from_utf8_lossy(&m.message.body).into_owned()).collect();
    assert_eq!(bodies, ["replicated", "held-0", "held-1", "held-2"]);
    let next = conn.send(TOPIC, 0, vec![Message::new(TOPIC, "after")]).await.expect("send");
    assert_eq!(next[0].queue_offset, 4, "offsets stay dense");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slave_found_through_the_name_server_serves_consumers_while_its_master_is_down() {
    use brook_client::{ConsumeResult, PushConfig, PushConsumer, StartFrom, StoredMessage};
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = Brookd::namesrv("127.0.0.90:0");
    let in_cluster = [("BROOK_NAMESRV_ADDRS", ns.addr.as_str()), ("BROOK_REGISTER_INTERVAL_MS", "10000")];
    let master_env = with(member_env(&dir.path().join("m"), "127.0.0.91", 0, None), &in_cluster);
    let mut master = Brookd::start(&master_env);
    // No master_ha_addr: the slave asks the name server where its master is.
    let slave = Brookd::start(&with(member_env(&dir.path().join("s"), "127.0.0.92", 1, None), &in_cluster));
    create_topic(&master).await;
    wait_in_sync(&master, 1).await;
    let (acked, failed) = send_pipelined(&master.connect().await, "r", 400, 16).await;
    assert_eq!((acked.len(), failed), (400, 0));
    wait_caught_up(&slave, replica(&master).await.end).await;

    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let mut config = PushConfig::new("readers")
        .subscribe(TOPIC, None)
        .start_from(StartFrom::Earliest)
        .heartbeat(Duration::from_millis(500), Duration::from_secs(3))
        .namesrv([ns.addr.as_str()])
        .route_refresh(Duration::from_secs(1));
    config.commit_interval = Duration::from_millis(100);
    let record = seen.clone();
    let from = Arc::new(Mutex::new(BTreeSet::new()));
    let sources = from.clone();
    let deliveries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = deliveries.clone();
    let consumer = PushConsumer::start("unused:0", config, move |m: StoredMessage| {
        let (record, sources) = (record.clone(), sources.clone());
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let id: brook_client::MessageId = m.msg_id.parse().expect("message id");
            sources.lock().expect("sources").insert(id.broker.to_string());
            record.lock().expect("seen").insert(String::from_utf8_lossy(&m.message.body).into_owned());
            ConsumeResult::Success
        }
    })
    .await
    .expect("consumer");
    wait_for("some consumed from the master", Duration::from_secs(30), || seen.lock().expect("seen").len() >= 20).await;
    master.kill9();
    // The rest comes from the slave.
    wait_for("every message, the rest from the slave", Duration::from_secs(60), || {
        seen.lock().expect("seen").len() == 400
    })
    .await;
    assert!(from.lock().expect("sources").contains(&slave.addr), "read from the slave: {:?}", from.lock());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered_before = deliveries.load(std::sync::atomic::Ordering::SeqCst);
    // The master returns: the commits the slave could not take land there.
    let master = Brookd::start(&pinned(&master_env, &master));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let committed: u64 = committed_on(&master, "readers").await.iter().map(|(_, o)| o).sum();
        if committed == 400 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "held commits never reached the master: {committed} of 400");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Back on the master, nothing read from the slave comes again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        deliveries.load(std::sync::atomic::Ordering::SeqCst),
        delivered_before,
        "re-delivered after the master came back"
    );
    consumer.shutdown().await;
}
