//! Group commit, on both backends: with many appends in flight, one
//! fdatasync covers many records (sync flush); async flush answers without
//! fdatasync and syncs on its timer; and within a queue, concurrent producers
//! get dense offsets whose commit-log order matches queue order.

use brook::actors::appender::{Batch, Encoded};
use brook::actors::indexer::Lookup;
use brook::actors::queue::fanout::Placements;
use brook::actors::queue::{self, Pull};
use brook::actors::writer::{Append, Sync as WriterSync};
use brook::broker;
use brook::clock::SystemClock;
use brook::config::{Config, FlushMode, IoBackendKind};
use brook::filter::TagFilter;
use brook::store::commitlog::AppendBatch;
use brook::store::record;
use brook::store::retention::StatvfsUsage;
use brook_proto::Message;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn one_record(i: usize) -> AppendBatch {
    let mut batch = AppendBatch::default();
    batch.starts.push(0);
    record::encode_into(&mut batch.buf, &Message::new("g", format!("{i:0>120}").into_bytes()), 0, 0).expect("encode");
    batch
}

fn one_message(i: usize) -> (Message, u64) {
    (Message::new("g", format!("{i:0>120}").into_bytes()), record::tag_hash(None))
}

fn config(dir: &std::path::Path, backend: IoBackendKind, flush: FlushMode) -> Config {
    let mut config = Config { data_dir: dir.to_path_buf(), ..Config::default() };
    config.store.io_backend = backend;
    config.store.flush = flush;
    config.store.segment_bytes = 1 << 20;
    config.store.flush_interval_ms = 3_600_000;
    config.store.checkpoint_interval_ms = 3_600_000;
    config.sanitize().expect("config");
    config
}

/// The store and its actors, no network.
async fn start(config: &Config) -> broker::Running {
    let opened = broker::open_store(config).expect("open");
    let clock = Arc::new(SystemClock);
    broker::start(opened, config, brook::logging::discard(), clock, Arc::new(StatvfsUsage)).await.expect("start")
}

#[test]
fn one_fdatasync_covers_many_records_in_flight() {
    for backend in [IoBackendKind::Uring, IoBackendKind::Std] {
        actix_rt::System::new().block_on(async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = config(dir.path(), backend, FlushMode::Sync);
            let running = start(&config).await;
            let writer = running.registry.writer().clone();
            let mut waits = Vec::new();
            for i in 0..256 {
                let (tx, rx) = tokio::sync::oneshot::channel();
                writer.do_send(Append {
                    batches: vec![one_record(i)],
                    done: Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                });
                waits.push(rx);
            }
            let mut offsets = Vec::new();
            for rx in waits {
                offsets.push(rx.await.expect("answered").expect("stored")[0].log_offset);
            }
            assert!(offsets.windows(2).all(|w| w[0] < w[1]), "answers follow append order");
            let syncs = running.io_stats.fdatasyncs.load(Ordering::SeqCst);
            let records = running.writer_stats.records.load(Ordering::SeqCst);
            assert_eq!(records, 256);
            // 256 appends in flight at once: the first group holds one, and
            // everything that arrived meanwhile goes in the next few.
            assert!(syncs * 16 <= records, "{backend:?}: {syncs} fdatasyncs for {records} records");
            broker::shutdown(&running).await.expect("shutdown");
        });
    }
}

#[test]
fn async_flush_answers_before_fdatasync_and_syncs_on_demand() {
    for backend in [IoBackendKind::Uring, IoBackendKind::Std] {
        actix_rt::System::new().block_on(async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let config = config(dir.path(), backend, FlushMode::Async);
            let running = start(&config).await;
            let writer = running.registry.writer().clone();
            for i in 0..50 {
                let (tx, rx) = tokio::sync::oneshot::channel();
                writer.do_send(Append {
                    batches: vec![one_record(i)],
                    done: Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                });
                rx.await.expect("answered").expect("stored");
            }
            assert_eq!(
                running.io_stats.fdatasyncs.load(Ordering::SeqCst),
                0,
                "{backend:?}: async acks need no fdatasync"
            );
            let at = writer.send(WriterSync).await.expect("mailbox").expect("sync");
            assert!(at.write_pos > 0);
            assert!(running.io_stats.fdatasyncs.load(Ordering::SeqCst) >= 1);
            broker::shutdown(&running).await.expect("shutdown");
        });
    }
}

#[test]
fn concurrent_producers_get_dense_offsets_in_log_order() {
    for backend in [IoBackendKind::Uring, IoBackendKind::Std] {
        actix_rt::System::new().block_on(async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut config = config(dir.path(), backend, FlushMode::Sync);
            config.store.segment_bytes = 8192; // roll often
            let running = start(&config).await;
            running.topics.create("g", 2).expect("topic");
            let mut tasks = Vec::new();
            for task in 0..64usize {
                let appender = running.appender.clone();
                tasks.push(actix_rt::spawn(async move {
                    let mut got = Vec::new();
                    for i in 0..10 {
                        let queue = (task % 2) as u32;
                        let stored =
                            appender.append("g", queue, vec![one_message(task * 100 + i)]).await.expect("stored");
                        got.push(stored[0]);
                    }
                    got
                }));
            }
            let mut per_queue: [Vec<(u64, u64)>; 2] = Default::default();
            for (task, t) in tasks.into_iter().enumerate() {
                for s in t.await.expect("task") {
                    per_queue[task % 2].push((s.queue_offset, s.pos.log_offset));
                }
            }
            for (q, list) in per_queue.iter_mut().enumerate() {
                list.sort();
                let offsets: Vec<u64> = list.iter().map(|(o, _)| *o).collect();
                assert_eq!(offsets, (0..320).collect::<Vec<_>>(), "{backend:?}: queue {q} dense, no duplicates");
                assert!(list.windows(2).all(|w| w[0].1 < w[1].1), "{backend:?}: queue order is log order");
                let pulled = running
                    .registry
                    .queue("g", q as u32)
                    .send(Pull {
                        offset: 0,
                        max_messages: 1000,
                        max_bytes: u32::MAX,
                        filter: Arc::new(TagFilter::All),
                        long_poll: Duration::ZERO,
                        cut_short: None,
                    })
                    .await
                    .expect("mailbox")
                    .expect("pull");
                let seen: Vec<u64> = pulled.entries.iter().map(|(_, e)| e.log_offset).collect();
                assert_eq!(seen, list.iter().map(|(_, l)| *l).collect::<Vec<_>>());
            }
            broker::shutdown(&running).await.expect("shutdown");
        });
    }
}

/// An append of several batches is written back to back and answered with
/// every record's position in order, even when a segment rolls inside it;
/// an append of none is answered with nothing and takes nothing from the
/// appends around it.
#[test]
fn an_append_of_several_batches_is_answered_in_order() {
    for backend in [IoBackendKind::Uring, IoBackendKind::Std] {
        actix_rt::System::new().block_on(async move {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut config = config(dir.path(), backend, FlushMode::Async);
            config.store.segment_bytes = 1024; // a few records per segment
            let running = start(&config).await;
            let writer = running.registry.writer().clone();
            let shapes: [&[usize]; 4] = [&[2, 1, 3], &[], &[1], &[4, 4]];
            let mut waits = Vec::new();
            let mut next = 0;
            for shape in shapes {
                let mut batches = Vec::new();
                for &records in shape {
                    let mut batch = AppendBatch::default();
                    for _ in 0..records {
                        let one = one_record(next);
                        next += 1;
                        batch.starts.push(batch.buf.len());
                        batch.buf.extend_from_slice(&one.buf);
                    }
                    batches.push(batch);
                }
                let (tx, rx) = tokio::sync::oneshot::channel();
                writer.do_send(Append {
                    batches,
                    done: Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                });
                waits.push(rx);
            }
            let mut all = Vec::new();
            for (rx, shape) in waits.into_iter().zip(shapes) {
                let got = rx.await.expect("answered").expect("stored");
                assert_eq!(got.len(), shape.iter().sum::<usize>(), "{backend:?}: one position per record");
                all.extend(got);
            }
            assert!(all.windows(2).all(|w| w[0].log_offset < w[1].log_offset), "{backend:?}: in order");
            let reader = running.reader.clone();
            for (i, pos) in all.iter().enumerate() {
                let rec = reader.read_at(pos.log_offset).expect("read back");
                assert_eq!(rec.message.body, format!("{i:0>120}").into_bytes(), "{backend:?}: record {i}");
            }
            broker::shutdown(&running).await.expect("shutdown");
        });
    }
}

/// One produce spread over several queues (a connection's gathered sends):
/// each part gets its own queue's offsets, its records and keys land where
/// its answer says, and a part whose queue went away meanwhile fails alone,
/// its records left out of the log.
#[test]
fn parts_of_one_produce_land_in_their_queues_and_a_refused_part_fails_alone() {
    actix_rt::System::new().block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path(), IoBackendKind::Std, FlushMode::Async);
        let running = start(&config).await;
        running.topics.create("pa", 2).expect("pa");
        running.topics.create("pb", 1).expect("pb");
        let earlier = running.appender.append("pa", 1, vec![(Message::new("pa", "earlier"), 0)]).await.expect("stored");
        assert_eq!(earlier[0].queue_offset, 0);
        // A queue deleted while a send for it was on its way.
        let gone = running.appender.queue_spec("pb", 0);
        running.registry.queue("pb", 0).send(queue::Destroy).await.expect("mailbox").expect("destroyed");

        let parts: [(&str, u32, &[&str]); 3] = [("pa", 0, &["a0", "a1"]), ("pb", 0, &["b0"]), ("pa", 1, &["c0", "c1"])];
        let mut encoded = Encoded::with_capacity(0, 0, 0);
        for (topic, queue, keys) in parts {
            let spec = if topic == "pb" { gone.clone() } else { running.appender.queue_spec(topic, queue) };
            encoded.begin(spec, queue);
            for key in keys {
                let msg = Message::new(topic, format!("body-{key}")).with_key(*key);
                encoded.push(&msg, record::tag_hash(None)).expect("encoded");
            }
        }
        let Placements { stored, outcomes } = running.appender.append_encoded(encoded).await;
        assert_eq!(outcomes.len(), 3);
        assert!(matches!(outcomes[1], Err(brook::error::Error::ShuttingDown)), "{:?}", outcomes[1]);
        let first = stored[outcomes[0].as_ref().expect("pa/0 stored").clone()].to_vec();
        let second = stored[outcomes[2].as_ref().expect("pa/1 stored").clone()].to_vec();
        assert_eq!(first.iter().map(|s| s.queue_offset).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(second.iter().map(|s| s.queue_offset).collect::<Vec<_>>(), vec![1, 2]);
        // The refused part's record is not in the log: the others follow
        // each other directly.
        let all: Vec<_> = first.iter().chain(&second).collect();
        assert!(all.windows(2).all(|w| w[0].pos.log_offset + u64::from(w[0].pos.size) == w[1].pos.log_offset));

        let indexer = running.registry.indexer().expect("key index").clone();
        for ((queue, keys), stored) in [(0, ["a0", "a1"]), (1, ["c0", "c1"])].into_iter().zip([&first, &second]) {
            for (key, s) in keys.iter().zip(stored) {
                let rec = running.reader.read(s.pos.log_offset, s.pos.size).expect("readable");
                assert_eq!(rec.message.body, format!("body-{key}").into_bytes());
                assert_eq!((rec.head.queue_id, rec.head.queue_offset), (queue, s.queue_offset));
                let lookup = Lookup { topic: "pa".into(), key: key.to_string(), begin_ts: 0, end_ts: i64::MAX, max: 4 };
                let found = indexer.send(lookup).await.expect("mailbox").expect("lookup");
                assert_eq!(found, vec![s.pos.log_offset], "key {key}");
            }
            // Readable through the queue, in order.
            let pull = Pull {
                offset: 0,
                max_messages: 10,
                max_bytes: 1 << 20,
                filter: Arc::new(TagFilter::All),
                long_poll: Duration::ZERO,
                cut_short: None,
            };
            let entries = running.registry.queue("pa", queue).send(pull).await.expect("mailbox").expect("pull");
            let tail: Vec<_> = entries.entries.iter().skip(queue as usize).map(|(_, e)| e.log_offset).collect();
            assert_eq!(tail, stored.iter().map(|s| s.pos.log_offset).collect::<Vec<_>>());
        }

        // A batch with a record that cannot be encoded fails alone, whole:
        // its good record is dropped with it and the next batch to the same
        // queue takes the offset.
        let long_key = "k".repeat(usize::from(u16::MAX) + 1);
        let batches = vec![
            Batch::measured(
                "pa".into(),
                0,
                vec![(Message::new("pa", "good"), 0), (Message::new("pa", "bad").with_key(long_key), 0)],
            ),
            Batch::measured("pa".into(), 0, vec![(Message::new("pa", "after").with_key("d0"), 0)]),
        ];
        let results = running.appender.append_many(batches).await;
        assert!(matches!(results[0], Err(brook::error::Error::InvalidArgument(_))), "{:?}", results[0]);
        let after = results[1].as_ref().expect("the next batch is stored");
        assert_eq!(after[0].queue_offset, 2);
        let rec = running.reader.read(after[0].pos.log_offset, after[0].pos.size).expect("readable");
        assert_eq!((rec.message.body.as_slice(), rec.head.queue_offset), (&b"after"[..], 2));
        let lookup = Lookup { topic: "pa".into(), key: "d0".into(), begin_ts: 0, end_ts: i64::MAX, max: 4 };
        assert_eq!(indexer.send(lookup).await.expect("mailbox").expect("lookup"), vec![after[0].pos.log_offset]);
        broker::shutdown(&running).await.expect("shutdown");
    });
}
