//! Shared helpers for integration tests: a real `brookd` child process on a
//! temporary data dir, bound to 127.0.0.1:0, with its JSON logs captured,
//! and the workspace's binaries (`brookctl` lives in its own crate). The
//! tools' crates include this file by path.

#![allow(dead_code, reason = "each test binary uses some of these helpers")]

pub mod failover;
pub mod http;
pub mod raw;
pub mod small_fs;

use brook_client::Connection;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Both writer backends; every storage test runs against each.
pub const BACKENDS: [&str; 2] = ["uring", "std"];

/// A running `brookd` (or `brook-namesrv`).
pub struct Brookd {
    child: Option<Child>,
    /// Address it listens on.
    pub addr: String,
    /// Where its HTTP listener is (metrics, health), if it logged one.
    pub http_addr: Option<String>,
    /// Its data dir.
    pub data_dir: PathBuf,
    logs: Arc<Mutex<Vec<String>>>,
}

/// The workspace binary `name` (`brookd`, `brookctl`, `brook-bench`): the
/// one Cargo built for this test, else the one beside this test's
/// executable (`target/<profile>/deps/<test>` → `target/<profile>/<name>`),
/// which `cargo test --workspace` builds before any test runs.
pub fn bin(name: &str) -> PathBuf {
    if name == "brookd" {
        if let Some(path) = option_env!("CARGO_BIN_EXE_brookd") {
            return PathBuf::from(path);
        }
    }
    let exe = std::env::current_exe().expect("test executable");
    let path = exe.parent().and_then(Path::parent).expect("target dir").join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo test --workspace`, which builds every binary of the workspace",
        path.display()
    );
    path
}

/// The environment a test broker runs with: small segments so tests roll
/// them, plus whatever the test adds.
pub fn base_env(data_dir: &Path, backend: &str) -> Vec<(String, String)> {
    vec![
        ("BROOK_LISTEN".into(), "127.0.0.1:0".into()),
        ("BROOK_HTTP__LISTEN".into(), "127.0.0.1:0".into()),
        ("BROOK_DATA_DIR".into(), data_dir.display().to_string()),
        ("BROOK_STORE__IO_BACKEND".into(), backend.into()),
        ("BROOK_STORE__SEGMENT_BYTES".into(), "65536".into()),
        ("BROOK_STORE__CQ_ENTRIES_PER_FILE".into(), "1000".into()),
        // Test brokers come and go by the hundred: a small space reserve.
        ("BROOK_STORE__DISK_RESERVE_BYTES".into(), (1u64 << 20).to_string()),
        // Retention by disk ratio follows the host's disk, not the test:
        // off unless a test asks for it.
        ("BROOK_STORE__DISK_MAX_USED_RATIO".into(), "1.0".into()),
    ]
}

/// A group's committed offsets on `topic`, by queue (none for a group the
/// broker does not know).
pub async fn committed(conn: &Connection, group: &str, topic: &str) -> Vec<(u32, u64)> {
    match conn.request(brook_proto::Request::DescribeGroup { group: group.into() }).await {
        Ok(brook_proto::Response::Group(info)) => {
            info.offsets.into_iter().filter(|o| o.topic == topic).map(|o| (o.queue, o.committed)).collect()
        }
        Err(brook_client::ClientError::Broker(e)) if e.code == brook_proto::ErrorCode::GroupNotFound => Vec::new(),
        other => panic!("unexpected {other:?}"),
    }
}

/// Pins `env`'s client listener to `addr`, where a restart must come back,
/// and its replication listener to an ephemeral port on the same address:
/// by default that takes the client port + 1, which the local end of some
/// connection may hold by the time of the restart.
pub fn pin_listen(env: &mut Vec<(String, String)>, addr: &str) {
    let ip = addr.rsplit_once(':').map_or(addr, |(ip, _)| ip);
    env.retain(|(k, _)| k != "BROOK_LISTEN" && k != "BROOK_HA_LISTEN");
    env.push(("BROOK_LISTEN".into(), addr.into()));
    env.push(("BROOK_HA_LISTEN".into(), format!("{ip}:0")));
}

/// [`base_env`] on the std backend with a tiny key index (64 slots, 50
/// entries per file), so tests roll index files.
pub fn small_index_env(data_dir: &Path) -> Vec<(String, String)> {
    let mut env = base_env(data_dir, "std");
    env.push(("BROOK_STORE__INDEX_SLOTS".into(), "64".into()));
    env.push(("BROOK_STORE__INDEX_ENTRIES".into(), "50".into()));
    env
}

impl Brookd {
    /// Starts `brookd` with `env` and waits until it logs its address.
    pub fn start(env: &[(String, String)]) -> Brookd {
        let data_dir =
            env.iter().find(|(k, _)| k == "BROOK_DATA_DIR").map(|(_, v)| PathBuf::from(v)).expect("BROOK_DATA_DIR");
        Self::spawn("brookd", &[], env, data_dir)
    }

    /// Starts `brookd` with `env` (listening on a fixed address) and waits
    /// until it logs `msg` instead of its address: for a start that may
    /// never reach listening (one that restarts itself, or stalls).
    pub fn start_until(env: &[(String, String)], msg: &str) -> Brookd {
        let data_dir =
            env.iter().find(|(k, _)| k == "BROOK_DATA_DIR").map(|(_, v)| PathBuf::from(v)).expect("BROOK_DATA_DIR");
        Self::spawn_until("brookd", &[], env, data_dir, msg)
    }

    /// Starts `brook-namesrv` on `listen` (port 0: any) and waits until it
    /// logs its address. It keeps no disk state.
    pub fn namesrv(listen: &str) -> Brookd {
        Self::spawn("brook-namesrv", &["--listen", listen], &[], PathBuf::new())
    }

    /// Starts `brook-namesrv` on `listen` running controller voter `id` of
    /// `peers`, its Raft state in `dir`, with `env`.
    pub fn controller(listen: &str, id: u64, peers: &str, dir: &Path, env: &[(String, String)]) -> Brookd {
        let id = id.to_string();
        let dir_arg = dir.display().to_string();
        let args = [
            "--listen",
            listen,
            "--controller",
            "--controller-id",
            &id,
            "--controller-peers",
            peers,
            "--data-dir",
            &dir_arg,
        ];
        Self::spawn("brook-namesrv", &args, env, dir.to_path_buf())
    }

    /// Starts workspace binary `name` with JSON logs and waits until it
    /// logs the address it listens on.
    fn spawn(name: &str, args: &[&str], env: &[(String, String)], data_dir: PathBuf) -> Brookd {
        Self::spawn_until(name, args, env, data_dir, "listening")
    }

    /// [`Brookd::spawn`], waiting for log line `msg` (its `addr`, or the
    /// configured listen address, is the broker's address).
    fn spawn_until(name: &str, args: &[&str], env: &[(String, String)], data_dir: PathBuf, msg: &str) -> Brookd {
        let mut command = Command::new(bin(name));
        command.args(args);
        command.arg("--log-format").arg("json").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn brookd");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        {
            let logs = logs.clone();
            let wanted = msg.to_string();
            let listen = env.iter().find(|(k, _)| k == "BROOK_LISTEN").map(|(_, v)| v.clone()).unwrap_or_default();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                        if v["msg"] == wanted.as_str() {
                            let _ = addr_tx.send(v["addr"].as_str().unwrap_or(&listen).to_string());
                        }
                    }
                    logs.lock().expect("logs").push(line);
                }
            });
        }
        let addr = match addr_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("{name} did not start; logs:\n{}", logs.lock().expect("logs").join("\n"));
            }
        };
        let http_addr = logs
            .lock()
            .expect("logs")
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["msg"] == "http listening")
            .and_then(|v| v["addr"].as_str().map(str::to_string));
        Brookd { child: Some(child), addr, http_addr, data_dir, logs }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// The first log line with this `msg`, parsed.
    pub fn log_entry(&self, msg: &str) -> Option<serde_json::Value> {
        self.logs().iter().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).find(|v| v["msg"] == msg)
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("brookd ignored SIGTERM; logs:\n{}", self.logs().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Connects a client.
    pub async fn connect(&self) -> Connection {
        Connection::connect(&self.addr).await.expect("connect")
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sends a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

impl Drop for Brookd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Pulls every message of `topic`/`queue` from `from` until `count` are
/// seen or `timeout` passes.
pub async fn drain_queue(
    conn: &Connection,
    topic: &str,
    queue: u32,
    from: u64,
    count: usize,
    timeout: Duration,
) -> Vec<brook_client::StoredMessage> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut offset = from;
    while out.len() < count && Instant::now() < deadline {
        let result = conn.pull(topic, queue, offset, 256, 0, None, 200).await.expect("pull");
        offset = result.next_offset;
        out.extend(result.messages);
    }
    out
}

/// Polls `done` every 20 ms until it holds; fails the test naming `what`
/// after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
