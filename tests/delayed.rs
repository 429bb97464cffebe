//! Delayed delivery over a real brookd: delay levels and exact times are
//! delivered to their real topic and queue once, never early — across a
//! SIGTERM restart and a SIGKILL restart that lands between deliveries —
//! and delays past `max_delay` or unknown levels are refused.

mod common;

use brook_client::{Connection, Message, StoredMessage};
use brook_proto::ErrorCode;
use common::{base_env, Brookd};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

fn env(dir: &Path) -> Vec<(String, String)> {
    let mut env = base_env(dir, "std");
    env.push(("BROOK_DELAY_LEVELS".into(), "1s 3s 5s".into()));
    env.push(("BROOK_MAX_DELAY".into(), "1h".into()));
    // Half-second buckets: the timers below span several, so loading ahead,
    // firing across buckets and deleting fired ones all happen.
    env.push(("BROOK_STORE__TIMER_BUCKET_MS".into(), "500".into()));
    env
}

/// Fired buckets are deleted: only the progress file is left.
fn assert_buckets_cleaned(dir: &Path) {
    let left: Vec<String> = std::fs::read_dir(dir.join("timer"))
        .expect("timer dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert_eq!(left, vec!["progress".to_string()], "fired buckets deleted");
}

/// Sends the mix every restart test uses, timed so that nothing is due
/// between 1.2 s and 2.4 s after sending: the early ones are delivered
/// before the broker stops, the late ones after it restarts. Returns body →
/// the time the broker promised.
async fn send_mix(conn: &Connection) -> BTreeMap<String, i64> {
    conn.create_topic("later", 2).await.expect("create");
    let mut due = BTreeMap::new();
    let send = |queue: u32, body: String, msg: Message| {
        let conn = conn.clone();
        async move {
            let ack = conn.send("later", queue, vec![msg]).await.expect("send");
            (body, ack[0].deliver_at.expect("a delayed send says when"))
        }
    };
    let now = brook::clock::now_ms();
    for i in 0..6u32 {
        let early = format!("level1-{i}");
        let (b, at) = send(i % 2, early.clone(), Message::new("later", early).with_delay_level(1)).await;
        due.insert(b, at);
        let late = format!("level2-{i}");
        let (b, at) = send(i % 2, late.clone(), Message::new("later", late).with_delay_level(2)).await;
        due.insert(b, at);
        let ms = format!("ms-{i}");
        let (b, at) = send(i % 2, ms.clone(), Message::new("later", ms).with_delay_ms(400 + 100 * u64::from(i))).await;
        due.insert(b, at);
        let at_body = format!("at-{i}");
        let msg = Message::new("later", at_body.clone()).with_deliver_at(now + 2_800 + 100 * i64::from(i));
        let (b, at) = send(i % 2, at_body, msg).await;
        due.insert(b, at);
    }
    due
}

/// Everything in the real topic, waiting until `count` arrived and then a
/// little longer so a duplicate would show.
async fn collect(conn: &Connection, count: usize) -> Vec<StoredMessage> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    let mut offsets = [0u64; 2];
    let mut settle: Option<Instant> = None;
    while Instant::now() < deadline {
        for (queue, offset) in offsets.iter_mut().enumerate() {
            let page = conn.pull("later", queue as u32, *offset, 256, 0, None, 100).await.expect("pull");
            *offset = page.next_offset;
            out.extend(page.messages);
        }
        if out.len() >= count {
            let at = *settle.get_or_insert_with(Instant::now);
            if at.elapsed() > Duration::from_millis(1_500) {
                break;
            }
        }
    }
    out
}

fn check_once_and_on_time(got: &[StoredMessage], due: &BTreeMap<String, i64>) {
    let mut seen = BTreeMap::new();
    for m in got {
        let body = String::from_utf8(m.message.body.clone()).expect("utf8");
        let at = *due.get(&body).unwrap_or_else(|| panic!("unexpected message {body}"));
        assert!(m.store_ts >= at, "{body} delivered at {} before its time {at}", m.store_ts);
        assert_eq!(m.message.topic, "later");
        let props: Vec<&String> = m.message.properties.keys().collect();
        assert_eq!(props, vec![brook_proto::system::PROP_ORIGIN_LOG_OFFSET], "only the origin is kept");
        *seen.entry(body).or_insert(0) += 1;
    }
    for body in due.keys() {
        assert_eq!(seen.get(body), Some(&1), "{body} delivered once");
    }
}

async fn restart_mid_way(kill: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Brookd::start(&env(dir.path()));
    let conn = broker.connect().await;
    let due = send_mix(&conn).await;
    let sent = Instant::now();
    // The first wave (due within 1.2 s) is delivered before the stop.
    let early = due.keys().filter(|b| b.starts_with("level1") || b.starts_with("ms-")).count();
    let first = {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = 0;
        while got < early && Instant::now() < deadline {
            got = collect_now(&conn).await;
        }
        got
    };
    assert_eq!(first, early, "first wave delivered before the stop");
    assert!(sent.elapsed() < Duration::from_millis(2_300), "the stop must come before the second wave is due");
    if kill {
        broker.kill9();
    } else {
        assert!(broker.terminate().success());
    }
    let broker = Brookd::start(&env(dir.path()));
    let conn = broker.connect().await;
    let got = collect(&conn, due.len()).await;
    check_once_and_on_time(&got, &due);
    assert_buckets_cleaned(dir.path());
}

/// How many messages the real topic holds right now.
async fn collect_now(conn: &Connection) -> usize {
    let mut n = 0;
    for queue in 0..2 {
        let page = conn.pull("later", queue, 0, 1024, 0, None, 50).await.expect("pull");
        n += page.messages.len();
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_survive_a_sigterm_restart() {
    restart_mid_way(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_survive_a_sigkill_restart() {
    restart_mid_way(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_are_delivered_on_time_and_bad_ones_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    let conn = broker.connect().await;
    let due = send_mix(&conn).await;
    // Nothing is visible before its time.
    assert_eq!(collect_now(&conn).await, 0, "nothing delivered at once");
    let got = collect(&conn, due.len()).await;
    check_once_and_on_time(&got, &due);
    assert_buckets_cleaned(dir.path());
    // Timers fire close to their time (generous: the machine is shared).
    for m in &got {
        let body = String::from_utf8(m.message.body.clone()).expect("utf8");
        let late = m.store_ts - due[&body];
        assert!(late < 1_000, "{body} fired {late} ms late");
    }

    let refuse = |msg: Message| {
        let conn = conn.clone();
        async move { conn.send("later", 0, vec![msg]).await.expect_err("refused") }
    };
    let too_far = refuse(Message::new("later", "x").with_delay_ms(2 * 3_600_000)).await;
    assert_eq!(too_far.code(), Some(ErrorCode::InvalidArgument));
    assert!(too_far.to_string().contains("max_delay"), "{too_far}");
    let no_level = refuse(Message::new("later", "x").with_delay_level(4)).await;
    assert!(no_level.to_string().contains("delay level 4"), "{no_level}");
    let mixed = conn
        .send("later", 0, vec![Message::new("later", "a").with_delay_level(1), Message::new("later", "b")])
        .await
        .expect_err("a batch shares one delay");
    assert_eq!(mixed.code(), Some(ErrorCode::InvalidArgument));
    let reserved = conn
        .send(brook_proto::system::SCHEDULE_TOPIC, 0, vec![Message::new(brook_proto::system::SCHEDULE_TOPIC, "x")])
        .await
        .expect_err("system topics are the broker's");
    assert_eq!(reserved.code(), Some(ErrorCode::InvalidArgument));
    // The refusals stored nothing.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(collect_now(&conn).await, due.len());
}

#[test]
fn brookctl_sends_delayed_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(common::bin("brookctl"))
            .arg("--addr")
            .arg(&broker.addr)
            .args(args)
            .output()
            .expect("run brookctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    assert!(ctl(&["topic", "create", "cli-later", "--queues", "1"]).0);
    let at = (brook::clock::now_ms() + 700).to_string();
    let mut promised = Vec::new();
    for args in [vec!["--delay-level", "1"], vec!["--delay-ms", "300"], vec!["--deliver-at", at.as_str()]] {
        let mut full = vec!["send", "cli-later", "--json"];
        full.extend(args.iter().copied());
        full.push("later");
        let (ok, out, err) = ctl(&full);
        assert!(ok, "{err}");
        let ack: serde_json::Value = serde_json::from_str(out.trim()).expect("json ack");
        promised.push(ack["deliver_at"].as_i64().expect("deliver_at in the ack"));
    }
    let (ok, _, err) = ctl(&["send", "cli-later", "--delay-level", "9", "x"]);
    assert!(!ok && err.contains("delay level 9"), "{err}");
    let (ok, out, err) = ctl(&[
        "consume",
        "cli-later",
        "--group",
        "cli",
        "--from",
        "earliest",
        "--count",
        "3",
        "--timeout-ms",
        "15000",
        "--json",
    ]);
    assert!(ok, "{err}");
    let stored: Vec<i64> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["store_ts"].as_i64().expect("store_ts"))
        .collect();
    assert_eq!(stored.len(), 3, "{out}");
    let (mut stored, mut promised) = (stored, promised);
    stored.sort_unstable();
    promised.sort_unstable();
    for (s, p) in stored.iter().zip(&promised) {
        assert!(s >= p, "delivered at {s}, promised {p}");
    }
}
