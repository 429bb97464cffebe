//! A connection's socket as two threads write it: the connection's writer
//! task, and whoever has a lone send's answer first (the log writer's
//! thread, most often), which writes it at once when the task is idle
//! instead of waking the task to write it.
//!
//! The task owns the socket's write side and writes only between
//! [`Wire::take_turn`] and [`Wire::set_idle`]; an answer is written
//! directly only while the task is idle, under the same lock, so frames
//! never interleave. What a direct write could not get into the socket
//! waits in the wire and goes first when the task takes its next turn.

use crate::server::handlers::Reply;
use brook_proto::{BrokerCodec, Frame, Outbound};
use bytes::{Bytes, BytesMut};
use std::io::Write;
use tokio_util::codec::Encoder;

/// The shared side of a connection's socket.
pub struct Wire {
    /// A second descriptor of the connection's socket (non-blocking, as
    /// the first).
    socket: std::net::TcpStream,
    state: parking_lot::Mutex<State>,
    max_frame: usize,
}

struct State {
    /// The writer task waits with nothing of its own unwritten.
    idle: bool,
    /// The writer task is gone (or the socket failed): nothing more is
    /// written here.
    closed: bool,
    /// The end of a direct write the socket had no room for.
    rest: Option<Bytes>,
}

/// What became of answers offered to [`Wire::answer`].
pub enum Offered {
    /// Written whole (or dropped: the connection is gone).
    Written,
    /// Partly written; the rest waits for the writer task, which must be
    /// woken to write it.
    Cut,
    /// The writer task is busy: the answers are back, for it to write.
    Busy(Vec<(Option<u64>, Reply)>),
}

impl Wire {
    /// A wire over `socket`, a second descriptor of the connection's.
    pub fn new(socket: std::net::TcpStream, max_frame: usize) -> Self {
        Self { socket, state: parking_lot::Mutex::new(State { idle: false, closed: false, rest: None }), max_frame }
    }

    /// The writer task has written everything it took and waits.
    pub fn set_idle(&self) {
        self.state.lock().idle = true;
    }

    /// The writer task is about to write: what a direct write left
    /// unwritten, to be written before anything else.
    pub fn take_turn(&self) -> Option<Bytes> {
        let mut state = self.state.lock();
        state.idle = false;
        state.rest.take()
    }

    /// The writer task is gone.
    pub fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        state.rest = None;
    }

    /// Writes `answers` now if the writer task is idle.
    pub fn answer(&self, answers: Vec<(Option<u64>, Reply)>) -> Offered {
        let mut state = self.state.lock();
        if state.closed {
            return Offered::Written;
        }
        if !state.idle || state.rest.is_some() {
            return Offered::Busy(answers);
        }
        let mut buf = BytesMut::new();
        let mut codec = BrokerCodec::new(self.max_frame);
        for (id, body) in answers {
            let Some(id) = id else { continue };
            let frame: Outbound = Frame::Response { id, body }.into();
            if codec.encode(frame, &mut buf).is_err() {
                // As the writer task does with a frame it cannot encode:
                // the connection ends.
                state.closed = true;
                let _ = self.socket.shutdown(std::net::Shutdown::Both);
                return Offered::Written;
            }
        }
        let mut written = 0;
        while written < buf.len() {
            match (&self.socket).write(&buf[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // The reader sees the broken socket and ends the
                    // connection.
                    state.closed = true;
                    return Offered::Written;
                }
            }
        }
        if written == buf.len() {
            return Offered::Written;
        }
        state.rest = Some(buf.freeze().slice(written..));
        Offered::Cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_proto::{FrameCodec, Response};
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::FramedRead;

    /// A send's answer with `acks` acks (large, so the socket fills fast).
    fn answer(id: u64, acks: u64) -> (Option<u64>, Reply) {
        let acks = (0..acks)
            .map(|i| brook_proto::request::StoredAck { log_offset: i, queue: 0, queue_offset: i, deliver_at: None })
            .collect();
        (Some(id), Ok(Response::Sent(acks)))
    }

    fn encoded(id: u64, acks: u64) -> BytesMut {
        let (_, body) = answer(id, acks);
        let mut buf = BytesMut::new();
        BrokerCodec::new(1 << 20).encode(Frame::Response { id, body }.into(), &mut buf).expect("encode");
        buf
    }

    /// Answers written directly and by the writer task in turn, to a client
    /// reading slower than they come, so that direct writes are cut short:
    /// every frame arrives whole, none twice, none lost, in write order.
    #[tokio::test]
    async fn direct_answers_and_the_tasks_frames_never_interleave() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (broker, _) = listener.accept().await.expect("accept");
        let std = broker.into_std().expect("std");
        let wire = Wire::new(std.try_clone().expect("second descriptor"), 1 << 20);
        let (read, mut write) = tokio::net::TcpStream::from_std(std).expect("adopt").into_split();
        let reader = tokio::spawn(async move {
            let mut frames = FramedRead::new(client, FrameCodec::new(1 << 20));
            let mut seen = Vec::new();
            while let Some(frame) = frames.next().await {
                match frame.expect("a whole frame") {
                    Frame::Response { id, body: Ok(Response::Sent(acks)) } if acks.len() == 400 => seen.push(id),
                    other => panic!("unexpected {other:?}"),
                }
                if seen.len() % 20 == 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
            seen
        });
        let (mut expected, mut cuts, mut busy) = (Vec::new(), 0, 0);
        wire.set_idle();
        for id in 0..3000u64 {
            if id % 4 == 3 {
                // The task's turn: what a cut left goes first, and its own
                // frame goes in two writes, a direct answer refused between.
                if let Some(rest) = wire.take_turn() {
                    write.write_all(&rest).await.expect("rest");
                }
                let buf = encoded(id, 400);
                write.write_all(&buf[..buf.len() / 2]).await.expect("write");
                assert!(
                    matches!(wire.answer(vec![answer(id + 10_000, 400)]), Offered::Busy(_)),
                    "the task is mid-frame"
                );
                write.write_all(&buf[buf.len() / 2..]).await.expect("write");
                expected.push(id);
                wire.set_idle();
                continue;
            }
            match wire.answer(vec![answer(id, 400)]) {
                Offered::Written => expected.push(id),
                Offered::Cut => {
                    cuts += 1;
                    expected.push(id);
                }
                Offered::Busy(_) => busy += 1,
            }
        }
        if let Some(rest) = wire.take_turn() {
            write.write_all(&rest).await.expect("rest");
        }
        wire.close();
        assert!(matches!(wire.answer(vec![answer(99_999, 400)]), Offered::Written), "a closed wire takes nothing");
        drop((write, read, wire));
        let seen = reader.await.expect("reader");
        assert_eq!(seen, expected);
        assert!(cuts > 0 && busy > 0, "the socket never filled: no direct write was cut ({cuts} cuts, {busy} refused)");
    }
}
