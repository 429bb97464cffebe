//! One connection to a broker, shared by any number of tasks. Requests get
//! ids and go out through the connection's [`Outbox`] (written by the
//! caller on an idle connection, else gathered by a writer task); a reader
//! task matches each answer to its waiting caller, so answers may arrive in
//! any order and many requests are in flight at once.

use crate::error::ClientError;
use crate::outbox::Outbox;
use brook_proto::request::{PullResult, SendAck};
use brook_proto::{Frame, FrameCodec, Message, ProducerSeq, Request, Response, PROTOCOL_VERSION};
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};

/// A caller waiting for its answer, until `deadline`.
struct Waiter {
    deadline: Instant,
    limit: Duration,
    tx: oneshot::Sender<Result<Response, ClientError>>,
}

/// Where a request's answer arrives.
type AnswerRx = oneshot::Receiver<Result<Response, ClientError>>;

/// A request's wait for room in a full send queue.
type WaitForRoom = std::pin::Pin<Box<dyn Future<Output = Result<(), ClientError>> + Send>>;

/// How often a connection expires requests past their deadline. Deadlines
/// are checked by one sweep instead of a timer per request: under
/// pipelining a timer each was a tenth of the client's CPU.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

struct Shared {
    /// Requests awaiting answers. Ids are this connection's own counter,
    /// not input: a fast hasher is safe (SipHash showed in client profiles).
    pending: Mutex<HashMap<u64, Waiter, foldhash::fast::RandomState>>,
    closed: AtomicBool,
    /// Whether the last request found no answer awaited (set under the
    /// `pending` lock). A request is written by its caller only when it and
    /// the one before found the connection idle: a lone synchronous caller
    /// does, while a pipeline refilled after its answers came back
    /// together would otherwise send its first request alone.
    last_idle: AtomicBool,
    /// Requests the broker sends on its own (notices), for whoever listens.
    notices: broadcast::Sender<Request>,
}

impl Shared {
    fn forget(&self, id: u64) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.remove(&id);
        }
    }

    fn fail_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut pending) = self.pending.lock() {
            pending.clear(); // dropping the senders wakes every waiter
        }
    }

    /// Answers every request past its deadline with a timeout.
    fn expire(&self, now: Instant) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        let late: Vec<u64> = pending.iter().filter(|(_, w)| w.deadline <= now).map(|(id, _)| *id).collect();
        for id in late {
            if let Some(waiter) = pending.remove(&id) {
                let _ = waiter.tx.send(Err(ClientError::Timeout(waiter.limit)));
            }
        }
    }
}

/// Expires late requests until the connection closes.
async fn sweep_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !shared.closed.load(Ordering::SeqCst) {
        tick.tick().await;
        shared.expire(Instant::now());
    }
}

/// A multiplexed connection.
#[derive(Clone)]
pub struct Connection {
    out: Arc<Outbox>,
    shared: Arc<Shared>,
    next_id: Arc<AtomicU64>,
    broker: String,
    /// `broker` parsed: message ids of send answers are put together from it.
    pub(crate) broker_addr: SocketAddr,
    timeout: Duration,
}

/// How long a request waits for its answer by default (long polls add their
/// own park time on top).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Dials `addr`, from `local` when given (and of the same family): a
/// broker's connections leave from its own address, so each broker of one
/// host is told apart by address.
pub async fn dial(addr: &str, local: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let Some(ip) = local.filter(|ip| !ip.is_unspecified()) else { return TcpStream::connect(addr).await };
    let target = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("no address for {addr}")))?;
    let socket = if target.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    if ip.is_ipv4() == target.is_ipv4() {
        socket.bind(std::net::SocketAddr::new(ip, 0))?;
    }
    socket.connect(target).await
}

impl Connection {
    /// Connects and says hello.
    pub async fn connect(addr: &str) -> Result<Connection, ClientError> {
        Self::connect_as(addr, &format!("brook-client-{}", std::process::id())).await
    }

    /// Connects with a chosen client id (owned arguments, for spawning).
    pub async fn connect_as_owned(addr: String, client_id: String) -> Result<Connection, ClientError> {
        Self::connect_as(&addr, &client_id).await
    }

    /// Connects with a chosen client id.
    pub async fn connect_as(addr: &str, client_id: &str) -> Result<Connection, ClientError> {
        Self::connect_from(addr, client_id, None).await
    }

    /// Connects from local address `local` (a broker's own address, so
    /// its traffic is told apart from other processes' on one host).
    pub async fn connect_from(
        addr: &str,
        client_id: &str,
        local: Option<std::net::IpAddr>,
    ) -> Result<Connection, ClientError> {
        let stream = tokio::time::timeout(Duration::from_secs(10), dial(addr, local))
            .await
            .map_err(|_| ClientError::Timeout(Duration::from_secs(10)))?
            .map_err(|e| ClientError::Connection(format!("connect {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (read_half, write_half) = stream.into_split();
        let codec = FrameCodec::new(brook_proto::MAX_FRAME_BYTES_CEILING);
        let mut reader = FramedRead::new(read_half, codec.clone());
        let mut writer = FramedWrite::new(write_half, codec.clone());
        writer
            .send(Frame::Request {
                id: 0,
                body: Request::Hello { version: PROTOCOL_VERSION, client_id: client_id.to_string() },
            })
            .await
            .map_err(|e| ClientError::Connection(e.to_string()))?;
        let broker = match tokio::time::timeout(Duration::from_secs(10), reader.next()).await {
            Ok(Some(Ok(Frame::Response { body: Ok(Response::Hello { broker, .. }), .. }))) => broker,
            Ok(Some(Ok(Frame::Response { body: Err(e), .. }))) => return Err(ClientError::Broker(e)),
            Ok(Some(Ok(other))) => return Err(ClientError::Protocol(format!("unexpected hello answer {other:?}"))),
            Ok(Some(Err(e))) => return Err(ClientError::Connection(e.to_string())),
            Ok(None) => return Err(ClientError::Connection("closed during hello".into())),
            Err(_) => return Err(ClientError::Timeout(Duration::from_secs(10))),
        };
        let broker_addr = broker
            .parse()
            .map_err(|_| ClientError::Protocol(format!("the broker named itself {broker:?}, not an address")))?;
        let (notices, _) = broadcast::channel(64);
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::default()),
            closed: AtomicBool::new(false),
            last_idle: AtomicBool::new(false),
            notices,
        });
        let failed = shared.clone();
        let out = Arc::new(Outbox::start(writer.into_inner(), codec, move || failed.fail_all()));
        tokio::spawn(read_loop(reader, shared.clone()));
        tokio::spawn(sweep_loop(shared.clone()));
        Ok(Connection {
            out,
            shared,
            next_id: Arc::new(AtomicU64::new(1)),
            broker,
            broker_addr,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// This connection with another answer timeout for its requests (long
    /// polls add their park time on top).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The broker's advertised address.
    pub fn broker(&self) -> &str {
        &self.broker
    }

    /// Requests the broker sends on its own over this connection (for
    /// example `AssignmentChanged`).
    pub fn notices(&self) -> broadcast::Receiver<Request> {
        self.shared.notices.subscribe()
    }

    /// Identifies this connection among the ones a session has made.
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// Whether the connection has failed or closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Sends a request and waits for its answer (up to the default timeout
    /// plus `extra`). The request is queued when this is called, not when
    /// the returned future is first polled: the future then holds only what
    /// waits for the answer (a few words), which pipelining callers keep by
    /// the dozen and move around per request.
    pub fn request_with(
        &self,
        body: Request,
        extra: Duration,
    ) -> impl Future<Output = Result<Response, ClientError>> + Send + 'static {
        let submitted = self.submit(body, self.timeout + extra);
        async move {
            let (room, rx) = submitted?;
            if let Some(room) = room {
                room.await?;
            }
            // Answered by the reader, or with a timeout by the sweep.
            match rx.await {
                Ok(answer) => answer,
                Err(_) => Err(ClientError::Connection("connection lost before the answer".into())),
            }
        }
    }

    /// Registers a waiter for a new request and queues the request; when
    /// the writer is behind, also returns the wait for room in its queue.
    fn submit(&self, body: Request, limit: Duration) -> Result<(Option<WaitForRoom>, AnswerRx), ClientError> {
        if self.is_closed() {
            return Err(ClientError::Connection("connection closed".into()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter { deadline: Instant::now() + limit, limit, tx };
        let idle = {
            let mut pending = self.shared.pending.lock().map_err(|_| ClientError::Connection("poisoned".into()))?;
            let idle = pending.is_empty();
            let last_idle = self.shared.last_idle.swap(idle, Ordering::Relaxed);
            pending.insert(id, waiter);
            idle && last_idle
        };
        match self.out.push(Frame::Request { id, body }, idle) {
            Ok(None) => Ok((None, rx)),
            // The writer is behind: wait for room, within the same limit (a
            // stalled writer must not hang the caller). Boxed: rare, and it
            // would otherwise size every request's future for a timer and a
            // send.
            Ok(Some(item)) => {
                let (out, shared) = (self.out.clone(), self.shared.clone());
                let room = Box::pin(async move {
                    let queued = out.send_queued(item, limit).await;
                    if queued.is_err() {
                        shared.forget(id);
                    }
                    queued
                });
                Ok((Some(room), rx))
            }
            Err(e) => {
                self.shared.forget(id);
                Err(e)
            }
        }
    }

    /// Sends a request and waits for its answer.
    pub fn request(&self, body: Request) -> impl Future<Output = Result<Response, ClientError>> + Send + 'static {
        self.request_with(body, Duration::ZERO)
    }

    /// Sends a request that gets no answer.
    pub async fn oneway(&self, body: Request) -> Result<(), ClientError> {
        match self.out.push(Frame::Oneway { body }, false)? {
            Some(item) => self.out.send_queued(item, self.timeout).await,
            None => Ok(()),
        }
    }

    /// Stores messages into one queue, in order; one ack per message. Like
    /// [`Connection::request`], the send leaves when this is called: sends
    /// called one after another on a connection are stored in that order.
    pub fn send(
        &self,
        topic: &str,
        queue: u32,
        messages: Vec<Message>,
    ) -> impl Future<Output = Result<Vec<SendAck>, ClientError>> + Send + 'static {
        self.send_as(topic, queue, messages, None)
    }

    /// [`Connection::send`] as an idempotent producer: `producer` names the
    /// producer, its epoch on this queue and the first message's sequence
    /// number. The broker stores a sequence once: a repeat is answered with
    /// the original acks.
    pub fn send_as(
        &self,
        topic: &str,
        queue: u32,
        mut messages: Vec<Message>,
        producer: Option<ProducerSeq>,
    ) -> impl Future<Output = Result<Vec<SendAck>, ClientError>> + Send + 'static {
        // A message naming the send's own topic travels without it (the
        // broker reads an empty topic as the send's), as RocketMQ's batches
        // do: fewer bytes to encode, carry and check per message.
        for msg in &mut messages {
            if msg.topic == topic {
                msg.topic = String::new();
            }
        }
        let answer = self.request(Request::Send { topic: topic.into(), queue, messages, producer });
        let broker = self.broker_addr;
        async move {
            match answer.await? {
                Response::Sent(acks) => Ok(acks.into_iter().map(|a| SendAck::new(broker, a)).collect()),
                other => Err(unexpected(other)),
            }
        }
    }

    /// Reads from a queue; with `long_poll_ms > 0` the broker holds the
    /// request until a message arrives or the time is up.
    #[expect(clippy::too_many_arguments, reason = "mirrors the Pull request's fields; a public API kept as it is")]
    pub async fn pull(
        &self,
        topic: &str,
        queue: u32,
        offset: u64,
        max_messages: u32,
        max_bytes: u32,
        tags: Option<&str>,
        long_poll_ms: u64,
    ) -> Result<PullResult, ClientError> {
        self.pull_request(pull_body(topic, queue, offset, (max_messages, max_bytes), (tags, None), long_poll_ms)).await
    }

    /// [`Connection::pull`] with both filters: `(tags, sql)`.
    pub async fn pull_filtered(
        &self,
        topic: &str,
        queue: u32,
        offset: u64,
        max_messages: u32,
        filters: (Option<&str>, Option<&str>),
        long_poll_ms: u64,
    ) -> Result<PullResult, ClientError> {
        self.pull_request(pull_body(topic, queue, offset, (max_messages, 0), filters, long_poll_ms)).await
    }

    async fn pull_request(&self, body: Request) -> Result<PullResult, ClientError> {
        let long_poll_ms = match &body {
            Request::Pull { long_poll_ms, .. } => *long_poll_ms,
            _ => 0,
        };
        match self.request_with(body, Duration::from_millis(long_poll_ms)).await? {
            Response::Pulled(result) => Ok(result),
            other => Err(unexpected(other)),
        }
    }
}

fn pull_body(
    topic: &str,
    queue: u32,
    offset: u64,
    (max_messages, max_bytes): (u32, u32),
    (tags, sql): (Option<&str>, Option<&str>),
    long_poll_ms: u64,
) -> Request {
    Request::Pull {
        topic: topic.into(),
        queue,
        offset,
        max_messages,
        max_bytes,
        tags: tags.map(str::to_string),
        long_poll_ms,
        sql: sql.map(str::to_string),
    }
}

pub(crate) fn unexpected(response: Response) -> ClientError {
    ClientError::Protocol(format!("unexpected answer {response:?}"))
}

async fn read_loop(mut stream: FramedRead<tokio::net::tcp::OwnedReadHalf, FrameCodec>, shared: Arc<Shared>) {
    while let Some(Ok(frame)) = stream.next().await {
        match frame {
            Frame::Response { id, body } => {
                let waiter = shared.pending.lock().ok().and_then(|mut p| p.remove(&id));
                if let Some(waiter) = waiter {
                    let _ = waiter.tx.send(body.map_err(ClientError::Broker));
                }
            }
            Frame::Oneway { body } | Frame::Request { body, .. } => {
                let _ = shared.notices.send(body);
            }
        }
    }
    shared.fail_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A broker that says hello and then never answers.
    async fn mute_broker() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut len = [0u8; 4];
            socket.read_exact(&mut len).await.expect("hello length");
            let mut hello = vec![0u8; u32::from_be_bytes(len) as usize];
            socket.read_exact(&mut hello).await.expect("hello");
            let answer = Frame::Response {
                id: 0,
                body: Ok(Response::Hello { version: PROTOCOL_VERSION, broker: "127.0.0.1:1".into() }),
            };
            let bytes = brook_proto::codec::encode_frame(&answer).expect("encode");
            socket.write_all(&bytes).await.expect("write");
            let mut sink = vec![0u8; 4096];
            while socket.read(&mut sink).await.is_ok_and(|n| n > 0) {}
        });
        addr
    }

    #[tokio::test]
    async fn unanswered_requests_time_out_and_are_forgotten() {
        let addr = mute_broker().await;
        let conn = Connection::connect(&addr).await.expect("connect").with_timeout(Duration::from_millis(300));
        let started = Instant::now();
        let (a, b) = tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(conn.ping(), conn.ping()) })
            .await
            .expect("the sweep answers late requests");
        let waited = started.elapsed();
        for result in [a, b] {
            assert!(matches!(result, Err(ClientError::Timeout(limit)) if limit == Duration::from_millis(300)));
        }
        assert!(waited >= Duration::from_millis(300), "not before the limit: {waited:?}");
        assert!(waited < Duration::from_secs(5), "soon after it: {waited:?}");
        assert!(conn.shared.pending.lock().expect("lock").is_empty(), "expired requests leave nothing behind");
    }
}
