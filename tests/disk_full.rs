//! A full disk is a pause: on a small file system of its own (a loop-mounted
//! ext4, or a tmpfs), a real `brookd` with sync flush is sent messages until
//! the disk fills. Sends then fail with `DiskFull` (retriable) and store
//! nothing, reads are still served, the state is logged once and shown by
//! `brookctl broker status`; once space is freed, sends succeed again
//! without a restart. A SIGTERM while full exits 0, a SIGKILL at any point
//! loses no acknowledged message, and a broker restarted on the full disk
//! starts and serves reads. A client-side record of every acknowledged
//! message is the judge.
//!
//! Needs root (to mount); without it each test says so and passes.

mod common;

use brook_client::{ClientError, Connection, ErrorCode, Message};
use common::small_fs::SmallFs;
use common::{base_env, bin, Brookd};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOPIC: &str = "full";
const QUEUES: u32 = 4;
/// The file system: big enough for a few segments, small enough to fill in
/// seconds.
const FS_MIB: u64 = 32;
/// Room left for the broker once the filler is in: it fills this.
const ROOM: u64 = 6 << 20;

/// (queue, offset) → body.
type Bodies = BTreeMap<(u32, u64), Vec<u8>>;

/// What the client was told was stored.
#[derive(Clone, Default)]
struct Acked(Arc<Mutex<Bodies>>);

impl Acked {
    fn record(&self, queue: u32, offset: u64, body: Vec<u8>) {
        let previous = self.0.lock().expect("acked").insert((queue, offset), body);
        assert!(previous.is_none(), "offset {offset} of queue {queue} acknowledged twice");
    }

    fn count(&self, queue: u32) -> u64 {
        self.0.lock().expect("acked").keys().filter(|(q, _)| *q == queue).count() as u64
    }

    fn len(&self) -> usize {
        self.0.lock().expect("acked").len()
    }

    /// Every acknowledged message is stored where its ack said, with its
    /// body; each queue holds exactly the acknowledged messages (a refused
    /// send stored nothing).
    async fn verify(&self, conn: &Connection) {
        let acked = self.0.lock().expect("acked").clone();
        for queue in 0..QUEUES {
            let mut offset = 0;
            let mut seen = 0;
            loop {
                let page = conn.pull(TOPIC, queue, offset, 256, 0, None, 0).await.expect("pull");
                assert_eq!(page.max_offset, self.count(queue), "queue {queue} holds only what was acknowledged");
                for m in &page.messages {
                    let want = acked.get(&(queue, m.queue_offset)).expect("every stored message was acknowledged");
                    assert_eq!(&m.message.body[..], &want[..], "queue {queue} offset {}", m.queue_offset);
                    seen += 1;
                }
                if page.next_offset >= page.max_offset {
                    break;
                }
                offset = page.next_offset;
            }
            assert_eq!(seen, self.count(queue), "queue {queue}: every acknowledged message read back");
        }
    }
}

fn body(queue: u32, i: u64) -> Vec<u8> {
    format!("q{queue}-{i}-{}", "d".repeat(1000)).into_bytes()
}

fn is_disk_full(e: &ClientError) -> bool {
    e.code() == Some(ErrorCode::DiskFull)
}

/// Sends batches to every queue at once until the broker says the disk is
/// full; every ack is recorded. Returns the first `DiskFull` error.
async fn fill(conn: &Connection, acked: &Acked) -> ClientError {
    let tasks: Vec<_> = (0..QUEUES)
        .map(|queue| {
            let (conn, acked) = (conn.clone(), acked.clone());
            tokio::spawn(async move {
                let mut i = 0;
                loop {
                    let batch: Vec<Message> = (i..i + 8).map(|n| Message::new(TOPIC, body(queue, n))).collect();
                    match conn.send(TOPIC, queue, batch).await {
                        Ok(acks) => {
                            for (n, ack) in (i..).zip(acks) {
                                acked.record(queue, ack.queue_offset, body(queue, n));
                            }
                            i += 8;
                        }
                        Err(e) if is_disk_full(&e) => return e,
                        Err(e) => panic!("queue {queue}: a send failed other than for space: {e}"),
                    }
                }
            })
        })
        .collect();
    let mut first = None;
    for task in tasks {
        let e = task.await.expect("sender");
        first.get_or_insert(e);
    }
    first.expect("four senders")
}

/// Sends one message to each queue, recording acks; true if all were taken.
async fn send_round(conn: &Connection, acked: &Acked, tag: u64) -> Result<(), ClientError> {
    for queue in 0..QUEUES {
        let b = body(queue, 1_000_000 + tag);
        let ack = conn.send(TOPIC, queue, vec![Message::new(TOPIC, b.clone())]).await?;
        acked.record(queue, ack[0].queue_offset, b);
    }
    Ok(())
}

fn env(fs: &SmallFs, backend: &str) -> Vec<(String, String)> {
    let mut env = base_env(&fs.dir("data"), backend);
    env.extend([
        ("BROOK_STORE__FLUSH".into(), "sync".into()),
        ("BROOK_STORE__SEGMENT_BYTES".into(), (1u64 << 20).to_string()),
        // Retention stays out of it: only the test frees space.
        ("BROOK_STORE__DISK_MAX_USED_RATIO".into(), "1.0".into()),
        // Checkpoints fail on a full disk: often, to see them logged once.
        ("BROOK_STORE__CHECKPOINT_INTERVAL_MS".into(), "200".into()),
        ("BROOK_STORE__RETENTION_CHECK_INTERVAL_MS".into(), "200".into()),
    ]);
    env
}

fn count_logs(broker: &Brookd, msg: &str) -> usize {
    broker
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["msg"] == msg)
        .count()
}

const ENTERED: &str = "disk full: refusing writes until space is freed";
const LEFT: &str = "disk has room again: writes accepted";

/// Fills the disk and checks what a full disk looks like from outside.
async fn fill_and_check_refusals(fs: &SmallFs, broker: &Brookd, conn: &Connection, acked: &Acked) {
    let err = fill(conn, acked).await;
    assert!(err.is_retriable(), "DiskFull is retriable: {err}");
    assert!(err.detail().is_some_and(|since| since > 0), "detail is since when: {err:?}");
    assert!(acked.len() > 100, "the disk took a few MiB first ({} acked)", acked.len());
    eprintln!("{} messages acknowledged before the disk filled", acked.len());
    // Whatever the log could not use goes too: now every file the broker
    // writes (checkpoints, consume queues, offsets) fails for space.
    fs.fill_up("rest");
    // Refused at once, every one, and nothing of them is stored.
    let started = Instant::now();
    for _ in 0..20 {
        let e = send_round(conn, acked, 0).await.expect_err("still full");
        assert!(is_disk_full(&e), "{e}");
    }
    assert!(started.elapsed() < Duration::from_secs(20), "refusals do not wait for the disk");
    let status = conn.broker_status().await.expect("status");
    assert!(!status.writable && status.disk_full_since_ms.is_some() && status.poisoned.is_none(), "{status:?}");
    // Reads are served while full.
    acked.verify(conn).await;
    let topic = conn.describe_topic(TOPIC).await.expect("describe");
    assert_eq!(topic.queue_stats.len(), QUEUES as usize);
    let out = std::process::Command::new(bin("brookctl"))
        .args(["--addr", &broker.addr, "broker", "status"])
        .output()
        .expect("brookctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("disk full, writes refused since"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_sends_serves_reads_and_takes_writes_again_once_space_is_freed() {
    for backend in common::BACKENDS {
        let fs = match SmallFs::mount(FS_MIB) {
            Ok(fs) => fs,
            Err(why) => return eprintln!("skipped: {why}"),
        };
        eprintln!("{backend} on a small {}", fs.kind);
        let filler = fs.filler("filler", fs.free_bytes().saturating_sub(ROOM + (4 << 20)));
        let mut broker = Brookd::start(&env(&fs, backend));
        let conn = broker.connect().await;
        conn.create_topic(TOPIC, QUEUES).await.expect("create");
        fs.filler("filler2", 4 << 20); // what the broker's start left is taken too
        let acked = Acked::default();
        fill_and_check_refusals(&fs, &broker, &conn, &acked).await;
        // A few failing checkpoints later, still one line each way.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(count_logs(&broker, ENTERED), 1, "{backend} on {}: entering is logged once", fs.kind);
        assert!(count_logs(&broker, "checkpoint failed; retried every period, logged again when it succeeds") <= 1);
        assert_eq!(count_logs(&broker, LEFT), 0);

        std::fs::remove_file(&filler).expect("free space");
        std::fs::remove_file(fs.path.join("rest")).expect("free space");
        let freed = Instant::now();
        let deadline = freed + Duration::from_secs(20);
        let mut round = 1;
        loop {
            match send_round(&conn, &acked, round).await {
                Ok(()) => break eprintln!("writes came back {} ms after space was freed", freed.elapsed().as_millis()),
                Err(e) if is_disk_full(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{backend}: sends did not come back after space was freed: {e}"),
            }
            round += 1;
        }
        for more in 0..20 {
            send_round(&conn, &acked, 10_000 + more).await.expect("writable again");
        }
        assert!(conn.broker_status().await.expect("status").writable);
        assert_eq!(count_logs(&broker, LEFT), 1, "leaving is logged once");
        acked.verify(&conn).await;

        broker.kill9();
        let broker = Brookd::start(&env(&fs, backend));
        acked.verify(&broker.connect().await).await;
        drop(broker);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_sigterm_while_full_lose_nothing_and_a_restart_on_the_full_disk_serves_reads() {
    let fs = match SmallFs::mount(FS_MIB) {
        Ok(fs) => fs,
        Err(why) => return eprintln!("skipped: {why}"),
    };
    let filler = fs.filler("filler", fs.free_bytes().saturating_sub(ROOM + (4 << 20)));
    let mut broker = Brookd::start(&env(&fs, "uring"));
    let reserve = broker.data_dir.join("reserve");
    common::wait_for("the space reserve laid down", Duration::from_secs(20), || reserve.exists()).await;
    let conn = broker.connect().await;
    conn.create_topic(TOPIC, QUEUES).await.expect("create");
    fs.filler("filler2", 4 << 20);
    let acked = Acked::default();
    fill_and_check_refusals(&fs, &broker, &conn, &acked).await;

    // Killed on a disk without a free byte, restarted there: the broker
    // lets its space reserve go, recovers, and serves every acknowledged
    // message; sends fill what is left of the active segment, then are
    // refused for space.
    broker.kill9();
    let mut broker = Brookd::start(&env(&fs, "uring"));
    assert!(
        broker.log_entry("disk full at start: let the 1048576-byte space reserve go so recovery can write").is_some(),
        "{}",
        broker.logs().join("\n")
    );
    let conn = broker.connect().await;
    acked.verify(&conn).await;
    let mut round = 0;
    let e = loop {
        match send_round(&conn, &acked, 100_000 + round).await {
            Ok(()) => round += 1,
            Err(e) => break e,
        }
        assert!(round < 2_000, "the disk is still full: a segment's worth at most");
    };
    assert!(is_disk_full(&e), "{e}");

    // A clean stop on the full disk, its reserve spent: the log is synced,
    // and what could not be written after it is no failure.
    let rest = fs.fill_up("rest2");
    let status = broker.terminate();
    assert!(status.success(), "SIGTERM while full exits 0: {status:?}\n{}", broker.logs().join("\n"));
    assert!(broker
        .log_entry(
            "disk full: shutdown synced the log but could not write its checkpoint; the next start recovers from the log"
        )
        .is_some());
    std::fs::remove_file(rest).expect("free space");

    std::fs::remove_file(&filler).expect("free space");
    let broker = Brookd::start(&env(&fs, "uring"));
    let conn = broker.connect().await;
    acked.verify(&conn).await;
    send_round(&conn, &acked, 1).await.expect("writable after space was freed");
    acked.verify(&conn).await;
    common::wait_for("the space reserve laid down again", Duration::from_secs(20), || reserve.exists()).await;
}
