//! The load-test harness end to end: `brook-bench` starts its own `brookd`,
//! produces, and with `--verify` reads every acknowledged message back. Small
//! counts only; the numbers themselves live in BENCHMARKS.md, not here.

use std::process::Command;

/// Runs `brook-bench` with `args`; returns its exit status and stdout.
fn bench(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_brook-bench")).args(args).output().expect("run brook-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.code().is_some(), "brook-bench died: {}\n{}", stdout, String::from_utf8_lossy(&out.stderr));
    (out.status.success(), stdout)
}

fn field<'a>(stdout: &'a str, name: &str) -> Option<&'a str> {
    let result = stdout.lines().find(|l| l.starts_with("RESULT "))?;
    result.split(' ').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

#[test]
fn producers_sharing_connections_are_all_verified() {
    // 8 sync producers over 2 connections: requests of several producers
    // interleave on one connection, and every ack must still match its
    // message (key, queue, offset) when read back.
    let (ok, out) = bench(&[
        "produce",
        "--mode",
        "sync",
        "--producers",
        "8",
        "--connections",
        "2",
        "--messages",
        "3000",
        "--verify",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("connections=2"), "{out}");
    assert!(out.contains("verify            ok: 3000 acknowledged messages"), "{out}");
    assert_eq!(field(&out, "errors"), Some("0"), "{out}");
    assert!(field(&out, "msgs_per_s").and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0), "{out}");
}

#[test]
fn idempotent_sends_are_verified() {
    // Every send carries a producer id and sequence: each is stored once,
    // where its ack says.
    let (ok, out) = bench(&[
        "produce",
        "--mode",
        "pipelined",
        "--idempotent",
        "--producers",
        "4",
        "--messages",
        "4000",
        "--verify",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("idempotent        true"), "{out}");
    assert!(out.contains("verify            ok: 4000 acknowledged messages"), "{out}");
}

#[test]
fn batches_are_verified() {
    let (ok, out) =
        bench(&["produce", "--mode", "batch", "--batch", "16", "--producers", "2", "--messages", "4000", "--verify"]);
    assert!(ok, "{out}");
    assert!(out.contains("verify            ok: 4000 acknowledged messages"), "{out}");
    assert!(out.contains("cpu per message   broker "), "{out}");
}

#[test]
fn loopback_answers_every_request_with_real_frame_sizes() {
    // The floor under sync sends: a server process that only answers.
    let (ok, out) = bench(&["loopback", "--producers", "4", "--messages", "2000", "--size", "100"]);
    assert!(ok, "{out}");
    assert!(out.contains("messages          2000\n"), "{out}");
    assert_eq!(field(&out, "scenario"), Some("loopback"), "{out}");
    assert_eq!(field(&out, "errors"), Some("0"), "{out}");
    // A send's frame carries the body and its envelope.
    let request: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("frames            request ")?.split(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!((101..200).contains(&request), "{out}");
    assert!(out.contains("cpu per message   server "), "{out}");
}

#[test]
fn wake_times_hand_offs_on_one_cpu_and_on_two() {
    // No broker: two threads waking each other in turn. Every round trip
    // is counted, and each case says what one costs.
    let (ok, out) = bench(&["wake", "--messages", "2000"]);
    assert!(ok, "{out}");
    assert!(out.contains("messages          2000\n"), "{out}");
    assert_eq!(field(&out, "scenario"), Some("wake"), "{out}");
    assert_eq!(field(&out, "errors"), Some("0"), "{out}");
    let per_round_trip = |case: &str| -> Option<f64> {
        let line = out.lines().find_map(|l| l.strip_prefix(case))?;
        line.trim_start().split(' ').next()?.parse().ok()
    };
    assert!(per_round_trip("one CPU").is_some_and(|us| us > 0.0), "{out}");
    let two = out.lines().find_map(|l| l.strip_prefix("two CPUs")).unwrap_or_default();
    assert!(per_round_trip("two CPUs").is_some_and(|us| us > 0.0) || two.contains("one CPU allowed"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("syscall") && l.ends_with("ns (getppid)")), "{out}");
}

#[test]
fn e2e_readers_sharing_a_connection_receive_what_was_sent() {
    // Four long-polling readers over one connection (one consumer
    // instance): every queue's messages still reach its reader.
    // Paced every 250 µs: each producer sends what is due by its clock.
    let (ok, out) =
        bench(&["e2e", "--rate", "2000", "--producers", "2", "--queues", "4", "--duration", "2s", "--tick-us", "250"]);
    assert!(ok, "{out}");
    assert!(out.contains("4 over 1 connections"), "{out}");
    assert!(out.contains("2000 msgs/s, paced every 250 µs"), "{out}");
    assert_eq!(field(&out, "errors"), Some("0"), "{out}");
    let received = field(&out, "msgs_per_s").and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    assert!(received > 1000.0, "{out}");
    // The host's pauses are watched, and every received message is set
    // against them: those no pause touched are at most all of them.
    assert!(out.contains("host pauses       "), "{out}");
    let messages: u64 =
        out.lines().find_map(|l| l.strip_prefix("messages          ")?.trim().parse().ok()).unwrap_or(0);
    let untouched: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("over 5 ms         ")?.split("; the ").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or(u64::MAX);
    assert!(messages > 0 && untouched <= messages, "{out}");
}

#[test]
fn the_retention_warning_sees_the_threshold_however_it_is_set() {
    // A retention threshold no filesystem is under: the broker the bench
    // starts will delete segments while measured, and the bench must say so
    // whether the threshold comes with `--broker-env` or from the bench's
    // own environment, which the broker inherits.
    for inherited in [false, true] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_brook-bench"));
        cmd.args(["produce", "--mode", "sync", "--producers", "1", "--messages", "20"]);
        if inherited {
            cmd.env("BROOK_STORE__DISK_MAX_USED_RATIO", "0.000001");
        } else {
            cmd.args(["--broker-env", "BROOK_STORE__DISK_MAX_USED_RATIO=0.000001"]);
        }
        let out = cmd.output().expect("run brook-bench");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "inherited={inherited}: {stderr}");
        assert!(
            stderr.contains("at or above the broker's retention threshold of 0 %"),
            "inherited={inherited}: {stderr}"
        );
    }
}
