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
    _dir: Option<tempfile::TempDir>,
}

impl Broker {
    /// A broker someone else runs.
    pub fn external(addr: &str) -> Broker {
        Broker { addr: addr.to_string(), child: None, _dir: None }
    }

    /// Starts the `brookd` next to this binary with `flush` and extra env.
    pub fn start(flush: &str, extra: &[(String, String)]) -> Result<Broker, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let brookd: PathBuf = exe.with_file_name("brookd");
        let dir = tempfile::Builder::new().prefix("brook-bench-").tempdir().map_err(|e| e.to_string())?;
        let mut command = Command::new(&brookd);
        command
            .args(["--log-format", "json"])
            .env("BROOK_LISTEN", "127.0.0.1:0")
            .env("BROOK_DATA_DIR", dir.path())
            .env("BROOK_STORE__FLUSH", flush)
            .envs(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| format!("start {}: {e}", brookd.display()))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["msg"] == "listening" {
                        let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_string());
                    } else if v["level"] == "WARN" || v["level"] == "ERRO" || v["level"] == "CRIT" {
                        eprintln!("brookd: {line}");
                    }
                }
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(120)).map_err(|_| "brookd did not start".to_string())?;
        Ok(Broker { addr, child: Some(child), _dir: Some(dir) })
    }

    /// The broker's resident memory, if this bench started it.
    pub fn rss_bytes(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
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
