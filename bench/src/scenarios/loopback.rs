//! The `loopback` scenario: the floor under `produce --mode sync`. A server
//! process that answers each frame and does nothing else, driven the way
//! sync producers drive a broker: one connection per producer, one request
//! in flight on each, the request and answer the byte sizes of a real send
//! of `--size` bytes and its answer. What it reaches is what this machine's
//! loopback TCP and scheduler allow before a broker does any work.

use crate::cpu::{self, CpuClock};
use crate::load::Budget;
use crate::stats::{self, new_histogram, Stats, Summary};
use brook_proto::frame::Frame;
use brook_proto::message::Message;
use brook_proto::request::{Request, Response, StoredAck};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The frames a sync send of `size` body bytes puts on the wire, and its answer.
fn frames(size: usize) -> Result<(Vec<u8>, Vec<u8>), String> {
    let messages = vec![Message::new("", vec![b'x'; size])];
    let send = Request::Send { topic: "bench".into(), queue: 0, messages, producer: None };
    let request = brook_proto::codec::encode_frame(&Frame::Request { id: 1 << 20, body: send });
    let ack = StoredAck { log_offset: 1 << 40, queue: 0, queue_offset: 1 << 20, deliver_at: None };
    let answer =
        brook_proto::codec::encode_frame(&Frame::Response { id: 1 << 20, body: Ok(Response::Sent(vec![ack])) });
    Ok((request.map_err(|e| e.to_string())?, answer.map_err(|e| e.to_string())?))
}

/// Reads one length-prefixed frame into `buf`; false at end of stream.
async fn read_frame<R: AsyncReadExt + Unpin>(reader: &mut R, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut prefix = [0u8; 4];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    buf.resize(u32::from_be_bytes(prefix) as usize, 0);
    reader.read_exact(buf).await?;
    Ok(true)
}

/// The server side (`brook-bench loopback-server`): prints its address and
/// answers every frame with `size`'s answer until stdin closes.
pub async fn serve(size: usize) -> Result<bool, String> {
    let (_, answer) = frames(size)?;
    let answer: Arc<[u8]> = answer.into();
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    println!("{}", listener.local_addr().map_err(|e| e.to_string())?);
    tokio::spawn(async {
        // The parent holds our stdin: when it goes, so do we.
        let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut tokio::io::sink()).await;
        std::process::exit(0);
    });
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let answer = answer.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (read, mut write) = stream.into_split();
            let mut read = tokio::io::BufReader::with_capacity(64 << 10, read);
            let mut buf = Vec::new();
            while let Ok(true) = read_frame(&mut read, &mut buf).await {
                if write.write_all(&answer).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// The server process, killed (by closing its stdin) when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(size: usize) -> Result<Server, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(["loopback-server", "--size", &size.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start the loopback server: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut addr = String::new();
        BufReader::new(stdout).read_line(&mut addr).map_err(|e| e.to_string())?;
        Ok(Server { child, addr: addr.trim().to_string() })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Runs the scenario: `producers` connections, one request in flight each.
pub async fn run(producers: usize, size: usize, budget: Arc<Budget>, total: u64) -> Result<Summary, String> {
    let server = Server::start(size)?;
    let (request, answer) = frames(size)?;
    let request: Arc<[u8]> = request.into();
    let stats = Arc::new(Stats::new(total));
    let mut streams = Vec::new();
    for _ in 0..producers.max(1) {
        let stream = TcpStream::connect(&server.addr).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        streams.push(stream);
    }
    let clocks = (CpuClock::of(server.child.id()), CpuClock::of_self());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for stream in streams {
        let (request, budget, stats) = (request.clone(), budget.clone(), stats.clone());
        tasks.push(tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut read = tokio::io::BufReader::with_capacity(64 << 10, read);
            let (mut hist, mut buf) = (new_histogram(), Vec::new());
            while budget.claim(1) == 1 {
                let sent = Instant::now();
                let answered = write.write_all(&request).await.is_ok()
                    && matches!(read_frame(&mut read, &mut buf).await, Ok(true));
                if !answered {
                    stats.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    break;
                }
                stats::record(&mut hist, sent);
                stats.done(1, size as u64);
            }
            stats.merge(&hist);
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())?;
    }
    let elapsed = start.elapsed();
    let done = stats.messages.load(std::sync::atomic::Ordering::Relaxed);
    let mut notes = vec![
        ("mode".into(), format!("sync, {} connections, one request in flight each", producers.max(1))),
        (
            "frames".into(),
            format!("request {} B, answer {} B (a send of {size} B and its answer)", request.len(), answer.len()),
        ),
    ];
    notes.extend(cpu::per_message(&[("server", clocks.0), ("client", clocks.1)], done));
    Ok(stats.summary("loopback", elapsed, "request→answer", notes))
}
