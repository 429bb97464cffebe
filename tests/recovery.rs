//! Crash recovery on a real brookd, on both writer backends:
//! - SIGKILL in the middle of sync-flush sends: after a restart every
//!   acknowledged message is there exactly once and queue offsets are dense;
//! - a tail cut mid-record, with flipped bytes or with garbage recovers to the
//!   last good record and keeps serving;
//! - consume queues deleted entirely are rebuilt from the log;
//! - SIGTERM checkpoints, so the next start does not scan.

mod common;

use brook::store::recovery::{scan_segment, SegmentEnd};
use brook_client::Message;
use common::{base_env, drain_queue, Brookd, BACKENDS};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const QUEUES: u32 = 4;

fn sync_env(dir: &Path, backend: &str) -> Vec<(String, String)> {
    let mut env = base_env(dir, backend);
    env.push(("BROOK_STORE__FLUSH".into(), "sync".into()));
    env
}

/// What must survive a restart (ids name the port, which changes).
fn summary(all: &HashMap<u32, Vec<brook_client::StoredMessage>>) -> Vec<(u32, u64, u64, Option<String>, String)> {
    let mut out: Vec<_> = all
        .iter()
        .flat_map(|(q, msgs)| {
            msgs.iter().map(move |m| {
                let body = String::from_utf8_lossy(&m.message.body);
                (
                    *q,
                    m.queue_offset,
                    m.log_offset,
                    m.message.tags.clone(),
                    body.chars().take(12).collect::<String>() + &body.len().to_string(),
                )
            })
        })
        .collect();
    out.sort();
    out
}

/// Every message of every queue, after checking offsets are dense from 0.
async fn read_all(broker: &Brookd, topic: &str) -> HashMap<u32, Vec<brook_client::StoredMessage>> {
    let conn = broker.connect().await;
    let info = conn.describe_topic(topic).await.expect("describe");
    let mut out = HashMap::new();
    for stats in info.queue_stats {
        let msgs = drain_queue(&conn, topic, stats.queue, 0, stats.max_offset as usize, Duration::from_secs(30)).await;
        let offsets: Vec<u64> = msgs.iter().map(|m| m.queue_offset).collect();
        assert_eq!(offsets, (0..stats.max_offset).collect::<Vec<_>>(), "queue {} offsets are dense", stats.queue);
        out.insert(stats.queue, msgs);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_sync_sends_loses_no_acknowledged_message() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = sync_env(dir.path(), backend);
        let mut broker = Brookd::start(&env);
        broker.connect().await.create_topic("crash", QUEUES).await.expect("create");
        let acked: Arc<Mutex<Vec<(u32, u64, String)>>> = Arc::default();
        let mut senders = Vec::new();
        for task in 0..16u32 {
            let conn = broker.connect().await;
            let acked = acked.clone();
            senders.push(tokio::spawn(async move {
                let queue = task % QUEUES;
                for seq in 0.. {
                    let body = format!("t{task}-s{seq}");
                    match conn.send("crash", queue, vec![Message::new("crash", body.clone())]).await {
                        Ok(acks) => acked.lock().expect("lock").push((queue, acks[0].queue_offset, body)),
                        Err(_) => return,
                    }
                }
            }));
        }
        // Kill once a good number of sends are acknowledged, mid-stream.
        while acked.lock().expect("lock").len() < 400 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        broker.kill9();
        for sender in senders {
            sender.await.expect("sender");
        }
        let acked = acked.lock().expect("lock").clone();
        let broker = Brookd::start(&env);
        let stored = read_all(&broker, "crash").await;
        let mut seen = HashSet::new();
        for msgs in stored.values() {
            for m in msgs {
                let body = String::from_utf8(m.message.body.clone()).expect("utf8");
                assert!(seen.insert(body.clone()), "{backend}: {body} stored twice");
            }
        }
        for (queue, offset, body) in &acked {
            let got = stored[queue].get(*offset as usize).map(|m| m.message.body.clone());
            assert_eq!(got.as_deref(), Some(body.as_bytes()), "{backend}: acknowledged {body} lost");
        }
        let rec = broker.log_entry("store recovered").expect("recovery logged");
        assert_eq!(rec["clean"], false, "{backend}: a SIGKILL is an unclean stop");
    }
}

/// Start, store `n` messages in one queue (sync flush, no periodic
/// checkpoint so recovery scans them all), SIGKILL.
async fn store_and_kill(dir: &Path, backend: &str, n: usize) -> Vec<(String, String)> {
    let mut env = sync_env(dir, backend);
    env.push(("BROOK_STORE__CHECKPOINT_INTERVAL_MS".into(), "3600000".into()));
    let mut broker = Brookd::start(&env);
    let conn = broker.connect().await;
    conn.create_topic("tail", 1).await.expect("create");
    for i in 0..n {
        conn.send("tail", 0, vec![Message::new("tail", format!("m{i}-{}", "y".repeat(200)))]).await.expect("send");
    }
    broker.kill9();
    env
}

/// (segment path, record offset within it, record length) of the last record.
fn last_record(dir: &Path) -> (std::path::PathBuf, u64, u64) {
    let log = dir.join("commitlog");
    let mut bases = brook::store::segment::list_segments(&log).expect("list");
    bases.sort_unstable();
    let mut last = None;
    for base in bases {
        let path = log.join(brook::store::segment::segment_name(base));
        let file = std::fs::File::open(&path).expect("open");
        let end = scan_segment(&file, base, 65536, 0, &mut |rec, at| {
            last = Some((path.clone(), at - base, rec.len() as u64));
            Ok(())
        })
        .expect("scan");
        if matches!(end, SegmentEnd::End(_)) {
            break;
        }
    }
    last.expect("a record")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_tail_recovers_to_the_last_good_record() {
    type Damage = fn(&std::fs::File, u64, u64);
    let damages: [(&str, Damage); 3] = [
        ("cut mid-record", |f, at, len| f.write_all_at(&vec![0u8; (len / 2) as usize], at + len / 2).expect("cut")),
        ("flipped byte", |f, at, len| {
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, at + len - 3).expect("read");
            f.write_all_at(&[b[0] ^ 0x5a], at + len - 3).expect("flip");
        }),
        ("garbage after", |f, at, len| {
            f.write_all_at(&[0xAB; 300], at + len).expect("garbage");
        }),
    ];
    for backend in BACKENDS {
        for (what, damage) in damages {
            let dir = tempfile::tempdir().expect("tempdir");
            let env = store_and_kill(dir.path(), backend, 120).await;
            let (path, at, len) = last_record(dir.path());
            let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).expect("open");
            damage(&file, at, len);
            drop(file);
            let broker = Brookd::start(&env);
            let stored = read_all(&broker, "tail").await;
            let expected = if what == "garbage after" { 120 } else { 119 };
            assert_eq!(stored[&0].len(), expected, "{backend}/{what}");
            for (i, m) in stored[&0].iter().enumerate() {
                assert!(m.message.body.starts_with(format!("m{i}-").as_bytes()), "{backend}/{what}: record {i}");
            }
            if what != "garbage after" {
                let rec = broker.log_entry("cut a torn tail off the commit log");
                assert!(rec.is_some(), "{backend}/{what}: torn tail logged");
            }
            // The recovered log keeps serving: the next record takes the next offset.
            let conn = broker.connect().await;
            let ack = conn.send("tail", 0, vec![Message::new("tail", b"after".to_vec())]).await.expect("send");
            assert_eq!(ack[0].queue_offset, expected as u64, "{backend}/{what}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_consume_queues_are_rebuilt_from_the_log() {
    for backend in BACKENDS {
        for clean_stop in [true, false] {
            let dir = tempfile::tempdir().expect("tempdir");
            let env = sync_env(dir.path(), backend);
            let mut broker = Brookd::start(&env);
            let conn = broker.connect().await;
            conn.create_topic("a", 3).await.expect("create");
            conn.create_topic("b", 1).await.expect("create");
            for i in 0..90u32 {
                let (topic, queue) = if i % 4 == 3 { ("b", 0) } else { ("a", i % 3) };
                let msg =
                    Message::new(topic, format!("{topic}{i}-{}", "z".repeat(500))).with_tags(format!("tag{}", i % 2));
                conn.send(topic, queue, vec![msg]).await.expect("send");
            }
            let before_a = summary(&read_all(&broker, "a").await);
            let before_b = summary(&read_all(&broker, "b").await);
            // The broker's own metadata records (topic changes) are in the
            // log too.
            let meta = conn.pull(brook_proto::system::META_TOPIC, 0, 0, 1000, 0, None, 0).await.expect("meta");
            let records = 90 + meta.messages.len();
            if clean_stop {
                assert!(broker.terminate().success());
            } else {
                broker.kill9();
            }
            std::fs::remove_dir_all(dir.path().join("consumequeue")).expect("delete consume queues");
            let broker = Brookd::start(&env);
            assert_eq!(summary(&read_all(&broker, "a").await), before_a, "{backend} clean={clean_stop}");
            assert_eq!(summary(&read_all(&broker, "b").await), before_b, "{backend} clean={clean_stop}");
            let rec = broker.log_entry("store recovered").expect("logged");
            assert_eq!(rec["replayed"], records, "{backend} clean={clean_stop}: rebuilt from the start of the log");
            let conn = broker.connect().await;
            let filtered = conn.pull("a", 0, 0, 100, 0, Some("tag0"), 0).await.expect("pull");
            assert!(!filtered.messages.is_empty(), "tag hashes were rebuilt too");
            assert!(filtered.messages.iter().all(|m| m.message.tags.as_deref() == Some("tag0")));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_checkpoints_so_the_next_start_does_not_scan() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().expect("tempdir");
        // Async flush: the shutdown itself must flush and checkpoint.
        let mut env = base_env(dir.path(), backend);
        env.push(("BROOK_STORE__FLUSH".into(), "async".into()));
        env.push(("BROOK_STORE__FLUSH_INTERVAL_MS".into(), "3600000".into()));
        env.push(("BROOK_STORE__CHECKPOINT_INTERVAL_MS".into(), "3600000".into()));
        let mut broker = Brookd::start(&env);
        let conn = broker.connect().await;
        conn.create_topic("c", 2).await.expect("create");
        for i in 0..200u32 {
            conn.send("c", i % 2, vec![Message::new("c", format!("c{i}"))]).await.expect("send");
        }
        drop(conn);
        let status = broker.terminate();
        assert!(status.success(), "{backend}: SIGTERM exits 0, got {status:?}");
        let checkpoint: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("checkpoint")).expect("checkpoint")).expect("json");
        assert_eq!(checkpoint["clean"], true, "{backend}");
        assert!(checkpoint["log_end"].as_u64().expect("log_end") > 0);
        let broker = Brookd::start(&env);
        let rec = broker.log_entry("store recovered").expect("logged");
        assert_eq!(rec["clean"], true, "{backend}");
        assert_eq!(rec["replayed"], 0, "{backend}: no scan after a clean stop");
        let stored = read_all(&broker, "c").await;
        assert_eq!(stored[&0].len() + stored[&1].len(), 200, "{backend}");
    }
}

/// A checkpoint visits its queues in slices (1,024 at a time) with the
/// writer's work in between, and hands the tails it writes to the blocking
/// pool. Over 1,200 queues every queue must be visited and every tail
/// written before the durable point passes it: a SIGKILL then loses
/// nothing. Without a cache window young tails hold the durable point low
/// anyway; the windowed variant below is the one a skipped slice fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_checkpoints_over_more_queues_than_a_slice_loses_nothing() {
    sigkill_over_many_queues(None).await;
}

/// The same with a small cache window, so tails far behind the head are
/// written and the durable point moves up behind them. Checkpoints run
/// while the sends are in flight, so some visit a queue between a send's
/// admission and the writer's answer: the entry that answer appends must
/// still bring the queue to a later visit, or the durable point passes it
/// while it is only in memory. Visits that stop after the first slice of
/// 1,024 queues fail it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_over_many_queues_with_a_small_cache_window_loses_nothing() {
    sigkill_over_many_queues(Some(8192)).await;
}

/// The stored checkpoint's durable point and log end.
fn checkpoint_at(dir: &Path) -> (u64, u64) {
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("checkpoint")).expect("checkpoint")).expect("json");
    (checkpoint["cq_durable_offset"].as_u64().expect("durable"), checkpoint["log_end"].as_u64().expect("end"))
}

async fn sigkill_over_many_queues(window: Option<u64>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = base_env(dir.path(), "std");
    env.push(("BROOK_STORE__CHECKPOINT_INTERVAL_MS".into(), "20".into()));
    if let Some(window) = window {
        env.push(("BROOK_STORE__LOG_CACHE_BYTES".into(), window.to_string()));
    }
    let mut broker = Brookd::start(&env);
    let conn = broker.connect().await;
    let topics = ["wide-a", "wide-b"];
    for topic in topics {
        conn.create_topic(topic, 600).await.expect("create");
    }
    // Each round gives every queue an entry, once a checkpoint covers the
    // round before (the first tail writes create 1,200 files: seconds on a
    // slow disk). The kill follows the checkpoint that covers the last.
    // Every other round runs backwards: the queues sent last, whose entries
    // end near the head, are then the ones sent first the round before,
    // whose tails that round's checkpoint wrote. Their tails hold only the
    // young entry and stay in memory; a tail that also held an entry far
    // back would be written whole, and the durable point reach the end.
    const ROUNDS: usize = 4;
    let mut covered = (0, 0);
    let queues: Vec<(&str, u32)> = topics.iter().flat_map(|&t| (0..600u32).map(move |q| (t, q))).collect();
    for round in 0..ROUNDS {
        let mut sends = Vec::new();
        let order: Box<dyn Iterator<Item = &(&str, u32)>> =
            if round % 2 == 0 { Box::new(queues.iter()) } else { Box::new(queues.iter().rev()) };
        for &(topic, q) in order {
            sends.push(conn.send(topic, q, vec![Message::new(topic, format!("{topic}-{q}-{round}"))]));
        }
        let mut last = 0;
        for send in sends {
            last = last.max(send.await.expect("send")[0].msg_id.log_offset);
        }
        common::wait_for("a checkpoint past every send", Duration::from_secs(60), || {
            covered = checkpoint_at(dir.path());
            covered.1 > last
        })
        .await;
    }
    let (durable, end) = covered;
    let behind = window.map_or(u64::MAX, |w| w / 2);
    assert!(durable < end && end - durable <= behind, "durable point {durable}, log end {end}");
    broker.kill9();
    let broker = Brookd::start(&env);
    let conn = broker.connect().await;
    for topic in topics {
        for q in 0..600u32 {
            let msgs = drain_queue(&conn, topic, q, 0, ROUNDS, Duration::from_secs(5)).await;
            let bodies: Vec<String> =
                msgs.iter().map(|m| String::from_utf8_lossy(&m.message.body).to_string()).collect();
            let sent: Vec<String> = (0..ROUNDS).map(|round| format!("{topic}-{q}-{round}")).collect();
            assert_eq!(bodies, sent, "{topic}/{q}");
        }
    }
}

/// Checkpoints leave young consume-queue tails in memory and name a durable
/// point below them; a SIGKILL then must lose none of those entries: the
/// restart replays the log from that point. With a small log cache window the
/// tails far behind the head are written however young, so the durable point
/// stays within half the window of the head (what recovery re-reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_checkpoints_with_tails_in_memory_loses_nothing() {
    for window in [None, Some(8192u64)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env = base_env(dir.path(), "std");
        env.push(("BROOK_STORE__CHECKPOINT_INTERVAL_MS".into(), "50".into()));
        if let Some(window) = window {
            env.push(("BROOK_STORE__LOG_CACHE_BYTES".into(), window.to_string()));
        }
        let mut broker = Brookd::start(&env);
        let conn = broker.connect().await;
        conn.create_topic("tails", 16).await.expect("create");
        conn.create_topic("filler", 1).await.expect("create");
        let mut sent = HashSet::new();
        let mut last = 0;
        for i in 0..320u32 {
            if i == 304 {
                // A checkpoint first covers all but each queue's newest
                // entry. Filler of more than half the small window first
                // puts every entry so far far behind the head, so that
                // checkpoint writes every tail whole, however the earlier
                // checkpoints fell between the sends, and only the last
                // sixteen entries, near the head, stay in memory after it.
                // (Without the filler, an entry left just below the final
                // checkpoints' floor took its queue's newest entry with it.)
                for _ in 0..6 {
                    let acks = conn.send("filler", 0, vec![Message::new("filler", vec![b'f'; 1024])]).await;
                    last = acks.expect("filler")[0].msg_id.log_offset;
                }
                common::wait_for("a checkpoint past the first sends", Duration::from_secs(30), || {
                    dir.path().join("checkpoint").exists() && checkpoint_at(dir.path()).1 > last
                })
                .await;
            }
            let body = format!("t{i}");
            let acks = conn.send("tails", i % 16, vec![Message::new("tails", body.clone())]).await.expect("send");
            last = acks[0].msg_id.log_offset;
            sent.insert(body);
        }
        // Several checkpoints pass while the tails (far below 512 entries and
        // 10 s old) are still only in memory.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let checkpoint: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("checkpoint")).expect("checkpoint")).expect("json");
        let (durable, end) = (checkpoint["cq_durable_offset"].as_u64(), checkpoint["log_end"].as_u64());
        assert!(durable < end, "the durable point stays below unwritten tails: {checkpoint}");
        if let (Some(window), Some(durable), Some(end)) = (window, durable, end) {
            assert!(end - durable <= window / 2, "recovery re-reads at most half the window: {checkpoint}");
        }
        broker.kill9();
        let broker = Brookd::start(&env);
        let conn = broker.connect().await;
        let mut got = HashSet::new();
        for q in 0..16 {
            let msgs = drain_queue(&conn, "tails", q, 0, 20, Duration::from_secs(5)).await;
            assert_eq!(msgs.len(), 20, "queue {q}");
            for (i, m) in msgs.iter().enumerate() {
                assert_eq!(m.queue_offset, i as u64, "dense offsets");
                got.insert(String::from_utf8_lossy(&m.message.body).to_string());
            }
        }
        assert_eq!(got, sent, "window {window:?}");
    }
}
