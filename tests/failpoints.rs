//! Fault injection (feature `failpoints`): an fdatasync that fails poisons
//! the writer. The failed group and everything after it fail; nothing is
//! retried; and a message whose write failed is never visible to consumers
//! even though its bytes reached the file (DESIGN invariant 3).

use actix::{Actor, Addr};
use brook::actors::appender::Appender;
use brook::actors::queue::{Pull, QueueActor};
use brook::actors::queue_registry::QueueRegistry;
use brook::actors::writer::{Sync as WriterSync, WriterActor, WriterConfig, WriterStats};
use brook::clock::SystemClock;
use brook::config::FlushMode;
use brook::error::Error;
use brook::filter::TagFilter;
use brook::io::fault::{FaultIo, FaultPlan};
use brook::io::{IoBackend, IoStats};
use brook::store::commitlog::{CommitLog, LogReader};
use brook::store::record;
use brook::store::segment::{segment_name, SegmentSet};
use brook::store::topics::TopicTable;
use brook::store::StorePaths;
use brook_proto::Message;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn batch(body: &str) -> Vec<(Message, u64)> {
    vec![(Message::new("f", body.as_bytes().to_vec()), record::tag_hash(None))]
}

/// A writer over a fault backend (which fails as its plan is set), and
/// queue "f"/0 feeding it.
struct Faulty {
    writer: Addr<WriterActor>,
    queue: Addr<QueueActor>,
    appender: Appender,
    plan: Arc<FaultPlan>,
    stats: Arc<IoStats>,
}

fn faulty_writer(dir: &std::path::Path, flush: FlushMode) -> Faulty {
    let paths = StorePaths::new(dir);
    paths.create_dirs().expect("dirs");
    let set = Arc::new(SegmentSet::new(paths.commitlog(), 65536));
    let plan = Arc::new(FaultPlan::default());
    let stats = Arc::new(IoStats::default());
    let backend = IoBackend::Fault(FaultIo::new(stats.clone(), plan.clone()));
    let log = CommitLog::open(set.clone(), 0, 0, backend, None, Arc::new(SystemClock)).expect("open");
    let config = WriterConfig {
        flush,
        flush_interval: Duration::from_secs(3600),
        max_batch_messages: 1,
        max_batch_bytes: 1 << 20,
        log_cache_bytes: 0,
        resume_free_bytes: 1 << 20,
    };
    let writer_stats = Arc::new(WriterStats::default());
    let writer =
        WriterActor::new(log, config, writer_stats.clone(), brook::logging::discard()).expect("writer").start();
    let topics = Arc::new(TopicTable::load(paths.topics()).expect("topics"));
    let registry = Arc::new(QueueRegistry::new(
        (writer.clone(), writer_stats),
        None,
        paths,
        100,
        set.clone(),
        brook::logging::discard(),
    ));
    let queue = registry.queue("f", 0);
    let appender = Appender::new(registry, topics, LogReader::new(set), brook::logging::discard());
    Faulty { writer, queue, appender, plan, stats }
}

#[actix_rt::test]
async fn a_failed_fdatasync_poisons_the_writer_and_hides_the_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Faulty { writer, queue, appender, plan, .. } = faulty_writer(dir.path(), FlushMode::Sync);
    // Each append is awaited: one write and one sync round each.
    plan.fail_after_syncs.store(3, Ordering::SeqCst);
    for i in 0..3 {
        let items = batch(&format!("ok{i}"));
        let stored = appender.append("f", 0, items).await.expect("stored");
        assert_eq!(stored[0].queue_offset, i);
    }
    let items = batch("doomed");
    let failed = appender.append("f", 0, items).await;
    assert!(matches!(failed, Err(Error::Poisoned(_))), "{failed:?}");
    // Poisoned for good: later appends and syncs fail without I/O.
    let seen = (plan.jobs_seen.load(Ordering::SeqCst), plan.syncs_seen.load(Ordering::SeqCst));
    let items = batch("later");
    assert!(matches!(appender.append("f", 0, items).await, Err(Error::Poisoned(_))));
    assert!(matches!(writer.send(WriterSync).await.expect("mailbox"), Err(Error::Poisoned(_))));
    let after = (plan.jobs_seen.load(Ordering::SeqCst), plan.syncs_seen.load(Ordering::SeqCst));
    assert_eq!(after, seen, "a poisoned writer never retries I/O");
    // The failed message's bytes are in the file, yet no reader sees it.
    let pull = Pull {
        offset: 0,
        max_messages: 100,
        max_bytes: 1 << 20,
        filter: Arc::new(TagFilter::All),
        long_poll: Duration::ZERO,
        cut_short: None,
    };
    let found = queue.send(pull).await.expect("mailbox").expect("pull");
    assert_eq!(found.entries.len(), 3);
    assert_eq!(found.max_offset, 3);
    let segment =
        std::fs::read(dir.path().join("commitlog").join(brook::store::segment::segment_name(0))).expect("read");
    assert!(segment.windows(6).any(|w| w == b"doomed"), "the failed write did reach the file");
}

/// Sync flush: appends that arrive while an fdatasync runs share the next
/// round (only a lone one is synced on the writer's own thread), and when a
/// round fails, every append waiting for it fails.
#[actix_rt::test]
async fn appends_arriving_together_share_rounds_and_fail_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Faulty { writer, appender, plan, .. } = faulty_writer(dir.path(), FlushMode::Sync);
    // Each group is one append (`max_batch_messages = 1`): only the rounds
    // can gather them.
    let together =
        |tag: &str| futures::future::join_all((0..8).map(|i| appender.append("f", 0, batch(&format!("{tag}{i}")))));
    // A sync request goes first, its round slowed down on the syncer's
    // thread: the appends find the syncer busy (none is lone), are written
    // meanwhile, and share the next round — however slowly this machine
    // runs them, within the delay (or share the request's own round, if the
    // syncer took it after they were written).
    plan.sync_delay_ms.store(1000, Ordering::SeqCst);
    let first = writer.send(WriterSync);
    let stored = together("ok").await;
    assert!(stored.iter().all(Result::is_ok), "{stored:?}");
    first.await.expect("mailbox").expect("synced");
    plan.sync_delay_ms.store(0, Ordering::SeqCst);
    // The appends' rounds, and the sync request's (which may have covered
    // appends too, if the syncer took it late).
    let rounds = plan.syncs_seen.load(Ordering::SeqCst);
    assert!((1..8).contains(&rounds), "{rounds} fdatasync rounds for a sync and 8 appends sent together");
    plan.fail_after_syncs.store(rounds, Ordering::SeqCst);
    let failed = together("doomed").await;
    assert!(failed.iter().all(|r| matches!(r, Err(Error::Poisoned(_)))), "{failed:?}");
}

/// Async flush: the fdatasync a checkpoint's `Sync` waits for runs beside the
/// writes, on the writer's syncer thread. When it fails, the `Sync` is
/// refused — a checkpoint never names a position the disk did not confirm —
/// and the writer is poisoned like after a failed write.
#[actix_rt::test]
async fn a_failed_background_fdatasync_refuses_the_sync_and_poisons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Faulty { writer, appender, plan, stats, .. } = faulty_writer(dir.path(), FlushMode::Async);
    plan.fail_after_syncs.store(0, Ordering::SeqCst);
    for i in 0..3 {
        let items = batch(&format!("ok{i}"));
        appender.append("f", 0, items).await.expect("async acks after the write");
    }
    assert_eq!(stats.fdatasyncs.load(Ordering::SeqCst), 0);
    let synced = writer.send(WriterSync).await.expect("mailbox");
    assert!(matches!(synced, Err(Error::Poisoned(_))), "{synced:?}");
    assert_eq!(plan.syncs_seen.load(Ordering::SeqCst), 1, "the sync ran as a round of its own");
    let items = batch("later");
    assert!(matches!(appender.append("f", 0, items).await, Err(Error::Poisoned(_))));
    assert_eq!(plan.jobs_seen.load(Ordering::SeqCst), 3, "a poisoned writer never retries I/O");
    assert_eq!(plan.syncs_seen.load(Ordering::SeqCst), 1);
}

/// A write refused for space is not a poison: its group fails with
/// `DiskFull`, the bytes that did land are cut back (the file reads zeros
/// there), later sends are refused at once without any I/O, and once the
/// disk has room again (this test's does: the resume margin is 1 MiB) the
/// same writer takes sends again, from where the refused group began.
#[actix_rt::test]
async fn a_write_refused_for_space_is_cut_back_and_writes_resume_by_themselves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Faulty { appender, plan, .. } = faulty_writer(dir.path(), FlushMode::Sync);
    plan.fail_after_jobs.store(2, Ordering::SeqCst);
    plan.out_of_space.store(true, Ordering::SeqCst);
    for i in 0..2 {
        let placed = appender.append("f", 0, batch(&format!("ok{i}"))).await.expect("stored");
        assert_eq!(placed[0].queue_offset, i);
    }
    let refused = appender.append("f", 0, batch("no-room")).await;
    assert!(matches!(refused, Err(Error::DiskFull { .. })), "{refused:?}");
    let segment = || std::fs::read(dir.path().join("commitlog").join(segment_name(0))).expect("read");
    assert!(!segment().windows(7).any(|w| w == b"no-room"), "the half-written record was cut back");
    // Refused at once, without trying the disk.
    let seen = plan.jobs_seen.load(Ordering::SeqCst);
    assert!(matches!(appender.append("f", 0, batch("still")).await, Err(Error::DiskFull { .. })));
    assert_eq!(plan.jobs_seen.load(Ordering::SeqCst), seen);
    // Room again (the check runs every second): writing resumes, in place.
    plan.fail_after_jobs.store(u64::MAX, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let placed = loop {
        match appender.append("f", 0, batch("again")).await {
            Ok(placed) => break placed,
            Err(Error::DiskFull { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("writes did not resume: {other:?}"),
        }
    };
    assert_eq!(placed[0].queue_offset, 2, "no offset was used by the refused sends");
    let ok1 = appender.append("f", 0, batch("ok1")).await.expect("stored");
    assert_eq!(placed[0].pos.log_offset + u64::from(placed[0].pos.size), ok1[0].pos.log_offset);
    assert!(segment().windows(5).any(|w| w == b"again"));
}
