//! Retention with small segments and an injected clock: segments whose newest
//! record is older than `retention_hours` go, oldest first, never the active
//! one; past `disk_max_used_ratio` the oldest go regardless of age; consume
//! queues drop files that only point into deleted segments; and reads below
//! the oldest offset get "offset below retained range" with the minimum —
//! both in the store and, over the wire, from a real brookd.

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
use brook_client::{ErrorCode, Message};
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
