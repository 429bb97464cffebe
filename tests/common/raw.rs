//! Raw frames over a plain socket, as a client in another language would
//! send them: for tests of what exactly travels.

use brook_proto::codec::decode_body;
use brook_proto::{Frame, Request, Response};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A blocking socket to `addr`, reads timing out after 10 s.
pub fn raw(addr: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream
}

/// A frame with its length prefix.
pub fn frame_bytes(frame: &Frame) -> Vec<u8> {
    brook_proto::codec::encode_frame(frame).expect("encode")
}

/// A hello speaking `version`, request id 1.
pub fn hello(version: u16) -> Vec<u8> {
    frame_bytes(&Frame::Request { id: 1, body: Request::Hello { version, client_id: "raw".into() } })
}

/// Reads one frame, or `None` if the broker closed the connection.
pub fn read_frame(stream: &mut TcpStream) -> Option<Frame> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).ok()?;
    Some(decode_body(&body).expect("the broker sends well-formed frames"))
}

/// A connection that said hello (current version) and got its answer.
pub fn connected(addr: &str) -> TcpStream {
    let mut stream = raw(addr);
    stream.write_all(&hello(brook_proto::PROTOCOL_VERSION)).expect("hello");
    assert!(matches!(read_frame(&mut stream), Some(Frame::Response { body: Ok(Response::Hello { .. }), .. })));
    stream
}

/// Sends request `body` with `id` and reads its answer.
pub fn ask(stream: &mut TcpStream, id: u64, body: Request) -> Result<Response, brook_proto::WireError> {
    stream.write_all(&frame_bytes(&Frame::Request { id, body })).expect("write");
    match read_frame(stream) {
        Some(Frame::Response { id: answered, body }) => {
            assert_eq!(answered, id, "answers come back in order on an idle connection");
            body
        }
        other => panic!("no answer to request {id}: {other:?}"),
    }
}
