//! The fault-injection harness of the failover tests: controller voters
//! (name servers with `--controller`) and brokers in controller mode, each
//! a real process on its own loopback address; partitions made of nftables
//! rules between those addresses; and a client-side checker that records
//! every send's outcome and judges what the cluster delivers.

use super::Brookd;
use brook_client::{ClientError, Connection, Endpoint, Message, Producer, ProducerConfig, Router};
use brook_proto::controller::{ControllerInfo, ControllerRequest, ControllerResponse};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The replica set every failover test runs.
pub const SET: &str = "fo";
/// The topic the checker writes.
pub const TOPIC: &str = "ledger";
/// Its queues (one producer task each).
pub const QUEUES: u32 = 2;
/// The client port every broker listens on (each on its own address).
pub const PORT: u16 = 10911;

/// Three controller voters.
pub struct Voters {
    procs: Vec<Option<Brookd>>,
    ips: Vec<String>,
    dirs: Vec<PathBuf>,
    peers: String,
}

impl Voters {
    /// Starts a voter on each of `ips` (name server port 9876, Raft 9880).
    pub fn start(ips: &[&str], root: &Path) -> Voters {
        let peers: Vec<String> = ips.iter().enumerate().map(|(i, ip)| format!("{}={ip}:9880", i + 1)).collect();
        let mut voters = Voters {
            procs: Vec::new(),
            ips: ips.iter().map(|s| (*s).to_string()).collect(),
            dirs: (0..ips.len()).map(|i| root.join(format!("controller-{}", i + 1))).collect(),
            peers: peers.join(","),
        };
        for i in 0..ips.len() {
            let proc = voters.spawn(i);
            voters.procs.push(Some(proc));
        }
        voters
    }

    fn spawn(&self, i: usize) -> Brookd {
        Brookd::controller(&format!("{}:9876", self.ips[i]), i as u64 + 1, &self.peers, &self.dirs[i], &[])
    }

    /// The name servers, as brokers and clients are given them.
    pub fn namesrv(&self) -> String {
        self.ips.iter().map(|ip| format!("{ip}:9876")).collect::<Vec<_>>().join(",")
    }

    /// Their addresses.
    pub fn ips(&self) -> Vec<String> {
        self.ips.clone()
    }

    /// SIGKILLs voter `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.procs[i].take() {
            p.kill9();
        }
    }

    /// Starts voter `i` again on its data dir.
    pub fn restart(&mut self, i: usize) {
        self.procs[i] = Some(self.spawn(i));
    }

    /// The controller as any live voter sees it.
    pub async fn info(&self) -> Option<ControllerInfo> {
        for (i, ip) in self.ips.iter().enumerate() {
            if self.procs[i].is_none() {
                continue;
            }
            let asked = async {
                let conn = Connection::connect(&format!("{ip}:9876")).await.ok()?;
                match conn.request(brook_proto::Request::Controller(ControllerRequest::Info)).await.ok()? {
                    brook_proto::Response::Controller(ControllerResponse::Info(info)) => Some(info),
                    _ => None,
                }
            };
            if let Ok(Some(info)) = tokio::time::timeout(Duration::from_secs(3), asked).await {
                if info.leader.is_some() {
                    return Some(info);
                }
            }
        }
        None
    }

    /// Asks the controller through the first live voter's name server.
    pub async fn ask(&self, request: ControllerRequest) -> Result<ControllerResponse, ClientError> {
        let i = self.procs.iter().position(Option::is_some).expect("a live voter");
        let conn = Connection::connect(&format!("{}:9876", self.ips[i])).await?;
        match conn.request(brook_proto::Request::Controller(request)).await? {
            brook_proto::Response::Controller(answer) => Ok(answer),
            other => Err(ClientError::Protocol(format!("unexpected {other:?}"))),
        }
    }

    /// [`Voters::ask`], asked again while the answer is that no voter leads
    /// right now (retriable: a leadership change under a loaded machine),
    /// for up to 15 s.
    pub async fn ask_led(&self, request: ControllerRequest) -> Result<ControllerResponse, ClientError> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.ask(request.clone()).await {
                Err(e)
                    if e.code() == Some(brook_proto::ErrorCode::ControllerUnavailable) && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
    }

    /// The leading voter's index, once there is one.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(leader) = self.info().await.and_then(|i| i.leader) {
                return leader as usize - 1;
            }
            assert!(Instant::now() < deadline, "no controller leader in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A broker of the replica set, in controller mode.
pub struct Member {
    /// Its address.
    pub ip: String,
    env: Vec<(String, String)>,
    /// The process, while it runs.
    pub proc: Option<Brookd>,
    /// Logs of its earlier runs.
    past: Vec<String>,
}

impl Member {
    /// A broker on `ip` with its data in `root`, not started.
    pub fn new(ip: &str, root: &Path, namesrv: &str, extra: &[(&str, &str)]) -> Member {
        Self::with_dir(ip, &root.join(format!("broker-{ip}")), namesrv, extra)
    }

    /// A broker on `ip` with its data in `dir`, not started.
    pub fn with_dir(ip: &str, dir: &Path, namesrv: &str, extra: &[(&str, &str)]) -> Member {
        let mut env: Vec<(String, String)> = vec![
            ("BROOK_LISTEN".into(), format!("{ip}:{PORT}")),
            ("BROOK_HTTP__LISTEN".into(), String::new()),
            ("BROOK_DATA_DIR".into(), dir.display().to_string()),
            ("BROOK_STORE__SEGMENT_BYTES".into(), (1u64 << 20).to_string()),
            ("BROOK_STORE__CQ_ENTRIES_PER_FILE".into(), "10000".into()),
            ("BROOK_STORE__DISK_RESERVE_BYTES".into(), (1u64 << 20).to_string()),
            ("BROOK_STORE__DISK_MAX_USED_RATIO".into(), "1.0".into()),
            ("BROOK_NAMESRV_ADDRS".into(), namesrv.into()),
            ("BROOK_REGISTER_INTERVAL_MS".into(), "10000".into()),
            ("BROOK_BROKER_NAME".into(), SET.into()),
            ("BROOK_CONTROLLER_MODE".into(), "true".into()),
            ("BROOK_REPLICATION".into(), "sync".into()),
            ("BROOK_HA_MAX_CATCHUP_LAG_MS".into(), "3000".into()),
        ];
        for (k, v) in extra {
            env.retain(|(key, _)| key != k);
            env.push(((*k).into(), (*v).into()));
        }
        Member { ip: ip.into(), env, proc: None, past: Vec::new() }
    }

    /// Its client address.
    pub fn addr(&self) -> String {
        format!("{}:{PORT}", self.ip)
    }

    /// Starts it and waits until it listens.
    pub fn start(&mut self) {
        self.proc = Some(Brookd::start(&self.env));
    }

    /// SIGKILLs it.
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill9();
            self.past.extend(p.logs());
        }
    }

    /// Its logs so far (of every start).
    pub fn logs(&self) -> Vec<String> {
        let mut logs = self.past.clone();
        logs.extend(self.proc.as_ref().map(Brookd::logs).unwrap_or_default());
        logs
    }
}

/// The members' index of the master the controller names, and its epoch.
pub async fn master(voters: &Voters, members: &[Member]) -> Option<(usize, u32)> {
    let info = voters.info().await?;
    let set = info.sets.iter().find(|s| s.broker_name == SET)?;
    let addr = set.members.get(&set.master?)?;
    members.iter().position(|m| m.addr() == *addr).map(|i| (i, set.master_epoch))
}

/// Waits until the controller names a master other than `not` (any, with
/// none) that answers as master, and returns it.
pub async fn wait_master(voters: &Voters, members: &[Member], not: Option<usize>, within: Duration) -> (usize, u32) {
    let deadline = Instant::now() + within;
    loop {
        if let Some((i, epoch)) = master(voters, members).await.filter(|(i, _)| Some(*i) != not) {
            let role = async {
                let status = Connection::connect(&members[i].addr()).await.ok()?.broker_status().await.ok()?;
                Some(status.replica.role)
            };
            if tokio::time::timeout(Duration::from_secs(2), role).await.ok().flatten().as_deref() == Some("master") {
                return (i, epoch);
            }
        }
        assert!(Instant::now() < deadline, "no new master within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the controller's in-sync set of the replica set has `n`
/// members (the master included); returns it.
pub async fn wait_in_sync(voters: &Voters, n: usize, within: Duration) -> Vec<u64> {
    let deadline = Instant::now() + within;
    loop {
        let set = voters.info().await.and_then(|i| i.sets.into_iter().find(|s| s.broker_name == SET));
        if let Some(set) = set.filter(|s| s.in_sync.len() == n) {
            return set.in_sync;
        }
        assert!(Instant::now() < deadline, "the in-sync set never had {n} members");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates the checker's topic on the master at `addr` and waits until
/// the name servers route it.
pub async fn create_topic(addr: &str, namesrv: &str) {
    let conn = Connection::connect(addr).await.expect("connect the master");
    conn.create_topic(TOPIC, QUEUES).await.expect("create the topic");
    let router = router(namesrv).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while router.route(TOPIC).await.is_err() {
        assert!(Instant::now() < deadline, "the topic never reached the name servers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How each member answers now: its role and log end (none: it does not
/// answer).
pub async fn roles(members: &[Member]) -> Vec<Option<(String, u64)>> {
    let mut out = Vec::new();
    for m in members {
        let asked = async {
            let status = Connection::connect(&m.addr()).await.ok()?.broker_status().await.ok()?;
            Some((status.replica.role, status.replica.end))
        };
        out.push(tokio::time::timeout(Duration::from_secs(2), asked).await.ok().flatten());
    }
    out
}

/// nftables rules of one test, in a table of their own; removed when
/// dropped.
pub struct Partition {
    table: String,
}

fn nft(args: &str) -> Result<(), String> {
    let out = Command::new("nft").args(args.split(' ')).output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("nft {args}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

impl Partition {
    /// Whether partitions can be made here (root, `nft`): why not.
    pub fn unavailable() -> Option<String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("not root: nftables rules need root (CI runs as root)".into());
        }
        Command::new("nft").arg("--version").output().is_err().then(|| "nft is not installed (nftables)".into())
    }

    /// A table named `name` with an output chain (loopback traffic between
    /// two addresses passes it once each way).
    pub fn new(name: &str) -> Partition {
        let table = format!("brook_{name}");
        let _ = nft(&format!("delete table inet {table}"));
        nft(&format!("add table inet {table}")).expect("nftables (install the nftables package; tests run as root)");
        let chain = format!("add chain inet {table} out {{ type filter hook output priority 0 ; policy accept ; }}");
        let out = Command::new("nft").arg(&chain).output().expect("nft");
        assert!(out.status.success(), "nft {chain}: {}", String::from_utf8_lossy(&out.stderr));
        Partition { table }
    }

    /// Drops every packet between any of `a` and any of `b`.
    pub fn cut(&self, a: &[String], b: &[String]) {
        for x in a {
            for y in b {
                nft(&format!("add rule inet {} out ip saddr {x} ip daddr {y} drop", self.table)).expect("nft rule");
                nft(&format!("add rule inet {} out ip saddr {y} ip daddr {x} drop", self.table)).expect("nft rule");
            }
        }
    }

    /// Removes every rule.
    pub fn heal(&self) {
        nft(&format!("flush chain inet {} out", self.table)).expect("nft flush");
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        let _ = nft(&format!("delete table inet {}", self.table));
    }
}

/// What happened to one send.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Acknowledged.
    Acked,
    /// Failed; the message says how.
    Failed(String),
}

/// Every send and its outcomes, by (queue, sequence); every send's body
/// is `q{queue}-{sequence}`.
#[derive(Default)]
pub struct Record {
    /// Outcomes of each attempt.
    pub sends: BTreeMap<(u32, u64), Vec<Outcome>>,
    /// Bodies sent straight to one broker (not through the route), with
    /// whether any attempt was acknowledged.
    pub direct: BTreeMap<String, bool>,
    /// When each send was acknowledged (since the load began), and where
    /// (the ack's message id names the broker).
    pub acked_at: BTreeMap<(u32, u64), (Duration, String)>,
}

/// The load: one task per queue sending in sequence through the name
/// servers, each send retried (same body) until acknowledged.
pub struct Load {
    /// What was sent.
    pub record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts producing through `namesrv`.
    pub async fn start(namesrv: &str) -> Load {
        let config = ProducerConfig { route_ttl: Duration::from_secs(1), retries: 0, ..ProducerConfig::default() };
        let names: Vec<String> = namesrv.split(',').map(str::to_string).collect();
        let producer = Arc::new(Producer::with_config(Endpoint::NameServers(names), config).await.expect("producer"));
        let record = Arc::new(Mutex::new(Record::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..QUEUES)
            .map(|queue| {
                let (producer, record, stop) = (producer.clone(), record.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut seq = 0u64;
                    let began = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let msg = Message::new(TOPIC, format!("q{queue}-{seq}").into_bytes());
                        let sent = tokio::time::timeout(Duration::from_secs(6), producer.send_to(msg, queue)).await;
                        let mut ack_id = String::new();
                        let outcome = match sent {
                            Ok(Ok(ack)) => {
                                ack_id = format!("{ack:?}");
                                Outcome::Acked
                            }
                            Ok(Err(e)) => Outcome::Failed(e.to_string()),
                            Err(_) => Outcome::Failed("no answer in 6 s".into()),
                        };
                        let acked = outcome == Outcome::Acked;
                        {
                            let mut r = record.lock().expect("record");
                            if acked {
                                r.acked_at.insert((queue, seq), (began.elapsed(), ack_id));
                            }
                            r.sends.entry((queue, seq)).or_default().push(outcome);
                        }
                        if acked {
                            seq += 1;
                        } else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                })
            })
            .collect();
        Load { record, stop, tasks }
    }

    /// Acknowledged sends so far.
    pub fn acked(&self) -> usize {
        let record = self.record.lock().expect("record");
        record.sends.values().filter(|o| o.contains(&Outcome::Acked)).count()
    }

    /// Waits until `more` further sends are acknowledged.
    pub async fn progress(&self, more: usize, within: Duration) {
        let target = self.acked() + more;
        let deadline = Instant::now() + within;
        while self.acked() < target {
            assert!(Instant::now() < deadline, "sends made no progress: {} of {target} acknowledged", self.acked());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops sending (waits for the sends in flight).
    pub async fn stop(self) -> Record {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        Arc::try_unwrap(self.record).ok().expect("record").into_inner().expect("record")
    }
}

/// Sends `count` messages straight to `addr` (a cut-off master, say),
/// recording whether each was acknowledged; bodies `iso{tag}-{n}`.
pub async fn send_direct(addr: &str, tag: &str, count: usize, record: &mut Record) {
    let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(3), Connection::connect(addr)).await else {
        return;
    };
    for n in 0..count {
        let body = format!("iso{tag}-{n}");
        let msg = Message::new(TOPIC, body.clone().into_bytes());
        let sent = tokio::time::timeout(Duration::from_secs(5), conn.send(TOPIC, 0, vec![msg])).await;
        record.direct.insert(body, matches!(sent, Ok(Ok(_))));
    }
}

/// Every message body of each queue, read from the broker at `addr`.
pub async fn read_all(addr: &str) -> Result<BTreeMap<u32, Vec<String>>, ClientError> {
    let conn = Connection::connect(addr).await?;
    let mut out = BTreeMap::new();
    for queue in 0..QUEUES {
        let mut bodies = Vec::new();
        let mut offset = 0;
        loop {
            let pulled = conn.pull(TOPIC, queue, offset, 512, 8 << 20, None, 0).await?;
            if pulled.messages.is_empty() && pulled.next_offset >= pulled.max_offset {
                break;
            }
            offset = pulled.next_offset;
            bodies.extend(pulled.messages.iter().map(|m| String::from_utf8_lossy(&m.message.body).into_owned()));
        }
        out.insert(queue, bodies);
    }
    Ok(out)
}

/// Judges what was delivered against what was sent: every acknowledged
/// send delivered; each queue in send order (a retried send may appear
/// twice, never out of order); nothing delivered that was never sent, and
/// nothing sent straight to a cut-off master without an ack.
pub fn check(record: &Record, delivered: &BTreeMap<u32, Vec<String>>) -> Result<String, String> {
    let acked: BTreeSet<(u32, u64)> =
        record.sends.iter().filter(|(_, o)| o.contains(&Outcome::Acked)).map(|(k, _)| *k).collect();
    let mut seen: BTreeSet<(u32, u64)> = BTreeSet::new();
    let mut duplicates = 0;
    for (queue, bodies) in delivered {
        let mut last: Option<u64> = None;
        for body in bodies {
            if let Some(acked) = record.direct.get(body) {
                if !acked {
                    return Err(format!("{body} was never acknowledged by its cut-off master, yet it is delivered"));
                }
                continue;
            }
            let seq: u64 = body
                .strip_prefix(&format!("q{queue}-"))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("queue {queue} delivers {body:?}, which nobody sent there"))?;
            if !record.sends.contains_key(&(*queue, seq)) {
                return Err(format!("queue {queue} delivers {body}, which was never sent"));
            }
            if !seen.insert((*queue, seq)) {
                // Sent once and acknowledged at once: an idempotent
                // producer's send is stored once. Sent again after a failed
                // attempt (its outcome unknown), it may be there twice.
                if record.sends.get(&(*queue, seq)).is_some_and(|o| o.len() == 1) {
                    return Err(format!("queue {queue} delivers {body} twice; it was sent once"));
                }
                duplicates += 1;
                continue;
            }
            if last.is_some_and(|l| seq <= l) {
                return Err(format!(
                    "queue {queue} delivers {body} after q{queue}-{}: out of order",
                    last.unwrap_or(0)
                ));
            }
            last = Some(seq);
        }
    }
    let lost: Vec<&(u32, u64)> = acked.difference(&seen).collect();
    if !lost.is_empty() {
        let tails: Vec<String> =
            delivered.iter().map(|(q, b)| format!("queue {q}: {} delivered, last {:?}", b.len(), b.last())).collect();
        let when: Vec<String> = lost
            .iter()
            .take(3)
            .chain(lost.iter().rev().take(1))
            .filter_map(|k| record.acked_at.get(k).map(|(t, id)| format!("{k:?} at {t:?}: {id}")))
            .collect();
        return Err(format!(
            "{} acknowledged sends lost, first {:?}; {}; acked {}",
            lost.len(),
            &lost[..lost.len().min(5)],
            tails.join("; "),
            when.join(" | ")
        ));
    }
    let failed = record.sends.values().flatten().filter(|o| **o != Outcome::Acked).count();
    Ok(format!(
        "{} acknowledged, all delivered in order; {failed} failed attempts; {duplicates} duplicates",
        acked.len()
    ))
}

/// A router through `namesrv` (for topic creation and waiting on routes).
pub async fn router(namesrv: &str) -> Arc<Router> {
    Router::connect(Endpoint::NameServers(namesrv.split(',').map(str::to_string).collect()), "failover-test")
        .await
        .expect("router")
}
