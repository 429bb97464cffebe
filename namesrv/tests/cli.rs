//! The name server's command line: bad input gets a clear error and a
//! non-zero exit, before anything is bound or written. (Its serving is
//! tested with real processes in the broker's cluster, replication and
//! failover tests; this file also makes `cargo test --workspace` build the
//! binary those tests start.)

use std::process::{Command, Output};

fn namesrv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_brook-namesrv"))
        .args(args)
        .env_remove("BROOK_NAMESRV_LISTEN")
        .output()
        .expect("run brook-namesrv")
}

fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn an_unknown_log_level_is_refused() {
    let out = namesrv(&["--listen", "127.0.0.1:0", "--log-level", "loud"]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(said(&out).contains("unknown log level \"loud\""), "{}", said(&out));
}

#[test]
fn a_controller_id_not_among_its_peers_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("raft");
    let out = namesrv(&[
        "--listen",
        "127.0.0.1:0",
        "--controller",
        "--controller-id",
        "4",
        "--controller-peers",
        "1=127.0.0.1:1,2=127.0.0.1:2",
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", said(&out));
    assert!(said(&out).contains("--controller-id 4 is not one of --controller-peers"), "{}", said(&out));
    assert!(!data.exists(), "nothing written for a refused start");
}

#[test]
fn an_address_it_cannot_listen_on_is_an_error() {
    let out = namesrv(&["--listen", "not-an-address"]);
    assert_eq!(out.status.code(), Some(1), "{}", said(&out));
    assert!(said(&out).contains("cannot listen"), "{}", said(&out));
}
