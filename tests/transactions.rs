//! Transactional messages over a real brookd: commit delivers once with the
//! half's id, rollback never; unknown outcomes are settled by check-backs
//! (to the sender, or to another producer of its group when the sender
//! died); unanswered ones expire; and SIGKILL of brookd at each step of the
//! flow neither loses a commit nor delivers one twice.

mod common;

use brook_client::{Connection, Message, StoredMessage, TransactionProducer, TxnOutcome};
use common::{base_env, Brookd};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env(dir: &Path) -> Vec<(String, String)> {
    let mut env = base_env(dir, "std");
    env.push(("BROOK_TRANSACTION_TIMEOUT".into(), "400ms".into()));
    env.push(("BROOK_TRANSACTION_CHECK_INTERVAL".into(), "300ms".into()));
    env.push(("BROOK_TRANSACTION_CHECK_MAX".into(), "3".into()));
    env
}

fn body(m: &StoredMessage) -> String {
    String::from_utf8_lossy(&m.message.body).into()
}

/// Every message in `topic` (one queue) after waiting `settle` past the
/// moment `expect` of them have arrived (or 20 s).
async fn visible(conn: &Connection, topic: &str, expect: usize, settle: Duration) -> Vec<StoredMessage> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = Vec::new();
    let mut offset = 0;
    let mut reached: Option<Instant> = None;
    loop {
        let page = conn.pull(topic, 0, offset, 256, 0, None, 100).await.expect("pull");
        offset = page.next_offset;
        out.extend(page.messages);
        if out.len() >= expect {
            if reached.get_or_insert_with(Instant::now).elapsed() >= settle {
                return out;
            }
        } else if Instant::now() > deadline {
            return out;
        }
    }
}

fn by_body(ms: &[StoredMessage]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in ms {
        *counts.entry(body(m)).or_insert(0) += 1;
    }
    counts
}

fn outcome_of(text: &str) -> TxnOutcome {
    if text.starts_with("commit") {
        TxnOutcome::Commit
    } else if text.starts_with("rollback") {
        TxnOutcome::Rollback
    } else {
        TxnOutcome::Unknown
    }
}

/// A producer whose executor and checker decide by the body's first word:
/// the executor leaves `check-*` bodies unknown, the checker answers
/// `check-commit…` / `check-rollback…`.
async fn producer(broker: &Brookd, group: &str) -> TransactionProducer {
    TransactionProducer::new(
        &broker.addr,
        group,
        |m: &Message, _| outcome_of(&String::from_utf8_lossy(&m.body)),
        |m: &StoredMessage| outcome_of(body(m).trim_start_matches("check-")),
    )
    .await
    .expect("transaction producer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_deliver_once_rollbacks_never_and_checks_settle_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    let conn = broker.connect().await;
    conn.create_topic("pay", 1).await.expect("create");
    let p = producer(&broker, "payments").await;
    let mut ids = BTreeMap::new();
    for text in ["commit-1", "rollback-1", "check-commit-1", "check-rollback-1", "unknown-forever"] {
        let (ack, outcome) = p.send(Message::new("pay", text)).await.expect("send");
        assert_eq!(outcome, outcome_of(text));
        ids.insert(text.to_string(), ack.msg_id.to_string());
    }
    // Nothing but the commit is visible before the checks.
    let early = conn.pull("pay", 0, 0, 256, 0, None, 0).await.expect("pull").messages;
    assert!(early.iter().all(|m| body(m) == "commit-1"), "{:?}", by_body(&early));
    // Past the timeout, three checks and the expiry of the unanswered one.
    let got = visible(&conn, "pay", 2, Duration::from_millis(2_500)).await;
    let counts = by_body(&got);
    assert_eq!(counts.get("commit-1"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("check-commit-1"), Some(&1), "{counts:?}");
    assert_eq!(counts.len(), 2, "rolled back and expired ones never show: {counts:?}");
    for m in &got {
        assert_eq!(m.msg_id, ids[&body(m)], "the committed message keeps the half's id");
        assert!(
            m.message.properties.keys().all(|k| k != "TRAN_MSG" && k != "REAL_TOPIC"),
            "{:?}",
            m.message.properties
        );
    }
    let report = conn.list_transactions().await.expect("list");
    assert_eq!((report.committed, report.rolled_back, report.expired), (2, 2, 1), "{report:?}");
    assert!(report.checked >= 2 + 3, "two answered checks and three unanswered: {report:?}");
    assert!(report.pending.is_empty(), "{report:?}");
    let parked = conn.pull(brook_proto::system::TRANS_CHECK_MAX_TOPIC, 0, 0, 16, 0, None, 0).await.expect("pull");
    assert_eq!(parked.messages.iter().map(body).collect::<Vec<_>>(), vec!["unknown-forever".to_string()]);
    // A repeated outcome is accepted; a contrary one refused.
    let again = brook_proto::Request::EndTransaction {
        group: "payments".into(),
        msg_id: ids["commit-1"].clone(),
        outcome: TxnOutcome::Commit,
        from_check: false,
    };
    conn.request(again).await.expect("repeat commit");
    let contrary = brook_proto::Request::EndTransaction {
        group: "payments".into(),
        msg_id: ids["commit-1"].clone(),
        outcome: TxnOutcome::Rollback,
        from_check: false,
    };
    assert!(conn.request(contrary).await.is_err());
    assert_eq!(by_body(&visible(&conn, "pay", 2, Duration::ZERO).await).get("commit-1"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_producer_process_is_answered_for_by_another_of_its_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    let conn = broker.connect().await;
    conn.create_topic("orders", 1).await.expect("create");
    // brookctl sends the half and would answer the check itself; it dies
    // first.
    let mut child = Command::new(common::bin("brookctl"))
        .args(["--addr", &broker.addr, "send", "orders", "--txn", "check-rollback", "--producer-group", "shop"])
        .arg("check-commit-from-the-survivor")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn brookctl");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read");
    assert!(line.starts_with("half sent"), "{line}");
    child.kill().expect("SIGKILL the producer");
    let _ = child.wait();
    let pending = conn.list_transactions().await.expect("list");
    assert_eq!(pending.pending.len(), 1, "{pending:?}");
    assert_eq!(pending.pending[0].producer_group, "shop");
    // Another member of the group answers commit.
    let _survivor = producer(&broker, "shop").await;
    let got = visible(&conn, "orders", 1, Duration::from_millis(1_000)).await;
    assert_eq!(by_body(&got).get("check-commit-from-the-survivor"), Some(&1));
    assert_eq!(got.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brookctl_runs_each_flow() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&env(dir.path()));
    let conn = broker.connect().await;
    conn.create_topic("cli-txn", 1).await.expect("create");
    let ctl = |args: &[&str]| {
        let out =
            Command::new(common::bin("brookctl")).arg("--addr").arg(&broker.addr).args(args).output().expect("run");
        assert!(out.status.success(), "brookctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).expect("utf8")
    };
    for mode in ["commit", "rollback", "check-commit", "check-rollback"] {
        let out = ctl(&["send", "cli-txn", "--txn", mode, "--wait-check-ms", "10000", &format!("via-{mode}")]);
        assert!(out.contains("half sent"), "{out}");
        if mode.starts_with("check") {
            assert!(out.contains("checked id="), "{out}");
        }
    }
    let got = visible(&conn, "cli-txn", 2, Duration::from_millis(800)).await;
    let counts = by_body(&got);
    assert_eq!(counts, BTreeMap::from([("via-commit".into(), 1), ("via-check-commit".into(), 1)]));
    let listed: serde_json::Value = serde_json::from_str(ctl(&["txn", "list", "--json"]).trim()).expect("json");
    assert_eq!(listed["committed"], 2);
    assert_eq!(listed["rolled_back"], 2);
    assert_eq!(listed["pending"].as_array().map(Vec::len), Some(0));
}

/// SIGKILL of brookd with a half stored and no outcome, with a commit just
/// acknowledged, and with a rollback just acknowledged: after the restart
/// each ends as it should, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_broker_at_each_step_keeps_outcomes_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Brookd::start(&env(dir.path()));
    broker.connect().await.create_topic("ledger", 1).await.expect("create");
    {
        let p = producer(&broker, "bank").await;
        // A long timeout for the half-only one: the broker dies before any
        // check could be asked.
        p.send_with_timeout(Message::new("ledger", "check-commit-half-only"), Some(Duration::from_secs(2)))
            .await
            .expect("half");
        p.send(Message::new("ledger", "commit-acked")).await.expect("commit");
        p.send(Message::new("ledger", "rollback-acked")).await.expect("rollback");
        p.close();
    }
    broker.kill9();
    let broker = Brookd::start(&env(dir.path()));
    let conn = broker.connect().await;
    let pending = conn.list_transactions().await.expect("list");
    assert_eq!(pending.pending.len(), 1, "the half survived the crash: {pending:?}");
    assert_eq!((pending.committed, pending.rolled_back), (1, 1), "counts survive: {pending:?}");
    let _p = producer(&broker, "bank").await;
    let got = visible(&conn, "ledger", 2, Duration::from_millis(1_500)).await;
    let counts = by_body(&got);
    assert_eq!(
        counts,
        BTreeMap::from([("commit-acked".into(), 1), ("check-commit-half-only".into(), 1)]),
        "committed once each, rollback never"
    );
}

/// The narrowest windows: brookd is killed after the commit's op record
/// (copy not written) or after the copy (`done` not written). The restart
/// finds the interrupted commit and delivers it exactly once.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_inside_a_commit_delivers_once() {
    for point in ["after_commit_op", "after_commit_copy"] {
        sigkill_inside_a_commit(point).await;
    }
}

#[cfg(feature = "failpoints")]
async fn sigkill_inside_a_commit(point: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stalled = env(dir.path());
    stalled.push(("BROOK_FAILPOINT".into(), point.into()));
    let mut broker = Brookd::start(&stalled);
    let conn = broker.connect().await;
    conn.create_topic("ledger", 1).await.expect("create");
    let p = producer(&broker, "bank").await;
    let (ack, _) = p.send(Message::new("ledger", "check-unknown-then-commit")).await.expect("half");
    let end = brook_proto::Request::EndTransaction {
        group: "bank".into(),
        msg_id: ack.msg_id.to_string(),
        outcome: TxnOutcome::Commit,
        from_check: false,
    };
    let stuck = tokio::spawn({
        let conn = conn.clone();
        async move { conn.request(end).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!stuck.is_finished(), "the commit stalls at {point}");
    let before = conn.pull("ledger", 0, 0, 16, 0, None, 0).await.expect("pull").messages.len();
    assert_eq!(before, usize::from(point == "after_commit_copy"), "copy written only past the op record");
    broker.kill9();
    drop(p);
    let broker = Brookd::start(&env(dir.path()));
    let conn = broker.connect().await;
    let got = visible(&conn, "ledger", 1, Duration::from_millis(1_500)).await;
    assert_eq!(by_body(&got), BTreeMap::from([("check-unknown-then-commit".into(), 1)]), "{point}");
    let report = conn.list_transactions().await.expect("list");
    assert!(report.pending.is_empty(), "{report:?}");
    assert_eq!(report.committed, 1);
    assert!(broker.logs().iter().any(|l| l.contains("interrupted commit completed")));
}
