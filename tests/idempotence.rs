//! The idempotent producer on the wire, over a raw socket against a real
//! brookd: a repeated (producer, epoch, sequence) is stored once and
//! answered with the original acks; a gap is refused with
//! `OutOfOrderSequence` and stores nothing; an old epoch is fenced; and the
//! broker's sequence state holds across SIGKILL and SIGTERM restarts (from
//! the log past the checkpoint, and from the snapshot a clean stop writes).

mod common;

use brook_proto::request::StoredAck;
use brook_proto::system::PROP_DELAY_LEVEL;
use brook_proto::{ErrorCode, Message, ProducerSeq, Request, Response};
use common::raw::{ask, connected};
use common::{base_env, drain_queue, Brookd};
use std::net::TcpStream;
use std::time::Duration;

fn init(stream: &mut TcpStream) -> u64 {
    match ask(stream, 2, Request::InitProducer) {
        Ok(Response::Producer { producer_id, epoch: 0 }) => producer_id,
        other => panic!("no producer id: {other:?}"),
    }
}

/// Sends `bodies` to `idem`/0 as one request of producer `pid` at
/// (`epoch`, `sequence`).
fn send(
    stream: &mut TcpStream,
    (pid, epoch, sequence): (u64, u32, u32),
    bodies: &[&str],
) -> Result<Vec<StoredAck>, brook_proto::WireError> {
    let messages = bodies.iter().map(|b| Message::new("idem", b.as_bytes().to_vec())).collect();
    let producer = Some(ProducerSeq { producer_id: pid, epoch, sequence });
    let id = 100 + u64::from(sequence) + (u64::from(epoch) << 20);
    match ask(stream, id, Request::Send { topic: "idem".into(), queue: 0, messages, producer })? {
        Response::Sent(acks) => Ok(acks),
        other => panic!("unexpected answer {other:?}"),
    }
}

fn code(result: Result<Vec<StoredAck>, brook_proto::WireError>) -> (ErrorCode, Option<u64>) {
    match result {
        Err(e) => (e.code, e.detail),
        Ok(acks) => panic!("stored: {acks:?}"),
    }
}

async fn stored_bodies(broker: &Brookd, count: usize) -> Vec<String> {
    let conn = broker.connect().await;
    drain_queue(&conn, "idem", 0, 0, count + 1, Duration::from_millis(600))
        .await
        .iter()
        .map(|m| String::from_utf8_lossy(&m.message.body).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_is_stored_once_and_a_gap_stores_nothing_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = base_env(dir.path(), "std");
    env.push(("BROOK_STORE__FLUSH".into(), "sync".into()));
    let mut broker = Brookd::start(&env);
    broker.connect().await.create_topic("idem", 1).await.expect("topic");
    let mut s = connected(&broker.addr);
    let pid = init(&mut s);
    let first = send(&mut s, (pid, 0, 0), &["a"]).expect("stored");
    assert_eq!(send(&mut s, (pid, 0, 0), &["a"]).expect("answered"), first, "the same ack twice");
    assert_eq!(code(send(&mut s, (pid, 0, 2), &["gap"])), (ErrorCode::OutOfOrderSequence, Some(1)));
    let batch = send(&mut s, (pid, 0, 1), &["b", "c", "d"]).expect("stored");
    assert_eq!(send(&mut s, (pid, 0, 1), &["b", "c", "d"]).expect("answered"), batch);
    assert_eq!(stored_bodies(&broker, 4).await, ["a", "b", "c", "d"], "one record per sequence, no gap stored");

    // SIGKILL: the state comes back from the log past the checkpoint.
    broker.kill9();
    let mut broker = Brookd::start(&env);
    let mut s = connected(&broker.addr);
    assert_eq!(send(&mut s, (pid, 0, 0), &["a"]).expect("answered"), first, "after SIGKILL");
    assert_eq!(send(&mut s, (pid, 0, 1), &["b", "c", "d"]).expect("answered"), batch);
    assert_eq!(code(send(&mut s, (pid, 0, 9), &["gap"])), (ErrorCode::OutOfOrderSequence, Some(4)));
    let fifth = send(&mut s, (pid, 0, 4), &["e"]).expect("stored");
    assert_eq!(stored_bodies(&broker, 5).await, ["a", "b", "c", "d", "e"]);

    // SIGTERM: the state comes back from the snapshot the clean stop wrote.
    assert!(broker.terminate().success());
    let mut broker = Brookd::start(&env);
    let mut s = connected(&broker.addr);
    assert_eq!(send(&mut s, (pid, 0, 4), &["e"]).expect("answered"), fifth, "after SIGTERM");
    assert_eq!(send(&mut s, (pid, 0, 0), &["a"]).expect("answered"), first);
    assert_eq!(stored_bodies(&broker, 5).await, ["a", "b", "c", "d", "e"]);

    // A new epoch starts again at 0 and fences the old one.
    assert_eq!(code(send(&mut s, (pid, 1, 3), &["x"])), (ErrorCode::OutOfOrderSequence, Some(0)));
    send(&mut s, (pid, 1, 0), &["f"]).expect("a new epoch's first send");
    assert_eq!(code(send(&mut s, (pid, 0, 5), &["stale"])), (ErrorCode::ProducerFenced, Some(1)));
    assert_eq!(stored_bodies(&broker, 6).await, ["a", "b", "c", "d", "e", "f"]);
    broker.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_send_keeps_its_lane_and_a_repeat_is_not_delayed_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = base_env(dir.path(), "std");
    let mut broker = Brookd::start(&env);
    broker.connect().await.create_topic("idem", 1).await.expect("topic");
    let mut s = connected(&broker.addr);
    let pid = init(&mut s);
    let delayed = |seq: u32| {
        let msg = Message::new("idem", b"later".to_vec()).with_property(PROP_DELAY_LEVEL, "1");
        let producer = Some(ProducerSeq { producer_id: pid, epoch: 0, sequence: seq });
        Request::Send { topic: "idem".into(), queue: 0, messages: vec![msg], producer }
    };
    let first = ask(&mut s, 10, delayed(0)).expect("stored");
    assert_eq!(ask(&mut s, 11, delayed(0)).expect("answered"), first, "same waiting place");
    // The next sequence of the lane, not delayed, follows in order.
    send(&mut s, (pid, 0, 1), &["now"]).expect("stored");
    broker.kill9();
    let broker = Brookd::start(&env);
    let mut s = connected(&broker.addr);
    assert_eq!(ask(&mut s, 12, delayed(0)).expect("answered after SIGKILL"), first);
    // Delivered once, after its delay (level 1: 1 s).
    let conn = broker.connect().await;
    let delivered = drain_queue(&conn, "idem", 0, 0, 3, Duration::from_secs(4)).await;
    let bodies: Vec<_> = delivered.iter().map(|m| String::from_utf8_lossy(&m.message.body).into_owned()).collect();
    assert_eq!(bodies, ["now", "later"]);
}

/// A retry and new sends read together are merged into one part: the
/// repeated prefix is answered with its original ack, only the rest is
/// stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_merged_with_new_sends_stores_only_the_new_ones() {
    use common::raw::{frame_bytes, read_frame};
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&base_env(dir.path(), "std"));
    broker.connect().await.create_topic("idem", 1).await.expect("topic");
    let mut s = connected(&broker.addr);
    let pid = init(&mut s);
    let first = send(&mut s, (pid, 0, 0), &["a"]).expect("stored");
    let frame = |id: u64, seq: u32, body: &str| {
        let producer = Some(ProducerSeq { producer_id: pid, epoch: 0, sequence: seq });
        let messages = vec![Message::new("idem", body.as_bytes().to_vec())];
        frame_bytes(&brook_proto::Frame::Request {
            id,
            body: Request::Send { topic: "idem".into(), queue: 0, messages, producer },
        })
    };
    // One write: the broker reads them in one turn.
    let mut wire = frame(50, 0, "a");
    wire.extend(frame(51, 1, "b"));
    wire.extend(frame(52, 2, "c"));
    s.write_all(&wire).expect("write");
    let mut answers = std::collections::BTreeMap::new();
    for _ in 0..3 {
        match read_frame(&mut s) {
            Some(brook_proto::Frame::Response { id, body: Ok(Response::Sent(acks)) }) => {
                answers.insert(id, acks);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(answers[&50], first, "the repeat gets its original ack");
    assert_eq!((answers[&51][0].queue_offset, answers[&52][0].queue_offset), (1, 2));
    assert_eq!(stored_bodies(&broker, 3).await, ["a", "b", "c"]);
}
