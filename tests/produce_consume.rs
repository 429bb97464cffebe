//! Send and pull through a real brookd over TCP, on both writer backends:
//! acks carry dense queue offsets, pulls return records in offset order with
//! every field intact, across segment rolls, and long polls wake on arrival.

mod common;

use brook_client::{ErrorCode, Message};
use common::{base_env, drain_queue, Brookd, BACKENDS};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_messages_come_back_in_order_with_their_fields() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Brookd::start(&base_env(dir.path(), backend));
        let conn = broker.connect().await;
        conn.create_topic("orders", 2).await.expect("create");
        let mut sent = Vec::new();
        for i in 0..300u32 {
            let msg = Message::new("orders", format!("body-{i}-{}", "x".repeat(300 + i as usize % 500)))
                .with_tags(if i % 2 == 0 { "even" } else { "odd" })
                .with_key(format!("order-{i}"))
                .with_property("n", i.to_string());
            let acks = conn.send("orders", 1, vec![msg.clone()]).await.expect("send");
            assert_eq!(acks.len(), 1);
            assert_eq!(acks[0].queue_offset, u64::from(i), "{backend}: offsets are dense");
            sent.push((msg, acks[0]));
        }
        let got = drain_queue(&conn, "orders", 1, 0, sent.len(), Duration::from_secs(20)).await;
        assert_eq!(got.len(), sent.len(), "{backend}");
        let mut last_log = None;
        for (stored, (msg, ack)) in got.iter().zip(&sent) {
            assert_eq!(stored.message.topic, "orders", "the client sends it as the send's, the broker fills it in");
            assert_eq!(stored.message.body, msg.body);
            assert_eq!(stored.message.keys, msg.keys);
            assert_eq!(stored.message.tags, msg.tags);
            assert_eq!(stored.message.properties, msg.properties);
            assert_eq!(stored.msg_id, ack.msg_id.to_string());
            assert_eq!(stored.queue_offset, ack.queue_offset);
            assert!(last_log < Some(stored.log_offset), "commit-log order within a queue");
            last_log = Some(stored.log_offset);
        }
        // 300 records of 400-900 bytes (~165 KB) fill two 64 KiB segments
        // and start a third (whatever the preallocator has prepared).
        let segments = std::fs::read_dir(dir.path().join("commitlog")).expect("dir").count();
        assert!(segments >= 3, "{backend}: expected segment rolls, found {segments} files");
        // The other queue is empty and the describe says so.
        let info = conn.describe_topic("orders").await.expect("describe");
        assert_eq!(info.queue_stats[0].max_offset, 0);
        assert_eq!(info.queue_stats[1].max_offset, 300);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_filters_and_errors() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Brookd::start(&base_env(dir.path(), backend));
        let conn = broker.connect().await;
        conn.create_topic("t", 1).await.expect("create");
        let batch: Vec<Message> = (0..50)
            .map(|i| Message::new("t", vec![i as u8; 10]).with_tags(if i % 5 == 0 { "five" } else { "other" }))
            .collect();
        let acks = conn.send("t", 0, batch).await.expect("batch");
        let offsets: Vec<u64> = acks.iter().map(|a| a.queue_offset).collect();
        assert_eq!(offsets, (0..50).collect::<Vec<_>>());
        let filtered = conn.pull("t", 0, 0, 100, 0, Some("five"), 0).await.expect("pull");
        assert_eq!(filtered.messages.len(), 10);
        assert!(filtered.messages.iter().all(|m| m.message.tags.as_deref() == Some("five")));
        assert_eq!(filtered.next_offset, 50, "filtered messages still advance the offset");

        fn code<T>(r: Result<T, brook_client::ClientError>) -> Option<ErrorCode> {
            r.err().and_then(|e| e.code())
        }
        assert_eq!(
            code(conn.send("nope", 0, vec![Message::new("nope", b"x".to_vec())]).await),
            Some(ErrorCode::TopicNotFound)
        );
        assert_eq!(
            code(conn.send("t", 3, vec![Message::new("t", b"x".to_vec())]).await),
            Some(ErrorCode::QueueOutOfRange)
        );
        assert_eq!(code(conn.send("bad name", 0, vec![]).await), Some(ErrorCode::InvalidName));
        assert_eq!(code(conn.send("t", 0, vec![]).await), Some(ErrorCode::InvalidArgument));
        let huge = Message::new("t", vec![0u8; 70_000]);
        assert_eq!(code(conn.send("t", 0, vec![huge]).await), Some(ErrorCode::MessageTooLarge));
        assert_eq!(code(conn.pull("t", 0, 51, 1, 0, None, 0).await), Some(ErrorCode::OffsetBeyondEnd));
        assert_eq!(code(conn.create_topic("t", 0).await), Some(ErrorCode::InvalidArgument));
        // None of the refused requests stored anything.
        let info = conn.describe_topic("t").await.expect("describe");
        assert_eq!(info.queue_stats[0].max_offset, 50);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_pull_wakes_on_arrival() {
    for backend in BACKENDS {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Brookd::start(&base_env(dir.path(), backend));
        let conn = broker.connect().await;
        conn.create_topic("lp", 1).await.expect("create");
        let puller = broker.connect().await;
        let parked = tokio::spawn(async move {
            let result = puller.pull("lp", 0, 0, 10, 0, None, 10_000).await.expect("pull");
            (result, Instant::now())
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!parked.is_finished(), "the pull is parked, not answered empty");
        conn.send("lp", 0, vec![Message::new("lp", b"wake".to_vec())]).await.expect("send");
        let acked = Instant::now();
        let (result, woke) = tokio::time::timeout(Duration::from_secs(5), parked)
            .await
            .expect("woken well before the long-poll deadline")
            .expect("join");
        assert_eq!(result.messages.len(), 1);
        assert_eq!(result.messages[0].message.body, b"wake");
        // Generous bound: the point is "on arrival", not "at the 10 s deadline".
        assert!(woke.duration_since(acked) < Duration::from_secs(2));
    }
}

/// A long poll that nothing answers ends empty at its deadline, and does
/// not disturb the pulls parked beside it: they are all answered by the
/// next arrival, and a pull parked after it expires on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_with_nothing_to_read_ends_empty_at_its_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&base_env(dir.path(), BACKENDS[0]));
    let conn = broker.connect().await;
    conn.create_topic("lp", 1).await.expect("create");
    let started = Instant::now();
    let empty = conn.pull("lp", 0, 0, 10, 0, None, 400).await.expect("pull");
    let waited = started.elapsed();
    assert!(empty.messages.is_empty());
    assert_eq!(empty.next_offset, 0, "the next pull starts where this one did");
    assert!(waited >= Duration::from_millis(400), "not before its deadline: {waited:?}");
    assert!(waited < Duration::from_secs(5), "soon after it: {waited:?}");

    // Pulls parked with long and short deadlines; the short ones expire
    // first, the long ones wait for the message.
    let mut long = Vec::new();
    let mut short = Vec::new();
    for i in 0..20 {
        let puller = conn.clone();
        let (wait, list) = if i % 2 == 0 { (20_000, &mut long) } else { (300, &mut short) };
        list.push(tokio::spawn(async move { puller.pull("lp", 0, 0, 10, 0, None, wait).await.expect("pull") }));
    }
    for pull in short {
        let result = tokio::time::timeout(Duration::from_secs(5), pull).await.expect("expired").expect("join");
        assert!(result.messages.is_empty());
    }
    assert!(long.iter().all(|pull| !pull.is_finished()), "the long polls are still parked");
    conn.send("lp", 0, vec![Message::new("lp", b"late".to_vec())]).await.expect("send");
    for pull in long {
        let result = tokio::time::timeout(Duration::from_secs(5), pull).await.expect("woken").expect("join");
        assert_eq!(result.messages.len(), 1);
        assert_eq!(result.messages[0].message.body, b"late");
    }
    let after = conn.pull("lp", 0, 1, 10, 0, None, 300).await.expect("pull past the end");
    assert!(after.messages.is_empty());
    assert_eq!(after.next_offset, 1);
}

/// Drops the page cache of every commit-log segment (the pages are clean:
/// the broker runs with sync flush) and says whether the first byte of each
/// is now uncached, as `RWF_NOWAIT` sees it.
fn evict_log(data_dir: &std::path::Path) -> bool {
    // The preallocator may still be writing the next segment (its pages
    // are dirty until it syncs): try again for a while.
    (0..100).any(|_| {
        let cold = evict_log_once(data_dir);
        if !cold {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        cold
    })
}

fn evict_log_once(data_dir: &std::path::Path) -> bool {
    use std::os::fd::AsRawFd;
    let mut all_cold = true;
    for entry in std::fs::read_dir(data_dir.join("commitlog")).expect("commitlog") {
        let path = entry.expect("entry").path();
        // A segment being prepared is not part of the log yet.
        if path.extension().is_some_and(|ext| ext == "tmp") {
            continue;
        }
        // Renamed meanwhile (a prepared segment taking its name): look again.
        let Ok(file) = std::fs::File::open(path) else {
            all_cold = false;
            continue;
        };
        // SAFETY: plain syscalls on an open descriptor and a local buffer.
        unsafe {
            assert_eq!(libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED), 0);
            let mut byte = [0u8; 1];
            let iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
            let n = libc::preadv2(file.as_raw_fd(), &iov, 1, 0, libc::RWF_NOWAIT);
            all_cold &= n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN);
        }
    }
    all_cold
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_read_records_that_are_no_longer_in_the_page_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = base_env(dir.path(), "std");
    env.push(("BROOK_STORE__FLUSH".into(), "sync".into()));
    let broker = Brookd::start(&env);
    let conn = broker.connect().await;
    conn.create_topic("cold", 1).await.expect("create");
    let bodies: Vec<String> = (0..120).map(|i| format!("cold-{i}-{}", "c".repeat(900))).collect();
    for chunk in bodies.chunks(10) {
        let batch = chunk.iter().map(|b| Message::new("cold", b.clone())).collect();
        conn.send("cold", 0, batch).await.expect("send");
    }
    // Pulls read fresh records on the connection's thread and fall back to
    // the blocking pool from the first one that would wait for the disk.
    assert!(evict_log(&broker.data_dir), "the log's pages could be dropped from the page cache");
    let got = drain_queue(&conn, "cold", 0, 0, bodies.len(), Duration::from_secs(20)).await;
    let read: Vec<String> = got.iter().map(|m| String::from_utf8(m.message.body.clone()).expect("utf8")).collect();
    assert_eq!(read, bodies, "every record, in order, read back from the disk");
    // Now cached again: the same answer from the fast path.
    let again = drain_queue(&conn, "cold", 0, 0, bodies.len(), Duration::from_secs(20)).await;
    assert_eq!(again.len(), bodies.len());
    // Half cold: the rest of a pull after an uncached record still comes
    // back in order.
    let tail = &got[60..];
    assert!(evict_log(&broker.data_dir));
    let pulled = conn.pull("cold", 0, 60, 60, 1 << 20, None, 0).await.expect("pull");
    let offsets: Vec<u64> = pulled.messages.iter().map(|m| m.queue_offset).collect();
    assert_eq!(offsets, tail.iter().map(|m| m.queue_offset).collect::<Vec<_>>());
}

/// Whether the page holding byte `at` of the log (segments of `segment`
/// bytes) is in the page cache, as `RWF_NOWAIT` sees it.
fn log_page_cached(data_dir: &std::path::Path, segment: u64, at: u64) -> bool {
    use std::os::fd::AsRawFd;
    let base = at - at % segment;
    let file = std::fs::File::open(data_dir.join("commitlog").join(format!("{base:020}"))).expect("segment");
    let mut byte = [0u8; 1];
    let iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: a read into a local buffer on an open descriptor.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, (at - base) as libc::off_t, libc::RWF_NOWAIT) };
    n == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_behind_the_cache_window_leaves_the_page_cache_and_is_still_read() {
    // With a 128 KiB window the first segments' pages are dropped once on
    // disk; with 0 the kernel keeps them. Either way every record reads back.
    for (window, dropped) in [(128 << 10, true), (0, false)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env = base_env(dir.path(), "std");
        env.push(("BROOK_STORE__LOG_CACHE_BYTES".into(), window.to_string()));
        env.push(("BROOK_STORE__FLUSH_INTERVAL_MS".into(), "50".into()));
        let broker = Brookd::start(&env);
        let conn = broker.connect().await;
        conn.create_topic("window", 1).await.expect("create");
        let bodies: Vec<String> = (0..600).map(|i| format!("w-{i}-{}", "w".repeat(1000))).collect();
        let mut last = 0;
        for chunk in bodies.chunks(20) {
            let batch = chunk.iter().map(|b| Message::new("window", b.clone())).collect();
            let acks = conn.send("window", 0, batch).await.expect("send");
            last = acks.last().expect("acks").msg_id.log_offset;
        }
        let segment = 65536;
        // The drop waits for a checkpoint to move the replay point past the
        // queue's tail, then for the sync after it: about two seconds, and
        // once (CI, six brokers at once on a debug build) more than ten.
        let deadline = Instant::now() + Duration::from_secs(30);
        if dropped {
            while log_page_cached(&broker.data_dir, segment, 0) {
                assert!(Instant::now() < deadline, "the oldest page is still cached");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(log_page_cached(&broker.data_dir, segment, last), "the newest record stays cached");
        } else {
            // Several flushes later the kernel still has them.
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert!(log_page_cached(&broker.data_dir, segment, 0), "0 leaves the page cache alone");
        }
        let got = drain_queue(&conn, "window", 0, 0, bodies.len(), Duration::from_secs(20)).await;
        let read: Vec<String> = got.iter().map(|m| String::from_utf8(m.message.body.clone()).expect("utf8")).collect();
        assert_eq!(read, bodies, "every record, in order (window {window})");
    }
}
