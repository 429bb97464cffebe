//! `brookctl` against a real brookd: topics, single and piped sends, group
//! consumption with JSON output that resumes where it stopped, group
//! description, and clear failures.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::{base_env, Brookd};
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn ctl(broker: &Brookd, args: &[&str]) -> Output {
    Command::new(common::bin("brookctl")).arg("--addr").arg(&broker.addr).args(args).output().expect("run brookctl")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "brookctl failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf8")
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect()
}

#[test]
fn topics_sends_consumes_and_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&base_env(dir.path(), "std"));
    ok(ctl(&broker, &["topic", "create", "cli", "--queues", "3"]));
    assert!(ok(ctl(&broker, &["topic", "list"])).contains("cli\t3"));

    let single = json_lines(&ok(ctl(&broker, &["send", "cli", "--key", "k1", "--tags", "T", "--json", "hello"])));
    assert_eq!(single.len(), 1);
    assert_eq!(single[0]["id"].as_str().map(str::len), Some(32));
    let ordered = json_lines(&ok(ctl(&broker, &["send", "cli", "--ordered-by", "user-7", "--json", "o1"])));
    let again = json_lines(&ok(ctl(&broker, &["send", "cli", "--ordered-by", "user-7", "--json", "o2"])));
    assert_eq!(ordered[0]["queue"], again[0]["queue"], "one sharding key, one queue");

    let mut child = Command::new(common::bin("brookctl"))
        .args(["--addr", &broker.addr, "send", "cli", "--stdin", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for i in 0..100 {
            writeln!(stdin, "line-{i}").expect("write");
        }
    }
    let piped = json_lines(&ok(child.wait_with_output().expect("wait")));
    assert_eq!(piped.len(), 100, "one ack per input line");

    let described = ok(ctl(&broker, &["topic", "describe", "cli", "--json"]));
    let total: u64 = json_lines(&described)[0]["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| q["max_offset"].as_u64().expect("max"))
        .sum();
    assert_eq!(total, 103);

    let first = json_lines(&ok(ctl(
        &broker,
        &["consume", "cli", "--group", "g", "--from", "earliest", "--count", "60", "--timeout-ms", "20000", "--json"],
    )));
    assert_eq!(first.len(), 60);
    for field in
        ["id", "topic", "queue", "offset", "key", "tags", "born_ts", "store_ts", "recv_ts", "reconsume", "body"]
    {
        assert!(first.iter().all(|m| m.get(field).is_some()), "field {field} present");
    }
    let hello = first.iter().find(|m| m["body"] == "hello");
    if let Some(hello) = hello {
        assert_eq!(hello["key"], "k1");
        assert_eq!(hello["tags"], "T");
    }
    let rest = json_lines(&ok(ctl(
        &broker,
        &["consume", "cli", "--group", "g", "--count", "43", "--timeout-ms", "20000", "--json"],
    )));
    assert_eq!(rest.len(), 43, "the second run resumes where the first stopped");
    let mut bodies: Vec<String> =
        first.iter().chain(&rest).map(|m| m["body"].as_str().expect("body").to_string()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 103, "every message exactly once across the two runs");

    assert!(ok(ctl(&broker, &["group", "list"])).lines().any(|l| l == "g"));
    let described = json_lines(&ok(ctl(&broker, &["group", "describe", "g", "--json"])));
    let lag: u64 =
        described[0]["offsets"].as_array().expect("offsets").iter().map(|o| o["lag"].as_u64().expect("lag")).sum();
    assert_eq!(lag, 0);

    let missing = ctl(&broker, &["topic", "describe", "nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("TopicNotFound"));
    let bad = ctl(&broker, &["topic", "create", "bad name"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("InvalidName"));
}

#[test]
fn piped_ordered_sends_are_stored_in_input_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&base_env(dir.path(), "std"));
    ok(ctl(&broker, &["topic", "create", "ord", "--queues", "4"]));
    let mut child = Command::new(common::bin("brookctl"))
        .args(["--addr", &broker.addr, "send", "ord", "--stdin", "--ordered-by", "k1", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for i in 1..=500 {
            writeln!(stdin, "o-{i}").expect("write");
        }
    }
    let acks = json_lines(&ok(child.wait_with_output().expect("wait")));
    assert_eq!(acks.len(), 500);
    let queue = acks[0]["queue"].as_u64().expect("queue");
    let offsets: Vec<u64> = acks.iter().map(|a| a["offset"].as_u64().expect("offset")).collect();
    assert!(acks.iter().all(|a| a["queue"].as_u64() == Some(queue)), "one key, one queue");
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "acks in input order carry increasing offsets");
    let consumed = json_lines(&ok(ctl(
        &broker,
        &["consume", "ord", "--group", "g", "--from", "earliest", "--count", "500", "--json", "--timeout-ms", "20000"],
    )));
    let bodies: Vec<&str> = consumed.iter().map(|m| m["body"].as_str().expect("body")).collect();
    let input: Vec<String> = (1..=500).map(|i| format!("o-{i}")).collect();
    assert_eq!(bodies, input, "stored order is input order");
}
