//! Encode and decode costs on the hot path: a send frame through the wire
//! codec, and a message into a sealed commit-log record.
//!
//! `cargo bench --bench codec`
#![expect(missing_docs, reason = "criterion_group! and criterion_main! generate undocumented items")]

use brook::store::record;
use brook_proto::codec::{decode_body, encode_frame};
use brook_proto::{Frame, Message, Request};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

fn send_frame(messages: usize) -> Frame {
    let msg = Message::new("bench", vec![b'x'; 128]).with_tags("TagA").with_key("order-1");
    let body = Request::Send { topic: "bench".into(), queue: 0, messages: vec![msg; messages], producer: None };
    Frame::Request { id: 1, body }
}

fn wire(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire");
    for messages in [1usize, 64] {
        let frame = send_frame(messages);
        let bytes = encode_frame(&frame).expect("encode");
        group.throughput(Throughput::Elements(messages as u64));
        group.bench_with_input(BenchmarkId::new("encode", messages), &frame, |b, f| {
            b.iter(|| encode_frame(black_box(f)).expect("encode"))
        });
        group.bench_with_input(BenchmarkId::new("decode", messages), &bytes, |b, bytes| {
            b.iter(|| decode_body(black_box(&bytes[4..])).expect("decode"))
        });
    }
    group.finish();
}

fn records(c: &mut Criterion) {
    let msg = Message::new("bench", vec![b'x'; 128]).with_tags("TagA").with_key("order-1");
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode+seal 128B", |b| {
        let mut buf = Vec::with_capacity(512);
        b.iter(|| {
            buf.clear();
            record::encode_into(&mut buf, black_box(&msg), 0, 0).expect("encode");
            record::seal(&mut buf, 4096, 1);
            black_box(&buf);
        })
    });
    let mut sealed = Vec::new();
    record::encode_into(&mut sealed, &msg, 0, 0).expect("encode");
    record::seal(&mut sealed, 4096, 1);
    group.bench_function("check+decode 128B", |b| {
        b.iter(|| {
            record::check(black_box(&sealed), 4096).expect("check");
            record::decode(black_box(&sealed)).expect("decode")
        })
    });
    group.finish();
}

criterion_group!(benches, wire, records);
criterion_main!(benches);
