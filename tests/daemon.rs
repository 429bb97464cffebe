//! The daemon's interface: embedded defaults, `--print-config` with file and
//! environment layers, clear errors for bad configuration, and the
//! systemd-style readiness notification.

mod common;

use std::process::Command;

fn brookd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_brookd"))
}

#[test]
fn print_config_shows_defaults_file_and_env_layers() {
    let out = brookd().arg("--print-config").env_clear().output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    let config: toml::Value = toml::from_str(&text).expect("valid TOML");
    assert_eq!(config["listen"].as_str(), Some("127.0.0.1:10911"));
    assert_eq!(config["data_dir"].as_str(), Some("./brook-data"));
    assert_eq!(config["store"]["segment_bytes"].as_integer(), Some(1 << 30));
    assert_eq!(config["store"]["retention_hours"].as_integer(), Some(72));
    assert_eq!(config["server"]["disable_thp"].as_bool(), Some(true));

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("brook.toml");
    std::fs::write(&file, "listen = \"0.0.0.0:9999\"\n[store]\nflush = \"sync\"\nsegment_bytes = 131072\n")
        .expect("write");
    let out = brookd()
        .arg("--config")
        .arg(&file)
        .arg("--print-config")
        .env_clear()
        .env("BROOK_STORE__FLUSH", "async")
        .env("BROOK_STORE__IO_BACKEND", "std")
        .env("BROOK_DATA_DIR", "/var/lib/brook")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config: toml::Value = toml::from_str(&String::from_utf8(out.stdout).expect("utf8")).expect("toml");
    assert_eq!(config["listen"].as_str(), Some("0.0.0.0:9999"), "file over default");
    assert_eq!(config["store"]["flush"].as_str(), Some("async"), "env over file");
    assert_eq!(config["store"]["io_backend"].as_str(), Some("std"));
    assert_eq!(config["store"]["segment_bytes"].as_integer(), Some(131072));
    assert_eq!(config["data_dir"].as_str(), Some("/var/lib/brook"));
}

#[test]
fn bad_configuration_is_refused_with_a_clear_message() {
    for (key, value, needle) in [
        ("BROOK_STORE__SEGMENT_BYTES", "100", "segment_bytes"),
        ("BROOK_STORE__FLUSH", "sometimes", "flush"),
        ("BROOK_LISTEN", "not-an-address", "listen"),
        ("BROOK_STORE__DISK_MAX_USED_RATIO", "7", "disk_max_used_ratio"),
    ] {
        let out = brookd().arg("--print-config").env_clear().env(key, value).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{key}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{key}={value}: {err}");
    }
}

#[test]
fn a_second_broker_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = common::Brookd::start(&common::base_env(dir.path(), "std"));
    let out = brookd()
        .args(["--log-format", "json"])
        .env("BROOK_LISTEN", "127.0.0.1:0")
        .env("BROOK_DATA_DIR", dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("locked by another broker"));
    drop(first);
}

/// A port found taken after the connection threads started (here the
/// replication listener's) ends the start with the bind error, not a panic
/// while those threads are torn down.
#[test]
fn a_taken_port_late_in_the_start_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let out = brookd()
        .env_clear()
        .env("BROOK_LISTEN", "127.0.0.1:0")
        .env("BROOK_HTTP__LISTEN", "")
        .env("BROOK_HA_LISTEN", &taken_addr)
        .env("BROOK_DATA_DIR", dir.path())
        .env("BROOK_STORE__SEGMENT_BYTES", "1048576")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&taken_addr), "the error names the address: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn readiness_is_notified_to_systemd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind");
    socket.set_read_timeout(Some(std::time::Duration::from_secs(60))).expect("timeout");
    let mut env = common::base_env(&dir.path().join("data"), "std");
    env.push(("NOTIFY_SOCKET".into(), socket_path.display().to_string()));
    let mut broker = common::Brookd::start(&env);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("a notification");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    let status = broker.terminate();
    assert!(status.success(), "{status:?}: {}", broker.logs().join("\n"));
}

/// The `THP_enabled` line of a process's status: whether transparent huge
/// pages may back its memory (None on kernels that do not say).
fn thp_enabled(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("THP_enabled:")).map(|v| v.trim().to_string())
}

#[test]
fn transparent_huge_pages_are_off_unless_allowed() {
    // A huge page's first touch zeroes 2 MiB at once, a stall far above a
    // send's latency: brookd turns them off for itself unless
    // server.disable_thp is false, and then leaves the system's choice.
    let Some(system) = thp_enabled(std::process::id()) else {
        eprintln!("this kernel does not report THP_enabled; nothing to check");
        return;
    };
    for (setting, expected) in [(None, "0".to_string()), (Some("false"), system)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env = common::base_env(dir.path(), "std");
        if let Some(value) = setting {
            env.push(("BROOK_SERVER__DISABLE_THP".into(), value.into()));
        }
        let mut broker = common::Brookd::start(&env);
        assert_eq!(thp_enabled(broker.pid()), Some(expected), "server.disable_thp = {setting:?}");
        assert!(broker.terminate().success());
    }
}

#[tokio::test]
async fn a_stop_answers_parked_long_polls_at_once() {
    // A consumer parked on an empty queue must not hold a SIGTERM for the
    // connections' drain timeout: a stopping broker answers every parked
    // pull with what is there (nothing), and the stop finishes without
    // waiting out the pulls' long polls.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut broker = common::Brookd::start(&common::base_env(dir.path(), "std"));
    let conn = broker.connect().await;
    conn.create_topic("parked", 1).await.expect("create");
    let waiting = conn.pull("parked", 0, 0, 32, 1 << 20, None, 60_000);
    tokio::pin!(waiting);
    // One poll queues the pull; the broker reads a connection's frames in
    // order, so once a later ping is answered the pull has been read (a
    // stop then waits for it), and a moment more lets it park.
    assert!(futures::poll!(&mut waiting).is_pending());
    conn.ping().await.expect("ping");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let stopped = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || broker.terminate()).await.expect("terminate");
    let pulled = waiting.await.expect("the parked pull is answered, not cut off");
    assert!(pulled.messages.is_empty());
    assert_eq!(pulled.next_offset, 0);
    assert!(status.success(), "brookd exited with {status}");
    // Before parked pulls were answered, the stop waited out the drain
    // timeout (2 s) and then cut them off; generous for a loaded machine.
    assert!(stopped.elapsed() < std::time::Duration::from_secs(10), "stop took {:?}", stopped.elapsed());
}

/// CPU seconds the process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("comm").1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / per_second as f64
}

/// CPU seconds `pid` uses over `span`.
async fn cpu_over(pid: u32, span: std::time::Duration) -> f64 {
    let before = cpu_seconds(pid);
    tokio::time::sleep(span).await;
    cpu_seconds(pid) - before
}

#[tokio::test]
async fn the_writer_thread_polls_only_for_its_window_after_lone_answers() {
    // `server.idle_poll_us`: after a connection's sends are answered twice
    // in a row, the writer's thread keeps polling for the window, and then
    // sleeps. A long window makes both sides show in the CPU the daemon
    // uses: busy inside it, next to nothing after it.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = common::base_env(dir.path(), "std");
    env.push(("BROOK_SERVER__IDLE_POLL_US".into(), "2500000".into()));
    let mut broker = common::Brookd::start(&env);
    let conn = broker.connect().await;
    conn.create_topic("lone", 1).await.expect("create");
    let idle = cpu_over(broker.pid(), std::time::Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    for i in 0..3 {
        let msg = brook_proto::Message::new("lone", format!("m{i}"));
        conn.send("lone", 0, vec![msg]).await.expect("send");
    }
    let polling = cpu_over(broker.pid(), std::time::Duration::from_secs(1)).await;
    tokio::time::sleep(
        (started + std::time::Duration::from_secs(4)).saturating_duration_since(std::time::Instant::now()),
    )
    .await;
    let after = cpu_over(broker.pid(), std::time::Duration::from_secs(1)).await;
    // Generous for a loaded machine: a polling thread shares its core at
    // worst with a few others; a sleeping broker uses a few milliseconds.
    assert!(polling > 0.2, "the writer's thread polls inside its window: {polling:.2} s of CPU in 1 s");
    assert!(after < 0.1 && idle < 0.1, "it sleeps outside it: {idle:.2} s before, {after:.2} s after, of CPU in 1 s");
    assert!(broker.terminate().success());
}
