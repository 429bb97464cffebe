//! The broker under test: a `brookd` started on a temporary data dir (the
//! default), or one already running at `--addr`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A broker the bench talks to.
pub struct Broker {
    /// Where it listens.
    pub addr: String,
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    env: Vec<(String, String)>,
    /// A slave following it (`--slave`), on a data dir of its own.
    pub slave: Option<Slave>,
}

/// A `brookd` started as broker id 1, following a master.
pub struct Slave {
    /// Where it listens.
    pub addr: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Slave {
    fn drop(&mut self) {
        // SAFETY: signals our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// A free port on loopback (bound and let go).
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

impl Broker {
    /// A broker someone else runs.
    pub fn external(addr: &str) -> Broker {
        Broker { addr: addr.to_string(), child: None, dir: None, env: Vec::new(), slave: None }
    }

    /// Starts the `brookd` next to this binary with `flush` and extra env.
    pub fn start(flush: &str, extra: &[(String, String)]) -> Result<Broker, String> {
        let dir = tempfile::Builder::new().prefix("brook-bench-").tempdir().map_err(|e| e.to_string())?;
        let mut env = vec![
            ("BROOK_LISTEN".to_string(), "127.0.0.1:0".to_string()),
            ("BROOK_HTTP__LISTEN".to_string(), "127.0.0.1:0".to_string()),
            ("BROOK_DATA_DIR".to_string(), dir.path().display().to_string()),
            ("BROOK_STORE__FLUSH".to_string(), flush.to_string()),
        ];
        env.extend(extra.iter().cloned());
        warn_if_retention_will_run(dir.path(), &env);
        let (child, addr) = spawn(&env)?;
        Ok(Broker { addr, child: Some(child), dir: Some(dir), env, slave: None })
    }

    /// [`Broker::start`] with its replication listener on a known port, so
    /// that a slave can follow it ([`Broker::start_slave`]).
    pub fn start_master(flush: &str, extra: &[(String, String)]) -> Result<Broker, String> {
        let mut env = vec![("BROOK_HA_LISTEN".to_string(), format!("127.0.0.1:{}", free_port()?))];
        env.extend(extra.iter().cloned());
        Broker::start(flush, &env)
    }

    /// The master's replication address.
    pub fn ha_addr(&self) -> Option<String> {
        self.env.iter().rev().find(|(k, _)| k == "BROOK_HA_LISTEN").map(|(_, v)| v.clone())
    }

    /// Starts a slave (broker id 1) of this broker, with the same settings
    /// (segment size, flush) on a data dir of its own.
    pub fn start_slave(&mut self) -> Result<(), String> {
        let ha = self.ha_addr().ok_or("the broker was not started as a master")?;
        let dir = tempfile::Builder::new().prefix("brook-bench-slave-").tempdir().map_err(|e| e.to_string())?;
        let mut env: Vec<(String, String)> =
            self.env.iter().filter(|(k, _)| k != "BROOK_HA_LISTEN" && k != "BROOK_REPLICATION").cloned().collect();
        env.extend([
            ("BROOK_LISTEN".to_string(), "127.0.0.1:0".to_string()),
            ("BROOK_HTTP__LISTEN".to_string(), String::new()),
            ("BROOK_DATA_DIR".to_string(), dir.path().display().to_string()),
            ("BROOK_BROKER_ID".to_string(), "1".to_string()),
            ("BROOK_MASTER_HA_ADDR".to_string(), ha),
        ]);
        let (child, addr) = spawn(&env)?;
        self.slave = Some(Slave { addr, child, _dir: dir });
        Ok(())
    }

    /// Kills the broker with SIGKILL (and reaps it).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signals our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// Starts a broker killed with [`Broker::kill`] again on its data dir.
    pub fn restart(&mut self) -> Result<(), String> {
        if self.child.is_none() {
            let (child, addr) = spawn(&self.env)?;
            self.child = Some(child);
            self.addr = addr;
        }
        Ok(())
    }

    /// Kills the broker with SIGKILL and starts it again on the same data
    /// dir; returns how long until it was listening again.
    pub fn kill_and_restart(&mut self) -> Result<Duration, String> {
        let mut child = self.child.take().ok_or("this bench did not start the broker")?;
        // SAFETY: signals our own child.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
        }
        let _ = child.wait();
        let started = std::time::Instant::now();
        let (child, addr) = spawn(&self.env)?;
        self.child = Some(child);
        self.addr = addr;
        Ok(started.elapsed())
    }

    /// A directory on the broker's file system: its data dir, or (for a
    /// broker someone else runs) the temporary directory.
    pub fn scratch_dir(&self) -> std::path::PathBuf {
        self.dir.as_ref().map_or_else(std::env::temp_dir, |d| d.path().to_path_buf())
    }

    /// Bytes of commit log on disk (this bench's broker only).
    pub fn log_bytes(&self) -> Option<u64> {
        let dir = self.dir.as_ref()?.path().join("commitlog");
        let mut total = 0;
        for entry in std::fs::read_dir(dir).ok()? {
            total += entry.ok()?.metadata().ok()?.len();
        }
        Some(total)
    }

    /// The broker's process id, if this bench started it.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The broker's resident memory, if this bench started it.
    pub fn rss_bytes(&self) -> Option<u64> {
        let pid = self.pid()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

/// A broker on a filesystem fuller than its retention threshold deletes
/// segments while it is measured: numbers taken so are not comparable.
fn warn_if_retention_will_run(dir: &std::path::Path, env: &[(String, String)]) {
    use brook::store::retention::{DiskUsage, StatvfsUsage};
    let threshold = match effective_config(env) {
        Ok(config) => config.store.disk_max_used_ratio,
        Err(e) => {
            eprintln!("warning: cannot read the broker's configuration ({e}); retention is not checked");
            return;
        }
    };
    if let Ok(used) = StatvfsUsage.used_ratio(dir) {
        if used >= threshold {
            eprintln!(
                "warning: the filesystem of {} is {:.0} % used, at or above the broker's retention threshold of {:.0} %: it will delete segments while measured",
                dir.display(),
                used * 100.0,
                threshold * 100.0
            );
        }
    }
}

/// The configuration `brookd` will run with under `env` (on top of this
/// process's own environment, which it inherits): its `--print-config`, so
/// every way of setting a key counts, not only the names the bench knows.
fn effective_config(env: &[(String, String)]) -> Result<brook::config::Config, String> {
    let out = Command::new(brookd_path()?)
        .arg("--print-config")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    toml::from_str(&String::from_utf8_lossy(&out.stdout)).map_err(|e| e.to_string())
}

/// The `brookd` next to this binary.
fn brookd_path() -> Result<PathBuf, String> {
    Ok(std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("brookd"))
}

/// A `brook-namesrv` (the one next to this binary) this bench started.
pub struct NameServer {
    /// Where it listens.
    pub addr: String,
    child: Child,
}

impl NameServer {
    /// Starts one on `listen` (port 0: any).
    pub fn start(listen: &str) -> Result<NameServer, String> {
        let path = std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("brook-namesrv");
        let (child, addr) = spawn_program(&path, &["--listen", listen], &[])?;
        Ok(NameServer { addr, child })
    }
}

impl NameServer {
    /// Starts controller voter `id` of `peers` on `listen`, its Raft state
    /// in a temporary directory kept in `dirs`.
    pub fn start_voter(
        listen: &str,
        id: u64,
        peers: &str,
        dirs: &mut Vec<tempfile::TempDir>,
    ) -> Result<NameServer, String> {
        let dir = tempfile::Builder::new().prefix("brook-bench-controller-").tempdir().map_err(|e| e.to_string())?;
        let path = std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("brook-namesrv");
        let (id, data) = (id.to_string(), dir.path().display().to_string());
        let args = [
            "--listen",
            listen,
            "--controller",
            "--controller-id",
            &id,
            "--controller-peers",
            peers,
            "--data-dir",
            &data,
        ];
        let (child, addr) = spawn_program(&path, &args, &[])?;
        dirs.push(dir);
        Ok(NameServer { addr, child })
    }
}

impl Drop for NameServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `brookd` with `env`; returns it and its address once listening.
fn spawn(env: &[(String, String)]) -> Result<(Child, String), String> {
    spawn_program(&brookd_path()?, &[], env)
}

/// Spawns `program` with `args` and `env` and JSON logs; returns it and its
/// address once it logs that it listens.
fn spawn_program(
    program: &std::path::Path,
    args: &[&str],
    env: &[(String, String)],
) -> Result<(Child, String), String> {
    let brookd = program;
    let mut child = Command::new(brookd)
        .args(args)
        .args(["--log-format", "json"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start {}: {e}", brookd.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let name = brookd.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["msg"] == "listening" {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_string());
                } else if v["level"] == "WARN" || v["level"] == "ERRO" || v["level"] == "CRIT" {
                    eprintln!("{name}: {line}");
                }
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(120)).map_err(|_| format!("{} did not start", brookd.display()))?;
    Ok((child, addr))
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signals our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
        }
    }
}
