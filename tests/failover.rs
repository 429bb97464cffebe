//! Failover under faults, over real processes: three controller voters
//! (name servers running the Raft controller) and a replica set of three
//! brokers in controller mode with `sync` replication, each on its own
//! loopback address; partitions are nftables rules between those
//! addresses. A checker records every send's outcome and judges what the
//! new master delivers: every acknowledged message, each queue in order,
//! nothing a cut-off master stored without an ack. Each scenario draws its
//! timings at random (the seed is printed).

mod common;

use brook_proto::controller::ControllerRequest;
use common::failover::{
    check, create_topic, master, read_all, roles, send_direct, wait_in_sync, wait_master, Load, Member, Partition,
    Record, Voters,
};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Duration;

/// One scenario at a time: each runs six processes on two cores, and the
/// controller's 3 s expiry should not be starved by another scenario.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `scenario` alone, on a runtime of its own, with a seeded RNG.
fn run<F, Fut>(name: &str, scenario: F)
where
    F: FnOnce(rand::rngs::StdRng, std::path::PathBuf) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let seed: u64 = std::env::var("BROOK_FAILOVER_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(7, |d| d.as_nanos() as u64)
    });
    println!("{name}: seed {seed} (BROOK_FAILOVER_SEED={seed} repeats its timings)");
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let root = dir.path().to_path_buf();
    if std::env::var_os("BROOK_FAILOVER_KEEP").is_some() {
        println!("data kept in {}", dir.keep().display());
    }
    runtime.block_on(scenario(rand::rngs::StdRng::seed_from_u64(seed), root));
}

/// Voters on 127.1.`net`.1–3, members on 127.1.`net`.11–13 (the first one
/// started first: the first master).
async fn cluster(net: u8, root: &Path, extra: &[(&str, &str)]) -> (Voters, Vec<Member>) {
    cluster_with(net, root, extra, None).await
}

/// [`cluster`], the last member's data in `last_dir` when given.
async fn cluster_with(net: u8, root: &Path, extra: &[(&str, &str)], last_dir: Option<&Path>) -> (Voters, Vec<Member>) {
    let ips: Vec<String> = (1..=3).map(|i| format!("127.1.{net}.{i}")).collect();
    let voters = Voters::start(&ips.iter().map(String::as_str).collect::<Vec<_>>(), root);
    voters.leader().await;
    let namesrv = voters.namesrv();
    let mut members: Vec<Member> =
        (11..=13).map(|i| Member::new(&format!("127.1.{net}.{i}"), root, &namesrv, extra)).collect();
    if let Some(dir) = last_dir {
        members[2] = Member::with_dir(&format!("127.1.{net}.13"), dir, &namesrv, extra);
    }
    for m in &mut members {
        m.start();
    }
    let (first, _) = wait_master(&voters, &members, None, Duration::from_secs(30)).await;
    assert_eq!(first, 0, "the first broker to join is the first master");
    create_topic(&members[0].addr(), &namesrv).await;
    wait_in_sync(&voters, 3, Duration::from_secs(30)).await;
    (voters, members)
}

/// Stops the load, reads the master's queues and judges them; then the
/// same of every other live member once it holds the master's log.
async fn judge(load: Load, voters: &Voters, members: &[Member], extra: Record) {
    let mut record = load.stop().await;
    record.direct.extend(extra.direct);
    let (m, _) = wait_master(voters, members, None, Duration::from_secs(30)).await;
    let delivered = read_all(&members[m].addr()).await.expect("read the master");
    let verdict = check(&record, &delivered).unwrap_or_else(|e| {
        dump(members);
        panic!("master {}: {e}", members[m].ip)
    });
    println!("master {}: {verdict}", members[m].ip);
    let states = roles(members).await;
    let masters = states.iter().flatten().filter(|(role, _)| role == "master").count();
    assert_eq!(masters, 1, "one master per replica set: {states:?}");
    let end = states[m].as_ref().map_or(0, |(_, end)| *end);
    for (i, state) in states.iter().enumerate() {
        if i == m || state.is_none() {
            continue;
        }
        // A slave holds the master's log once it caught up.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while roles(&members[i..=i]).await[0].as_ref().is_none_or(|(_, e)| *e < end) {
            assert!(tokio::time::Instant::now() < deadline, "slave {} never caught up to {end}", members[i].ip);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let delivered = read_all(&members[i].addr()).await.expect("read a slave");
        let verdict = check(&record, &delivered).unwrap_or_else(|e| panic!("slave {}: {e}", members[i].ip));
        println!("slave {}: {verdict}", members[i].ip);
    }
}

/// After the first master and the controller leader died: a new master
/// in a new epoch takes sends; both come back, the old master as a slave
/// in sync; then the judgement.
async fn recover_and_judge(load: Load, (voters, leader): (&mut Voters, usize), members: &mut [Member]) {
    let (_, epoch) = wait_master(voters, members, Some(0), Duration::from_secs(30)).await;
    assert!(epoch >= 2, "a new epoch");
    load.progress(50, Duration::from_secs(30)).await;
    voters.restart(leader);
    members[0].start();
    wait_in_sync(voters, 3, Duration::from_secs(30)).await;
    load.progress(30, Duration::from_secs(30)).await;
    judge(load, voters, members, Record::default()).await;
}

/// What each member did, for a failure's message.
fn dump(members: &[Member]) {
    const TOLD: [&str; 11] = [
        "listening",
        "shutting down",
        "store recovered",
        "cut a torn tail off the commit log",
        "joined the controller",
        "role change: restarting",
        "replicating from the master",
        "in-sync set changed",
        "in-sync set committed",
        "in-sync change not committed",
        "this log ran past the master's: cutting it and restarting",
    ];
    for m in members {
        eprintln!("--- {}", m.ip);
        for line in m.logs() {
            if TOLD.iter().any(|t| line.contains(t)) {
                eprintln!("{line}");
            }
        }
    }
}

fn jitter(rng: &mut rand::rngs::StdRng, max_ms: u64) -> Duration {
    Duration::from_millis(rng.random_range(0..=max_ms))
}

#[test]
fn a_killed_master_is_replaced_and_killed_again_when_it_returns_as_a_slave() {
    run("kill master twice", |mut rng, root| async move {
        let (voters, mut members) = cluster(1, &root, &[]).await;
        let load = Load::start(&voters.namesrv()).await;
        load.progress(50, Duration::from_secs(30)).await;
        tokio::time::sleep(jitter(&mut rng, 1000)).await;
        members[0].kill9();
        let (new, epoch) = wait_master(&voters, &members, Some(0), Duration::from_secs(20)).await;
        assert!(epoch >= 2, "a new epoch");
        load.progress(50, Duration::from_secs(30)).await;
        // The old master returns as a slave, and dies again at once.
        members[0].start();
        assert_eq!(master(&voters, &members).await.map(|(i, _)| i), Some(new), "it is not master again");
        tokio::time::sleep(jitter(&mut rng, 1500)).await;
        members[0].kill9();
        load.progress(30, Duration::from_secs(30)).await;
        members[0].start();
        wait_in_sync(&voters, 3, Duration::from_secs(30)).await;
        load.progress(30, Duration::from_secs(30)).await;
        judge(load, &voters, &members, Record::default()).await;
    });
}

/// The #6662/#7017 cases: a cut-off master (alone, or with one slave) can
/// acknowledge nothing; the rest elect a new master; healed, the old one
/// cuts what it stored and follows.
fn partition_scenario(net: u8, with_slave: bool) {
    if let Some(why) = Partition::unavailable() {
        return eprintln!("skipped: {why}");
    }
    let name = if with_slave { "partition master+slave" } else { "partition master" };
    run(name, move |mut rng, root| async move {
        let (voters, members) = cluster(net, &root, &[]).await;
        let load = Load::start(&voters.namesrv()).await;
        load.progress(50, Duration::from_secs(30)).await;
        tokio::time::sleep(jitter(&mut rng, 1000)).await;
        let partition = Partition::new(&format!("failover{net}"));
        let cut_off: Vec<String> = members.iter().take(if with_slave { 2 } else { 1 }).map(|m| m.ip.clone()).collect();
        let mut rest = voters.ips();
        rest.extend(members.iter().skip(cut_off.len()).map(|m| m.ip.clone()));
        partition.cut(&cut_off, &rest);
        let mut direct = Record::default();
        send_direct(&members[0].addr(), "a", 3, &mut direct).await;
        let (new, _) = wait_master(&voters, &members, Some(0), Duration::from_secs(20)).await;
        assert_eq!(new, 2, "the member outside the cut takes over");
        load.progress(50, Duration::from_secs(30)).await;
        send_direct(&members[0].addr(), "b", 3, &mut direct).await;
        assert!(direct.direct.values().all(|acked| !acked), "a cut-off master acknowledged alone: {:?}", direct.direct);
        tokio::time::sleep(jitter(&mut rng, 2000)).await;
        partition.heal();
        wait_in_sync(&voters, 3, Duration::from_secs(40)).await;
        load.progress(30, Duration::from_secs(30)).await;
        drop(partition);
        judge(load, &voters, &members, direct).await;
    });
}

#[test]
fn a_master_cut_off_from_the_controller_and_its_slaves_is_fenced() {
    partition_scenario(2, false);
}

#[test]
fn a_master_cut_off_with_one_slave_is_fenced() {
    partition_scenario(3, true);
}

#[test]
fn the_controller_leader_dies_during_an_election() {
    run("leader dies mid-election", |mut rng, root| async move {
        let (mut voters, mut members) = cluster(4, &root, &[]).await;
        let load = Load::start(&voters.namesrv()).await;
        load.progress(50, Duration::from_secs(30)).await;
        members[0].kill9();
        // Around the 3 s expiry: before, during or just after the election.
        tokio::time::sleep(Duration::from_millis(2000) + jitter(&mut rng, 2000)).await;
        let leader = voters.leader().await;
        voters.kill(leader);
        recover_and_judge(load, (&mut voters, leader), &mut members).await;
    });
}

#[test]
fn the_master_and_the_controller_leader_die_together() {
    run("master and leader die together", |mut rng, root| async move {
        let (mut voters, mut members) = cluster(5, &root, &[]).await;
        let load = Load::start(&voters.namesrv()).await;
        load.progress(50, Duration::from_secs(30)).await;
        tokio::time::sleep(jitter(&mut rng, 1000)).await;
        let leader = voters.leader().await;
        members[0].kill9();
        voters.kill(leader);
        recover_and_judge(load, (&mut voters, leader), &mut members).await;
    });
}

#[test]
fn a_slave_whose_disk_fills_leaves_the_in_sync_set_and_the_master_goes_on() {
    let fs = match common::small_fs::SmallFs::mount(48) {
        Ok(fs) => fs,
        Err(why) => return eprintln!("skipped: {why}"),
    };
    run("slave disk full", move |_rng, root| async move {
        // Master and one slave are enough for each send.
        let settings = [("BROOK_MIN_INSYNC_REPLICAS", "2")];
        let (voters, members) = cluster_with(6, &root, &settings, Some(&fs.dir("slave"))).await;
        let load = Load::start(&voters.namesrv()).await;
        load.progress(50, Duration::from_secs(30)).await;
        let filler = fs.fill_up("filler");
        // Its next segment cannot be made: it falls behind, leaves the
        // in-sync set, and sends go on with the other two.
        let in_sync = wait_in_sync(&voters, 2, Duration::from_secs(60)).await;
        assert!(!in_sync.contains(&3), "the full slave left: {in_sync:?}");
        load.progress(200, Duration::from_secs(30)).await;
        std::fs::remove_file(filler).expect("free the disk");
        wait_in_sync(&voters, 3, Duration::from_secs(60)).await;
        load.progress(30, Duration::from_secs(30)).await;
        judge(load, &voters, &members, Record::default()).await;
    });
}

#[test]
fn with_one_voter_left_traffic_goes_on_and_only_failover_stops() {
    run("two voters lost", |_rng, root| async move {
        let (mut voters, mut members) = cluster(7, &root, &[]).await;
        let load = Load::start(&voters.namesrv()).await;
        load.progress(50, Duration::from_secs(30)).await;
        // One voter lost: a master killed is still replaced.
        let leader = voters.leader().await;
        voters.kill(leader);
        members[0].kill9();
        let (new, _) = wait_master(&voters, &members, Some(0), Duration::from_secs(30)).await;
        members[0].start();
        wait_in_sync(&voters, 3, Duration::from_secs(30)).await;
        load.progress(50, Duration::from_secs(30)).await;
        // Two lost: no leader, and sends go on.
        let second = voters.leader().await;
        voters.kill(second);
        load.progress(200, Duration::from_secs(30)).await;
        let elect = ControllerRequest::Elect { broker_name: common::failover::SET.into(), broker_id: None };
        let refused = voters.ask(elect).await.expect_err("one voter of three decides nothing");
        assert_eq!(refused.code(), Some(brook_proto::ErrorCode::ControllerUnavailable), "{refused}");
        assert_eq!(common::failover::roles(&members).await.iter().flatten().filter(|(r, _)| r == "master").count(), 1);
        voters.restart(leader);
        voters.restart(second);
        assert_eq!(master(&voters, &members).await.map(|(i, _)| i), Some(new), "the master stays");
        judge(load, &voters, &members, Record::default()).await;
    });
}

#[test]
fn brookctl_shows_the_controller_and_switches_a_master_on_request() {
    run("planned switch", |_rng, root| async move {
        let (voters, members) = cluster(8, &root, &[]).await;
        let load = Load::start(&voters.namesrv()).await;
        load.progress(50, Duration::from_secs(30)).await;
        let ctl = |args: &[&str]| {
            let out = std::process::Command::new(common::bin("brookctl"))
                .arg("--namesrv")
                .arg(voters.namesrv())
                .args(args)
                .output()
                .expect("brookctl");
            assert!(out.status.success(), "brookctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let listed = ctl(&["cluster", "list"]);
        assert!(listed.contains("controller: leader"), "{listed}");
        assert!(listed.lines().any(|l| l.starts_with("fo\t1\t") && l.contains("\t1,2,3\t")), "{listed}");
        let said = ctl(&["broker", "elect", "--broker", "fo", "--id", "2"]);
        assert!(said.contains("master 2"), "{said}");
        let (new, epoch) = wait_master(&voters, &members, Some(0), Duration::from_secs(20)).await;
        assert_eq!((new, epoch >= 2), (1, true));
        load.progress(100, Duration::from_secs(30)).await;
        wait_in_sync(&voters, 3, Duration::from_secs(30)).await;
        let json = ctl(&["cluster", "list", "--json"]);
        let controller: serde_json::Value = json
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v.get("controller").cloned())
            .expect("a controller line");
        assert_eq!(controller["sets"][0]["master"], 2, "{controller}");
        judge(load, &voters, &members, Record::default()).await;
    });
}

#[test]
fn bad_controller_requests_and_garbage_at_the_peer_port_change_nothing() {
    run("bad controller input", |_rng, root| async move {
        use brook_proto::controller::{BrokerBeat, ControllerResponse};
        use std::io::Write;
        let ips: Vec<String> = (1..=3).map(|i| format!("127.1.9.{i}")).collect();
        let voters = Voters::start(&ips.iter().map(String::as_str).collect::<Vec<_>>(), &root);
        let leader = voters.leader().await;
        let beat = |name: &str, addr: &str, id: Option<u64>| BrokerBeat {
            cluster: "c".into(),
            broker_name: name.into(),
            broker_id: id,
            addr: addr.into(),
            ..BrokerBeat::default()
        };
        for (request, why) in [
            (ControllerRequest::Register(beat("bad name!", "127.0.0.1:1", None)), "an invalid name"),
            (ControllerRequest::Register(beat("b", "nowhere", None)), "an address that is not host:port"),
            (ControllerRequest::Register(beat("b", "127.0.0.1:1", Some(0))), "id 0"),
            (ControllerRequest::Heartbeat(beat("b", "127.0.0.1:1", Some(7))), "a heartbeat before registering"),
            (ControllerRequest::Elect { broker_name: "nope".into(), broker_id: None }, "an unknown replica set"),
        ] {
            let refused = voters.ask_led(request).await.expect_err(why);
            assert_eq!(refused.code(), Some(brook_proto::ErrorCode::InvalidArgument), "{why}: {refused}");
        }
        // Garbage and an oversized frame at every voter's Raft port.
        for ip in &ips {
            let mut raw = std::net::TcpStream::connect(format!("{ip}:9880")).expect("peer port");
            let _ = raw.write_all(b"\x00\x00\x00\x05hello GET / HTTP/1.1\r\n\r\n");
            let mut big = std::net::TcpStream::connect(format!("{ip}:9880")).expect("peer port");
            let _ = big.write_all(&u32::MAX.to_be_bytes());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = voters.leader().await;
        println!("leader before the garbage: voter {}, after: voter {}", leader + 1, after + 1);
        match voters.ask_led(ControllerRequest::Info).await.expect("info") {
            ControllerResponse::Info(info) => assert!(info.sets.is_empty(), "nothing was registered: {:?}", info.sets),
            other => panic!("unexpected {other:?}"),
        }
        // A name server without a controller says so.
        let plain = common::Brookd::namesrv("127.1.9.9:0");
        let conn = brook_client::Connection::connect(&plain.addr).await.expect("connect");
        let refused = conn.request(brook_proto::Request::Controller(ControllerRequest::Info)).await.expect_err("none");
        assert_eq!(refused.code(), Some(brook_proto::ErrorCode::ControllerUnavailable));
    });
}
