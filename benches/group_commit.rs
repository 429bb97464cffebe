//! Store-level append throughput, no network: N request "lanes" each keep one
//! append in flight against the WriterActor, for 128-byte and 1 KiB records,
//! single-record and 64-record requests, sync and async flush, both backends.
//! Criterion reports records/s (and bytes/s); after each case a line gives
//! the records per fdatasync and fdatasyncs per second it took.
//!
//! `cargo bench --bench group_commit` (filter with e.g. `-- async/uring`;
//! `BENCH_PREALLOC=0` measures without segment preallocation).
#![expect(missing_docs, reason = "criterion_group! and criterion_main! generate undocumented items")]

use brook::actors::writer::Append;
use brook::broker::{self, Running};
use brook::clock::SystemClock;
use brook::config::{Config, FlushMode, IoBackendKind};
use brook::store::commitlog::AppendBatch;
use brook::store::record;
use brook::store::retention::StatvfsUsage;
use brook_proto::Message;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
struct Case {
    backend: IoBackendKind,
    flush: FlushMode,
    body: usize,
    per_request: usize,
    in_flight: usize,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}B/x{}/inflight{}",
            match self.flush {
                FlushMode::Sync => "sync",
                FlushMode::Async => "async",
            },
            match self.backend {
                IoBackendKind::Uring => "uring",
                IoBackendKind::Std => "std",
                IoBackendKind::Auto => "auto",
            },
            self.body,
            self.per_request,
            self.in_flight
        )
    }
}

fn template(case: &Case) -> AppendBatch {
    let mut batch = AppendBatch::default();
    let msg = Message::new("bench", vec![b'x'; case.body]);
    for _ in 0..case.per_request {
        batch.starts.push(batch.buf.len());
        record::encode_into(&mut batch.buf, &msg, 0, 0).expect("encode");
    }
    batch
}

fn clone_batch(batch: &AppendBatch) -> AppendBatch {
    AppendBatch { buf: batch.buf.clone(), starts: batch.starts.clone() }
}

/// Pushes `requests` requests through `in_flight` lanes; returns elapsed.
/// The lanes run on the writer's thread, where the broker's queue actors
/// (the real source of appends) run too.
async fn drive(running: &Running, batch: &AppendBatch, requests: u64, in_flight: usize) -> Duration {
    let writer = running.registry.writer().clone();
    let arbiter = running.writer_arbiter().expect("writer arbiter");
    let start = Instant::now();
    let mut lanes = Vec::with_capacity(in_flight);
    for lane in 0..in_flight as u64 {
        let writer = writer.clone();
        let batch = clone_batch(batch);
        let mine = requests / in_flight as u64 + u64::from(lane < requests % in_flight as u64);
        let (finished, done) = tokio::sync::oneshot::channel();
        arbiter.spawn(async move {
            for _ in 0..mine {
                let (tx, rx) = tokio::sync::oneshot::channel();
                writer.do_send(Append {
                    batches: vec![clone_batch(&batch)],
                    done: Box::new(move |r| {
                        let _ = tx.send(r);
                    }),
                });
                rx.await.expect("answered").expect("stored");
            }
            let _ = finished.send(());
        });
        lanes.push(done);
    }
    for lane in lanes {
        lane.await.expect("lane");
    }
    start.elapsed()
}

fn bench_case(c: &mut Criterion, case: Case) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.store.flush = case.flush;
    config.store.io_backend = case.backend;
    config.store.segment_bytes = 64 << 20;
    config.store.preallocate = std::env::var("BENCH_PREALLOC").map_or(true, |v| v != "0");
    config.sanitize().expect("config");
    let system = actix_rt::System::new();
    let running = system
        .block_on(async {
            broker::start(
                broker::open_store(&config)?,
                &config,
                brook::logging::discard(),
                Arc::new(SystemClock),
                Arc::new(StatvfsUsage),
            )
            .await
        })
        .expect("start");
    let batch = template(&case);
    let records_per_iter = match case.flush {
        FlushMode::Sync => 4_096,
        FlushMode::Async => 65_536,
    }
    .max(case.per_request * case.in_flight);
    let requests = (records_per_iter / case.per_request) as u64;
    let mut group = c.benchmark_group("append");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_millis(500));
    group.throughput(Throughput::Elements(requests * case.per_request as u64));
    let syncs_before = running.io_stats.fdatasyncs.load(Ordering::Relaxed);
    let records_before = running.writer_stats.records.load(Ordering::Relaxed);
    let mut busy = Duration::ZERO;
    group.bench_with_input(BenchmarkId::from_parameter(case), &case, |b, case| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += system.block_on(drive(&running, &batch, requests, case.in_flight));
            }
            busy += total;
            total
        })
    });
    group.finish();
    let syncs = running.io_stats.fdatasyncs.load(Ordering::Relaxed) - syncs_before;
    let records = running.writer_stats.records.load(Ordering::Relaxed) - records_before;
    let secs = busy.as_secs_f64().max(1e-9);
    if records == 0 {
        // Filtered out by the command line: nothing was measured.
        system.block_on(async {
            let _ = broker::shutdown(&running).await;
        });
        return;
    }
    println!(
        "GROUP_COMMIT case={case} records_per_s={:.0} mb_per_s={:.1} fdatasyncs_per_s={:.0} records_per_fdatasync={:.1}",
        records as f64 / secs,
        records as f64 * batch.buf.len() as f64 / case.per_request as f64 / secs / 1e6,
        syncs as f64 / secs,
        if syncs == 0 { f64::INFINITY } else { records as f64 / syncs as f64 },
    );
    system.block_on(async {
        let _ = broker::shutdown(&running).await;
    });
}

fn appends(c: &mut Criterion) {
    for backend in [IoBackendKind::Uring, IoBackendKind::Std] {
        for body in [128, 1024] {
            for (per_request, in_flight) in [(1, 1), (1, 64), (64, 8)] {
                bench_case(c, Case { backend, flush: FlushMode::Async, body, per_request, in_flight });
            }
            for in_flight in [1, 64, 256] {
                bench_case(c, Case { backend, flush: FlushMode::Sync, body, per_request: 1, in_flight });
            }
        }
    }
}

criterion_group!(benches, appends);
criterion_main!(benches);
