//! Filters on the broker over a real brookd: tag filters whose hashes
//! collide, and property filters (a malformed one refused with its
//! position).

mod common;

use brook_client::{ConsumeResult, Message, PushConfig, PushConsumer, StartFrom, StoredMessage, Subscription};
use brook_proto::ErrorCode;
use common::{small_index_env, Brookd};

fn body(m: &StoredMessage) -> String {
    String::from_utf8_lossy(&m.message.body).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_filters_recheck_strings_when_hashes_collide() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = Brookd::start(&small_index_env(dir.path()));
    let conn = broker.connect().await;
    conn.create_topic("tagged", 1).await.expect("create");
    for (i, tag) in ["TagA", "TagB", "TagA", "TagC"].iter().enumerate() {
        conn.send("tagged", 0, vec![Message::new("tagged", format!("{tag}-{i}")).with_tags(*tag)]).await.expect("send");
    }
    assert!(broker.terminate().success());
    // Forge a collision: entry 1 (TagB) gets TagA's hash in the consume
    // queue; a clean stop means the restart keeps it.
    let cq = dir.path().join("consumequeue/tagged/0/00000000000000000000");
    let mut bytes = std::fs::read(&cq).expect("cq");
    let a_hash = bytes[12..20].to_vec();
    bytes[20 + 12..20 + 20].copy_from_slice(&a_hash);
    std::fs::write(&cq, &bytes).expect("forge");
    let broker = Brookd::start(&small_index_env(dir.path()));
    let conn = broker.connect().await;
    let page = conn.pull("tagged", 0, 0, 32, 0, Some("TagA"), 0).await.expect("pull");
    let bodies: Vec<String> = page.messages.iter().map(body).collect();
    assert_eq!(bodies, vec!["TagA-0", "TagA-2"], "the colliding TagB is not delivered");
    assert_eq!(page.next_offset, 4, "the offset moves past filtered messages");
    let page = conn.pull("tagged", 0, 0, 32, 0, Some("TagB || TagC"), 0).await.expect("pull");
    assert_eq!(page.messages.iter().map(body).collect::<Vec<_>>(), vec!["TagC-3"], "hash pass skips the forged one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_filters_run_on_the_broker_and_bad_ones_are_refused_with_a_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&small_index_env(dir.path()));
    let conn = broker.connect().await;
    conn.create_topic("payments", 1).await.expect("create");
    let rows = [("eu", "150"), ("us", "500"), ("eu", "50"), ("asia", "300")];
    for (i, (region, amount)) in rows.iter().enumerate() {
        let msg =
            Message::new("payments", format!("p{i}")).with_property("region", *region).with_property("amount", *amount);
        conn.send("payments", 0, vec![msg]).await.expect("send");
    }
    conn.send("payments", 0, vec![Message::new("payments", "no-props")]).await.expect("send");
    let sql = "(region = 'eu' AND amount > 100) OR region IN ('asia')";
    let page = conn.pull_filtered("payments", 0, 0, 32, (None, Some(sql)), 0).await.expect("pull");
    assert_eq!(page.messages.iter().map(body).collect::<Vec<_>>(), vec!["p0", "p3"]);
    assert_eq!(page.next_offset, 5);
    let page = conn.pull_filtered("payments", 0, 0, 32, (None, Some("region IS NULL")), 0).await.expect("pull");
    assert_eq!(page.messages.iter().map(body).collect::<Vec<_>>(), vec!["no-props"]);

    // A push consumer subscribing with a malformed filter is refused at
    // once, with the position.
    let mut config = PushConfig::new("auditors").start_from(StartFrom::Earliest);
    config.subscriptions.push(Subscription { topic: "payments".into(), tags: None, sql: Some("amount >> 3".into()) });
    let err = PushConsumer::start(&broker.addr, config, |_m: StoredMessage| async { ConsumeResult::Success })
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument));
    assert!(err.to_string().contains("position 8"), "{err}");
    let err = conn.pull_filtered("payments", 0, 0, 32, (None, Some("region = ")), 0).await.expect_err("bad pull");
    assert!(err.to_string().contains("position 9"), "{err}");

    // A well-formed one delivers only matches through brookctl.
    let out = std::process::Command::new(common::bin("brookctl"))
        .args(["--addr", &broker.addr, "consume", "payments", "--group", "eu-only", "--from", "earliest"])
        .args(["--sql", "region = 'eu'", "--count", "2", "--timeout-ms", "10000", "--json"])
        .output()
        .expect("brookctl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bodies: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["body"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(bodies, vec!["p0", "p2"]);
}
