//! Bad input over real TCP: garbage, missing or wrong-version hellos,
//! oversized and truncated frames, and random bytes get a clear error (or a
//! closed connection) — never a panic — and never touch stored data: after
//! the barrage the broker still serves and every stored message is intact.

mod common;

use brook_proto::{ErrorCode, Frame, Message, Request, Response, PROTOCOL_VERSION};
use common::raw::{frame_bytes, hello, raw, read_frame};
use common::{base_env, drain_queue, Brookd};
use rand::{Rng, SeedableRng};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn error_code(frame: Option<Frame>) -> Option<ErrorCode> {
    match frame {
        Some(Frame::Response { body: Err(e), .. }) => Some(e.code),
        _ => None,
    }
}

fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn bad_frames_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&base_env(dir.path(), "uring"));
    let conn = broker.connect().await;
    conn.create_topic("safe", 2).await.expect("create");
    for i in 0..100u32 {
        conn.send("safe", i % 2, vec![Message::new("safe", format!("keep-{i}"))]).await.expect("send");
    }
    let addr = broker.addr.clone();
    tokio::task::spawn_blocking(move || {
        // Unknown protocol version.
        let mut s = raw(&addr);
        s.write_all(&hello(PROTOCOL_VERSION + 7)).expect("write");
        assert_eq!(error_code(read_frame(&mut s)), Some(ErrorCode::UnsupportedVersion));
        assert!(closed(&mut s));
        // A request before any hello.
        let mut s = raw(&addr);
        s.write_all(&frame_bytes(&Frame::Request { id: 9, body: Request::ListTopics })).expect("write");
        assert_eq!(error_code(read_frame(&mut s)), Some(ErrorCode::HelloRequired));
        assert!(closed(&mut s));
        // An oversized frame: refused from its prefix, before the body.
        let mut s = raw(&addr);
        s.write_all(&hello(PROTOCOL_VERSION)).expect("write");
        assert!(matches!(read_frame(&mut s), Some(Frame::Response { body: Ok(Response::Hello { .. }), .. })));
        s.write_all(&(64u32 << 20).to_be_bytes()).expect("write");
        assert_eq!(error_code(read_frame(&mut s)), Some(ErrorCode::FrameTooLarge));
        assert!(closed(&mut s));
        // A well-delimited frame whose body is garbage.
        let mut s = raw(&addr);
        s.write_all(&hello(PROTOCOL_VERSION)).expect("write");
        read_frame(&mut s);
        s.write_all(&[0, 0, 0, 5, 0xFF, 0xFE, 0xFD, 0xFC, 0xFB]).expect("write");
        assert_eq!(error_code(read_frame(&mut s)), Some(ErrorCode::MalformedFrame));
        assert!(closed(&mut s));
        // Sends are read in place, after their frame: a well-delimited send
        // whose fields are cut short, or carry a topic that is not UTF-8,
        // is refused on its own id and the connection goes on.
        let mut s = raw(&addr);
        s.write_all(&hello(PROTOCOL_VERSION)).expect("write");
        read_frame(&mut s);
        let send = |id| {
            frame_bytes(&Frame::Request {
                id,
                body: Request::Send {
                    topic: "safe".into(),
                    queue: 0,
                    messages: vec![Message::new("safe", b"never".to_vec())],
                    producer: None,
                },
            })
        };
        let whole = send(31);
        let mut cut = ((whole.len() - 4 - 3) as u32).to_be_bytes().to_vec();
        cut.extend_from_slice(&whole[4..whole.len() - 3]);
        s.write_all(&cut).expect("write");
        let whole = send(32);
        let at = whole.windows(4).position(|w| w == b"safe").expect("topic");
        let mut not_utf8 = whole.clone();
        not_utf8[at] = 0xFF;
        s.write_all(&not_utf8).expect("write");
        // A send claiming 2^32 messages (its count is read before them).
        let mut huge = vec![0u8, 34, 5, 4];
        huge.extend_from_slice(b"safe");
        huge.extend_from_slice(&[0, 253]);
        huge.extend_from_slice(&(1u64 << 32).to_le_bytes());
        let mut framed = (huge.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&huge);
        s.write_all(&framed).expect("write");
        s.write_all(&frame_bytes(&Frame::Request { id: 33, body: Request::Ping })).expect("write");
        // Answers leave in completion order.
        let mut answers: Vec<Frame> = (0..4).map(|_| read_frame(&mut s).expect("an answer")).collect();
        answers.sort_by_key(|f| match f {
            Frame::Response { id, .. } => *id,
            _ => 0,
        });
        for (frame, id) in answers[..2].iter().zip([31, 32]) {
            match frame {
                Frame::Response { id: got, body: Err(e) } => {
                    assert_eq!((*got, e.code), (id, ErrorCode::MalformedFrame), "{e}");
                }
                other => panic!("expected an error for send {id}, got {other:?}"),
            }
        }
        assert!(matches!(answers[2], Frame::Response { id: 33, body: Ok(Response::Pong) }));
        match &answers[3] {
            Frame::Response { id: 34, body: Err(e) } => assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}"),
            other => panic!("expected an error for send 34, got {other:?}"),
        }
        // Garbage instead of a hello.
        let mut s = raw(&addr);
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
        assert!(error_code(read_frame(&mut s)).is_some());
        // A frame cut off mid-body, then the connection drops.
        let mut s = raw(&addr);
        s.write_all(&hello(PROTOCOL_VERSION)).expect("write");
        read_frame(&mut s);
        let whole = frame_bytes(&Frame::Request {
            id: 2,
            body: Request::Send {
                topic: "safe".into(),
                queue: 0,
                messages: vec![Message::new("safe", b"cut".to_vec())],
                producer: None,
            },
        });
        s.write_all(&whole[..whole.len() - 3]).expect("write");
        drop(s);
        // Random bytes, some after a valid hello.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xB800C);
        for round in 0..150 {
            let Ok(mut s) = TcpStream::connect(&addr) else {
                continue;
            };
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            if round % 2 == 0 {
                let _ = s.write_all(&hello(PROTOCOL_VERSION));
            }
            let len = rng.random_range(1..2048);
            let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if round % 3 == 0 {
                // A plausible length prefix in front of the junk.
                let body = (junk.len() - junk.len().min(4)) as u32;
                junk.splice(0..junk.len().min(4), body.to_be_bytes());
            }
            let _ = s.write_all(&junk);
            let mut sink = [0u8; 256];
            let _ = s.read(&mut sink);
        }
    })
    .await
    .expect("barrage");
    // Still serving, and nothing changed.
    let conn = broker.connect().await;
    conn.ping().await.expect("ping");
    let info = conn.describe_topic("safe").await.expect("describe");
    assert_eq!(info.queue_stats.iter().map(|q| q.max_offset).sum::<u64>(), 100);
    let mut bodies = Vec::new();
    for queue in 0..2 {
        bodies.extend(
            drain_queue(&conn, "safe", queue, 0, 50, Duration::from_secs(10)).await.into_iter().map(|m| m.message.body),
        );
    }
    bodies.sort();
    let mut expected: Vec<Vec<u8>> = (0..100).map(|i| format!("keep-{i}").into_bytes()).collect();
    expected.sort();
    assert_eq!(bodies, expected);
    let user_topics: Vec<String> = conn
        .list_topics()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .filter(|t| !brook_proto::system::is_reserved_topic(t))
        .collect();
    assert_eq!(user_topics, vec!["safe".to_string()], "no topic appeared from junk");
    let ack = conn.send("safe", 0, vec![Message::new("safe", b"after".to_vec())]).await.expect("send");
    assert_eq!(ack[0].queue_offset, 50);
}

/// Sends read together are stored together (one batch per queue), but each
/// is still answered on its own: a bad one fails alone, the rest keep their
/// arrival order in every queue, big bodies among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines, reason = "one scenario, step by step")]
async fn sends_read_together_are_answered_one_by_one_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = base_env(dir.path(), "std");
    env.push(("BROOK_STORE__SEGMENT_BYTES".into(), (8u64 << 20).to_string()));
    let broker = Brookd::start(&env);
    let conn = broker.connect().await;
    conn.create_topic("merge", 2).await.expect("create");
    conn.create_topic("other", 1).await.expect("create");

    // What each request must get, by id: stored in (topic, queue) — an
    // empty topic for the list request — or refused with a code.
    type Outcome = Result<(String, u32), ErrorCode>;
    let mut expect: Vec<(u64, Outcome)> = Vec::new();
    let mut wire = hello(PROTOCOL_VERSION);
    let send = |topic: &str, queue: u32, body: Vec<u8>| Request::Send {
        topic: topic.into(),
        queue,
        messages: vec![Message::new(topic, body)],
        producer: None,
    };
    for id in 10..130u64 {
        let (request, outcome) = match id % 9 {
            0 => (send("merge", 5, b"bad queue".to_vec()), Err(ErrorCode::QueueOutOfRange)),
            3 => (send("merge", 0, vec![b'x'; 5 << 20]), Err(ErrorCode::MessageTooLarge)),
            5 => (send("%DLQ%g", 0, b"reserved".to_vec()), Err(ErrorCode::InvalidArgument)),
            6 => (Request::ListTopics, Ok(("".to_string(), 0))),
            7 => (send("other", 0, format!("{id}").into_bytes()), Ok(("other".to_string(), 0))),
            _ => {
                let queue = (id % 2) as u32;
                // Big bodies now and then (frames split across reads).
                let mut body = format!("{id}").into_bytes();
                if id % 4 == 0 {
                    body.resize(300 << 10, b'.');
                }
                (send("merge", queue, body), Ok(("merge".to_string(), queue)))
            }
        };
        wire.extend(frame_bytes(&Frame::Request { id, body: request }));
        expect.push((id, outcome));
    }
    // A one-way send at the end: stored, never answered.
    wire.extend(frame_bytes(&Frame::Oneway { body: send("other", 0, b"oneway".to_vec()) }));
    let addr = broker.addr.clone();
    let answers = tokio::task::spawn_blocking(move || {
        let mut s = raw(&addr);
        s.write_all(&wire).expect("one write carries every frame");
        assert!(matches!(read_frame(&mut s), Some(Frame::Response { body: Ok(Response::Hello { .. }), .. })));
        let mut answers = std::collections::BTreeMap::new();
        while answers.len() < 120 {
            match read_frame(&mut s) {
                Some(Frame::Response { id, body }) => assert!(answers.insert(id, body).is_none(), "answered twice"),
                other => panic!("expected an answer, got {other:?}"),
            }
        }
        answers
    })
    .await
    .expect("client");

    let mut stored: std::collections::BTreeMap<(String, u32), Vec<(u64, u64)>> = Default::default();
    for (id, outcome) in &expect {
        let answer = answers.get(id).unwrap_or_else(|| panic!("request {id} not answered"));
        match (outcome, answer) {
            (Err(code), Err(e)) => assert_eq!(e.code, *code, "request {id}: {}", e.message),
            (Ok((topic, _)), Ok(Response::Topics(_))) if topic.is_empty() => {}
            (Ok((topic, queue)), Ok(Response::Sent(acks))) => {
                assert_eq!(acks.len(), 1);
                assert_eq!(acks[0].queue, *queue);
                stored.entry((topic.clone(), *queue)).or_default().push((*id, acks[0].queue_offset));
            }
            (want, got) => panic!("request {id}: wanted {want:?}, got {got:?}"),
        }
    }
    // Per queue: offsets dense from 0 in request order, and the stored
    // bodies are the requests' own, in that order.
    for ((topic, queue), acked) in &stored {
        let offsets: Vec<u64> = acked.iter().map(|(_, offset)| *offset).collect();
        assert_eq!(offsets, (0..acked.len() as u64).collect::<Vec<_>>(), "{topic}/{queue} offsets follow arrival");
        let extra = usize::from(topic == "other");
        let messages = drain_queue(&conn, topic, *queue, 0, acked.len() + extra, Duration::from_secs(10)).await;
        let ids: Vec<String> = messages
            .iter()
            .map(|m| String::from_utf8_lossy(&m.message.body).trim_end_matches('.').to_string())
            .collect();
        let mut want: Vec<String> = acked.iter().map(|(id, _)| id.to_string()).collect();
        if extra == 1 {
            want.push("oneway".into());
        }
        assert_eq!(ids, want, "{topic}/{queue} holds the requests' bodies in order");
    }
    assert!(stored.len() == 3, "both merge queues and the other topic took sends");
}

/// A send whose one message carries `properties` in the given order, as a
/// client not built on brook's `Message` (whose map sorts them) may send.
fn send_with_properties(id: u64, topic: &str, properties: &[(&str, &str)]) -> Vec<u8> {
    let empty = Request::Send { topic: topic.into(), queue: 0, messages: Vec::new(), producer: None };
    let mut body = frame_bytes(&Frame::Request { id, body: empty });
    // The empty send's bytes end with its message count, a lone 0, and
    // its producer, `None` (another 0).
    assert_eq!((body.pop(), body.pop()), (Some(0), Some(0)));
    body.push(1);
    let msg = brook_proto::MessageOut { topic: "", tags: None, keys: &["k"], properties, body: b"foreign", born_ts: 1 };
    body.extend(bincode::serde::encode_to_vec(&msg, bincode::config::standard()).expect("encode"));
    body.push(0);
    let len = (body.len() - 4) as u32;
    body[..4].copy_from_slice(&len.to_be_bytes());
    body
}

/// Properties stored in wire order — unsorted, a name twice — come back
/// from a pull as from a lookup by id: sorted, each name with its last value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsorted_and_repeated_properties_are_pulled_as_a_map_holds_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&base_env(dir.path(), "std"));
    let conn = broker.connect().await;
    conn.create_topic("foreign", 1).await.expect("create");
    let mut stream = raw(&broker.addr);
    stream.write_all(&hello(PROTOCOL_VERSION)).expect("hello");
    assert!(matches!(read_frame(&mut stream), Some(Frame::Response { body: Ok(Response::Hello { .. }), .. })));
    let cases: [&[(&str, &str)]; 3] =
        [&[("b", "2"), ("a", "1")], &[("x", "old"), ("a", "1"), ("x", "new")], &[("a", "1"), ("b", "2")]];
    for (id, properties) in (2..).zip(cases) {
        stream.write_all(&send_with_properties(id, "foreign", properties)).expect("send");
        match read_frame(&mut stream) {
            Some(Frame::Response { id: answered, body: Ok(Response::Sent(acks)) }) => {
                assert_eq!((answered, acks.len()), (id, 1));
            }
            other => panic!("send {id} not stored: {other:?}"),
        }
    }
    let pulled = conn.pull("foreign", 0, 0, 16, 0, None, 0).await.expect("pull").messages;
    let expected: [&[(&str, &str)]; 3] =
        [&[("a", "1"), ("b", "2")], &[("a", "1"), ("x", "new")], &[("a", "1"), ("b", "2")]];
    assert_eq!(pulled.len(), expected.len());
    for (msg, want) in pulled.iter().zip(expected) {
        let got: Vec<(&str, &str)> = msg.message.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want, "offset {}", msg.queue_offset);
        assert_eq!((msg.message.topic.as_str(), msg.message.keys.as_slice()), ("foreign", &["k".to_string()][..]));
        // The lookup by id decodes the record into the owned map itself.
        assert_eq!(&conn.get_message(&msg.msg_id).await.expect("by id"), msg);
    }
    // SQL filters look names up in the same sorted properties.
    for (sql, offsets) in [("b = '2'", vec![0, 2]), ("x = 'new'", vec![1]), ("x = 'old'", vec![])] {
        let pulled = conn.pull_filtered("foreign", 0, 0, 16, (None, Some(sql)), 0).await.expect("pull").messages;
        assert_eq!(pulled.iter().map(|m| m.queue_offset).collect::<Vec<_>>(), offsets, "{sql}");
    }
}

/// A hello and a send written together: the send, alone on its
/// connection, is answered straight from where it was stored, and still
/// after the hello's answer, which leads on every connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hellos_answer_leads_a_lone_send_written_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Brookd::start(&base_env(dir.path(), "std"));
    broker.connect().await.create_topic("lead", 1).await.expect("create");
    let addr = broker.addr.clone();
    tokio::task::spawn_blocking(move || {
        for id in 1..=100u64 {
            let mut wire = hello(PROTOCOL_VERSION);
            let send = Request::Send {
                topic: "lead".into(),
                queue: 0,
                messages: vec![Message::new("lead", format!("{id}"))],
                producer: None,
            };
            wire.extend(frame_bytes(&Frame::Request { id, body: send }));
            let mut s = raw(&addr);
            s.write_all(&wire).expect("one write");
            assert!(
                matches!(read_frame(&mut s), Some(Frame::Response { body: Ok(Response::Hello { .. }), .. })),
                "connection {id}: the hello's answer comes first"
            );
            match read_frame(&mut s) {
                Some(Frame::Response { id: answered, body: Ok(Response::Sent(acks)) }) => {
                    assert_eq!((answered, acks[0].queue_offset), (id, id - 1));
                }
                other => panic!("connection {id}: expected the send's answer, got {other:?}"),
            }
        }
    })
    .await
    .expect("client");
}
