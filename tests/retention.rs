//! Retention with small segments and an injected clock: segments whose newest
//! record is older than `retention_hours` go, oldest first, never the active
//! one; past `disk_max_used_ratio` the oldest go regardless of age; consume
//! queues drop files that only point into deleted segments; and reads below
//! the oldest offset get "offset below retained range" with the minimum —
//! both in the store and, over the wire, from a real brookd. A real brookd
//! also tells each group what retention deleted before it was consumed
//! (and its consumer hears of the jump), and with
//! `retention_protect_unconsumed` keeps what an active group needs.

mod common;

use brook::actors::appender::Appender;
use brook::actors::housekeeper::RetainNow;
use brook::actors::queue::{Barrier, BarrierRound, Placed, Pull, Range};
use brook::broker;
use brook::clock::ManualClock;
use brook::config::{Config, FlushMode, IoBackendKind};
use brook::error::Error;
use brook::filter::TagFilter;
use brook::store::record;
use brook::store::retention::{DiskUsage, Reason};
use brook_client::{ConsumeResult, ConsumerEvent, ErrorCode, Message, PushConfig, PushConsumer, ResetTo};
use common::{base_env, Brookd, BACKENDS};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Default)]
struct FakeDisk(AtomicU64);

impl FakeDisk {
    fn set(&self, ratio: f64) {
        self.0.store(ratio.to_bits(), Ordering::SeqCst);
    }
}

impl DiskUsage for FakeDisk {
    fn used_ratio(&self, _: &Path) -> std::io::Result<f64> {
        Ok(f64::from_bits(self.0.load(Ordering::SeqCst)))
    }
}

const HOUR: i64 = 3_600_000;

fn produce(n: usize, from: usize) -> Vec<(Message, u64)> {
    (from..from + n)
        .map(|i| {
            let body = format!("r{i}-{}", "p".repeat(300));
            (Message::new("r", body.into_bytes()), record::tag_hash(None))
        })
        .collect()
}

async fn store(appender: &Appender, items: Vec<(Message, u64)>) -> Result<Vec<Placed>, Error> {
    appender.append("r", 0, items).await
}

fn cq_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("consumequeue/r/0")).map_or(0, |d| d.count())
}

#[test]
fn expired_and_disk_pressure_segments_go_oldest_first() {
    for backend in [IoBackendKind::Uring, IoBackendKind::Std] {
        actix_rt::System::new().block_on(async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
            config.store.flush = FlushMode::Sync;
            config.store.io_backend = backend;
            config.store.segment_bytes = 4096;
            config.store.cq_entries_per_file = 4;
            config.store.retention_check_interval_ms = 3_600_000;
            config.sanitize().expect("config");
            let clock = Arc::new(ManualClock::new(1_000 * HOUR));
            let disk = Arc::new(FakeDisk::default());
            disk.set(0.10);
            let opened = broker::open_store(&config).expect("open");
            let running = broker::start(opened, &config, brook::logging::discard(), clock.clone(), disk.clone())
                .await
                .expect("start");
            running.topics.create("r", 1).expect("topic");
            let queue = running.registry.queue("r", 0);
            // 40 old records (~10 segments), then 40 a hundred hours later.
            for i in 0..40 {
                store(&running.appender, produce(1, i)).await.expect("stored");
            }
            clock.advance(100 * HOUR);
            for i in 40..80 {
                store(&running.appender, produce(1, i)).await.expect("stored");
            }
            let segments_before = std::fs::read_dir(dir.path().join("commitlog")).expect("dir").count();
            // As a checkpoint would: the queue writes its in-memory tail.
            let (round, answer) = BarrierRound::start();
            queue.do_send(Barrier::force(round));
            answer.await.expect("answered").expect("barrier");
            let cq_before = cq_files(dir.path());
            let deleted = running.housekeeper.send(RetainNow).await.expect("mailbox").expect("retain");
            assert!(!deleted.segments.is_empty(), "{backend:?}: old segments expired");
            assert!(deleted.segments.iter().all(|(_, r)| *r == Reason::Expired));
            // Oldest first, contiguous from the start.
            let bases: Vec<u64> = deleted.segments.iter().map(|(b, _)| *b).collect();
            assert_eq!(bases, (0..bases.len() as u64).map(|i| i * 4096).collect::<Vec<_>>());
            // Consume queue: the minimum moved past every deleted record, and
            // every remaining record is readable.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (min, max) = queue.send(Range).await.expect("mailbox").expect("range");
            assert_eq!(max, 80);
            assert!(min > 0 && min <= 40, "{backend:?}: min {min}");
            assert!(
                cq_files(dir.path()) < cq_before,
                "consume-queue files that only pointed into deleted segments went"
            );
            let pull = |offset| Pull {
                offset,
                max_messages: 200,
                max_bytes: 1 << 22,
                filter: Arc::new(TagFilter::All),
                long_poll: Duration::ZERO,
                cut_short: None,
            };
            let below = queue.send(pull(0)).await.expect("mailbox");
            assert!(matches!(below, Err(Error::BelowRetained { min: m, .. }) if m == min), "{below:?}");
            let rest = queue.send(pull(min)).await.expect("mailbox").expect("pull");
            assert_eq!(rest.entries.len() as u64, 80 - min);
            for (_, entry) in &rest.entries {
                running.reader.read(entry.log_offset, entry.size).expect("retained records read back");
            }
            // Nothing newer than the retention time was touched.
            let kept = std::fs::read_dir(dir.path().join("commitlog")).expect("dir").count();
            assert_eq!(kept, segments_before - deleted.segments.len());
            // Disk pressure: everything but the active segment goes.
            disk.set(0.90);
            let pressed = running.housekeeper.send(RetainNow).await.expect("mailbox").expect("retain");
            assert!(pressed.segments.iter().all(|(_, r)| *r == Reason::DiskFull));
            let left = running.reader.segments().bases();
            assert_eq!(left.len(), 1, "only the active segment is left");
            let accepted =
                store(&running.appender, produce(1, 80)).await.expect("the active segment still takes writes");
            assert_eq!(accepted[0].queue_offset, 80);
            broker::shutdown(&running).await.expect("shutdown");
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_broker_under_disk_pressure_answers_below_retained_range() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env = base_env(dir.path(), backend);
        // Any real disk is "too full" at this ratio: the broker keeps only
        // its active segment.
        env.push(("BROOK_STORE__DISK_MAX_USED_RATIO".into(), "0.000001".into()));
        env.push(("BROOK_STORE__RETENTION_CHECK_INTERVAL_MS".into(), "100".into()));
        let broker = Brookd::start(&env);
        let conn = broker.connect().await;
        conn.create_topic("r", 1).await.expect("create");
        for i in 0..400 {
            conn.send("r", 0, vec![Message::new("r", format!("{i}-{}", "q".repeat(500)))]).await.expect("send");
        }
        let mut min = 0;
        for _ in 0..100 {
            min = conn.describe_topic("r").await.expect("describe").queue_stats[0].min_offset;
            if min > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(min > 0, "{backend}: retention ran");
        let err = conn.pull("r", 0, 0, 10, 0, None, 0).await.expect_err("below range");
        let wire = match err {
            brook_client::ClientError::Broker(w) => w,
            other => panic!("{other:?}"),
        };
        assert_eq!(wire.code, ErrorCode::OffsetBelowRetained);
        assert!(wire.detail.is_some_and(|m| m >= min), "{wire:?}");
        assert!(broker
            .log_entry("disk above disk_max_used_ratio: deleted the oldest segment regardless of age")
            .is_some());
        let tail = conn.pull("r", 0, 399, 10, 0, None, 0).await.expect("the newest record is kept");
        assert_eq!(tail.messages.len(), 1);
    }
}

/// A broker whose disk is always "too full" (any real disk is past this
/// ratio): retention keeps only the active segment.
fn pressed_env(dir: &Path) -> Vec<(String, String)> {
    let mut env = base_env(dir, "std");
    env.push(("BROOK_STORE__DISK_MAX_USED_RATIO".into(), "0.000001".into()));
    env.push(("BROOK_STORE__RETENTION_CHECK_INTERVAL_MS".into(), "100".into()));
    env
}

async fn send_many(conn: &brook_client::Connection, topic: &str, queues: u32, per_queue: usize) {
    for i in 0..per_queue {
        for queue in 0..queues {
            let body = format!("{queue}-{i}-{}", "q".repeat(500));
            conn.send(topic, queue, vec![Message::new(topic, body)]).await.expect("send");
        }
    }
}

/// Each queue's first offset once retention has settled (two looks in a
/// row agree, and it has moved).
async fn settled_mins(conn: &brook_client::Connection, topic: &str) -> Vec<u64> {
    let mut last = Vec::new();
    for _ in 0..100 {
        let mins: Vec<u64> =
            conn.describe_topic(topic).await.expect("describe").queue_stats.iter().map(|q| q.min_offset).collect();
        if mins == last && mins.iter().all(|m| *m > 0) {
            return mins;
        }
        last = mins;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("retention did not settle: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_tells_a_lagging_group_exactly_what_it_lost_and_its_consumer_hears_of_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&pressed_env(dir.path()));
    let conn = broker.connect().await;
    conn.create_topic("lag", 2).await.expect("create");
    conn.reset_offsets("slow", "lag", ResetTo::Offsets(vec![(0, 0), (1, 0)])).await.expect("slow starts at 0");
    send_many(&conn, "lag", 2, 300).await;
    conn.reset_offsets("current", "lag", ResetTo::Latest).await.expect("current is at the end");
    let mins = settled_mins(&conn, "lag").await;
    let lost: u64 = mins.iter().sum();
    // The group's count follows the queues' minimum within a pass.
    let mut info = conn.describe_group("slow").await.expect("describe");
    for _ in 0..50 {
        if info.skipped_by_retention == lost {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        info = conn.describe_group("slow").await.expect("describe");
    }
    assert_eq!(info.skipped_by_retention, lost, "exactly the messages below each queue's first offset, once");
    for row in &info.offsets {
        assert_eq!(row.skipped_by_retention, mins[row.queue as usize], "queue {}", row.queue);
    }
    assert!(info.skipped_since_ms.is_some());
    let current = conn.describe_group("current").await.expect("describe");
    assert_eq!((current.skipped_by_retention, current.skipped_since_ms), (0, None), "a group at the end lost nothing");
    let warned = broker.log_entry("retention deleted messages the group had not consumed").expect("warned");
    assert_eq!(warned["group"], "slow");
    let out = std::process::Command::new(common::bin("brookctl"))
        .args(["--addr", &broker.addr, "group", "describe", "slow"])
        .output()
        .expect("brookctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("skipped by retention: {lost} since ")), "{text}");

    // Its consumer is told where it jumped, not left to find out.
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let got = Arc::new(AtomicU64::new(0));
    let config = {
        let events = events.clone();
        PushConfig::new("slow").subscribe("lag", None).on_event(move |e| events.lock().expect("events").push(e.clone()))
    };
    let counter = got.clone();
    let consumer = PushConsumer::start(&broker.addr, config, move |_m: brook_client::StoredMessage| {
        counter.fetch_add(1, Ordering::SeqCst);
        async { ConsumeResult::Success }
    })
    .await
    .expect("consumer");
    common::wait_for("the rest consumed", Duration::from_secs(30), || got.load(Ordering::SeqCst) == 600 - lost).await;
    let mut skipped: Vec<(u32, u64, u64)> = events
        .lock()
        .expect("events")
        .iter()
        .map(|e| match e {
            ConsumerEvent::SkippedByRetention { queue, from, to, .. } => (queue.queue, *from, *to),
            other => panic!("{other:?}"),
        })
        .collect();
    skipped.sort_unstable();
    assert_eq!(skipped, vec![(0, 0, mins[0]), (1, 0, mins[1])]);
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_retention_keeps_what_an_active_group_needs_until_it_leaves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = pressed_env(dir.path());
    env.push(("BROOK_STORE__RETENTION_PROTECT_UNCONSUMED".into(), "true".into()));
    env.push(("BROOK_STORE__DISK_HARD_MAX_USED_RATIO".into(), "1.0".into()));
    let broker = Brookd::start(&env);
    let conn = broker.connect().await;
    conn.create_topic("kept", 1).await.expect("create");
    conn.reset_offsets("busy", "kept", ResetTo::Offsets(vec![(0, 0)])).await.expect("busy starts at 0");
    // A member whose listener never finishes its first message: the group
    // is active and its offset stays at 0.
    let consumer = PushConsumer::start(
        &broker.addr,
        PushConfig::new("busy").subscribe("kept", None),
        |_m: brook_client::StoredMessage| std::future::pending::<ConsumeResult>(),
    )
    .await
    .expect("consumer");
    send_many(&conn, "kept", 1, 400).await;
    let holding = "disk above disk_max_used_ratio, but retention keeps segments active groups have not consumed \
                   (retention_protect_unconsumed) until disk_hard_max_used_ratio";
    common::wait_for("retention to hold back", Duration::from_secs(20), || broker.log_entry(holding).is_some()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let topic = conn.describe_topic("kept").await.expect("describe");
    assert_eq!(topic.queue_stats[0].min_offset, 0, "nothing the active group needs was deleted");
    let lines = broker.logs().iter().filter(|l| l.contains("retention keeps segments active groups")).count();
    assert_eq!(lines, 1, "holding back is said once, not every pass");

    // Once it leaves, the group is no longer active: retention goes on.
    consumer.shutdown().await;
    let mins = settled_mins(&conn, "kept").await;
    assert!(broker.log_entry("retention no longer holds segments back for active groups").is_some());
    let info = conn.describe_group("busy").await.expect("describe");
    assert_eq!(info.skipped_by_retention, mins[0]);
}
