//! One client connection. Frames are read and decoded here; the first must
//! be a hello with a known protocol version. Each later request runs as its
//! own task — except sends: those read in one turn are handed to the queues
//! right here, in arrival order and one batch per queue (fewer hops per
//! message under pipelining), and the connection's writer waits for their
//! answers itself — so a connection has many requests in flight and answers
//! leave in completion order, each tagged with its request id. The single
//! writer task batches answers into the socket and flushes when it runs out
//! of work. The connection may be served on the log writer's thread (see
//! `listener::Homes`); its request tasks other than pulls run on the pool.
//!
//! A lone send — the only request in flight on its connection — is
//! answered by whoever has its placements first (the log writer's thread,
//! most often), straight into the socket when the writer task is idle
//! ([`Wire`]): that spares the answer a wake-up of the connection's thread.
//!
//! Oversized or undecodable frames get one error answer (id 0) and the
//! connection is closed: after them the byte stream cannot be trusted. A
//! send's messages are decoded later, in place, by the send path; a send
//! whose frame is whole but whose fields do not decode is refused on its own
//! id and the connection goes on. None of this touches stored data.

use crate::actors::consumer_group::ClientHandle;
use crate::server::context::{BrokerCore, ConnInfo};
use crate::server::dispatch;
use crate::server::handlers::send::{SendBody, SendRequest};
use crate::server::listener::WriterPlace;
use crate::server::outbox::{write_loop, Ended, Outbox, PendingSends, Sink};
use crate::server::send_group::SendGroup;
use crate::server::wire::Wire;
use brook_proto::{
    BrokerCodec, CodecError, ErrorCode, Frame, Incoming, Outbound, Request, Response, WireError, PROTOCOL_VERSION,
};
use futures::{FutureExt, StreamExt};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite};

/// Most requests one connection may have in flight; past it, reading pauses.
const MAX_IN_FLIGHT: usize = 4096;
/// Most frames taken from the read buffer in one turn.
const MAX_GATHER: usize = 256;
/// How long a new connection has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

fn error_frame(id: u64, code: ErrorCode, message: String) -> Outbound {
    Frame::Response { id, body: Err(WireError::new(code, message)) }.into()
}

/// The connection's read side.
type Frames = FramedRead<tokio::net::tcp::OwnedReadHalf, BrokerCodec>;

/// The socket's read side as frames, its write side as a sink.
fn framed(stream: TcpStream, max_frame: usize) -> (Frames, Sink) {
    let (read_half, write_half) = stream.into_split();
    (FramedRead::new(read_half, BrokerCodec::new(max_frame)), FramedWrite::new(write_half, BrokerCodec::new(max_frame)))
}

/// Serves one connection until EOF, a broken frame, or shutdown. `place`:
/// its place on the log writer's thread, if it is served there; one that
/// keeps pipelining or batching gives it up and goes on on the pool.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    core: Arc<BrokerCore>,
    shutdown: watch::Receiver<bool>,
    place: Option<WriterPlace>,
) {
    let _open = crate::metrics::Held::new(&core.metrics, |m| &m.connections);
    let _ = stream.set_nodelay(true);
    let max_frame = core.config.server.max_frame_bytes;
    // A second descriptor for direct answers; without one (out of
    // descriptors) every answer goes through the writer task.
    let wire = std::os::fd::AsFd::as_fd(&stream)
        .try_clone_to_owned()
        .ok()
        .map(|fd| Arc::new(Wire::new(std::net::TcpStream::from(fd), max_frame)));
    let (mut frames, sink) = framed(stream, max_frame);
    let (tx, rx) = mpsc::channel::<Outbound>(1024);
    // Unbounded: the permits bound how many sends wait.
    let (sends_tx, sends_rx) = mpsc::unbounded_channel();
    let stop = Arc::new(Notify::new());
    let writer = tokio::spawn(write_loop(sink, Outbox::new(rx, sends_rx), wire.clone(), stop.clone()));
    let logger = core.logger.new(slog::o!("peer" => peer.to_string()));
    let Some(info) = hello(&mut frames, &core, peer, &tx).await else {
        drop((tx, sends_tx));
        let _ = writer.await;
        return;
    };
    slog::debug!(logger, "connection open"; "client_id" => &info.client.client_id);
    let info = Arc::new(info);
    let offload_to = place.is_some().then(|| core.pool.clone());
    let mut reader = Reader {
        core,
        info,
        tx,
        sends_tx,
        permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        tasks: JoinSet::new(),
        sends: SendGroup::new(offload_to),
        wire,
        max_frame,
        logger,
    };
    if let Read::Ended = reader.read_loop(&mut frames, shutdown.clone()).await {
        return reader.close(Some(writer)).await;
    }
    // Pipelining or batching: the writer's thread would spend its turns on
    // this connection's socket. Its writer stops between writes, and the
    // socket (nothing of it read and left undecoded) goes on on the pool.
    stop.notify_one();
    let Ok(Ended::Stopped(sink, outbox)) = writer.await else {
        return reader.close(None).await;
    };
    let socket = match frames.into_inner().reunite(sink.into_inner()).map(TcpStream::into_std) {
        Ok(Ok(socket)) => socket,
        _ => return reader.close(None).await,
    };
    slog::debug!(reader.logger, "connection moves off the writer's thread");
    let pool = reader.core.pool.clone();
    let moved = pool.spawn(reader.go_on(socket, outbox, shutdown));
    drop(place);
    let _ = moved.await;
}

/// Waits for the hello and answers it; the connection's facts if it was one
/// with a known version.
async fn hello(
    frames: &mut Frames,
    core: &BrokerCore,
    peer: SocketAddr,
    tx: &mpsc::Sender<Outbound>,
) -> Option<ConnInfo> {
    let refusal = match tokio::time::timeout(HELLO_TIMEOUT, frames.next()).await {
        Ok(Some(Ok(Incoming::Frame(Frame::Request { id, body: Request::Hello { version, client_id } })))) => {
            if version == PROTOCOL_VERSION {
                let hello = Response::Hello { version: PROTOCOL_VERSION, broker: core.advertised.to_string() };
                let _ = tx.send(Frame::Response { id, body: Ok(hello) }.into()).await;
                let conn_id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
                let client = ClientHandle { conn_id, client_id, notify: tx.clone() };
                return Some(ConnInfo {
                    peer,
                    client,
                    in_group: AtomicBool::new(false),
                    producer: AtomicBool::new(false),
                });
            }
            let why = format!("protocol version {version} is not supported; this broker speaks {PROTOCOL_VERSION}");
            error_frame(id, ErrorCode::UnsupportedVersion, why)
        }
        Ok(Some(Ok(frame))) => {
            let id = match frame {
                Incoming::Frame(Frame::Request { id, .. }) | Incoming::Send { id: Some(id), .. } => id,
                _ => 0,
            };
            error_frame(id, ErrorCode::HelloRequired, "the first frame must be a hello".into())
        }
        Ok(Some(Err(e))) => codec_error_frame(&e),
        Ok(None) | Err(_) => return None,
    };
    let _ = tx.send(refusal).await;
    None
}

/// What the read loop works with once the hello is done.
struct Reader {
    core: Arc<BrokerCore>,
    info: Arc<ConnInfo>,
    /// Answers and notices for the writer.
    tx: mpsc::Sender<Outbound>,
    /// Sends handed to the queues, for the writer to await.
    sends_tx: mpsc::UnboundedSender<PendingSends>,
    /// Bound the requests in flight.
    permits: Arc<Semaphore>,
    tasks: JoinSet<()>,
    sends: SendGroup,
    /// The socket as direct answers write it.
    wire: Option<Arc<Wire>>,
    max_frame: usize,
    logger: slog::Logger,
}

/// How a read loop ended.
enum Read {
    /// EOF, a broken frame, or shutdown.
    Ended,
    /// The connection pipelines or batches: it had better move to the pool.
    Busy,
}

/// Whether the read loop goes on after a frame.
enum Flow {
    Continue,
    Stop,
}

impl Reader {
    /// Reads frames until EOF, a broken frame or shutdown, taking every
    /// frame already read along with each: their sends are stored together.
    async fn read_loop(&mut self, frames: &mut Frames, mut shutdown: watch::Receiver<bool>) -> Read {
        loop {
            let next = tokio::select! {
                next = frames.next() => next,
                _ = shutdown.changed() => break,
            };
            // Reap finished request tasks so the set does not grow.
            while self.tasks.try_join_next().is_some() {}
            let mut next = Some(next);
            let mut taken = 0;
            while let Some(frame) = next.take() {
                taken += 1;
                if let Flow::Stop = self.take(frame).await {
                    self.hand_on();
                    return Read::Ended;
                }
                if taken < MAX_GATHER {
                    next = frames.next().now_or_never();
                }
            }
            self.hand_on();
            // Only with nothing read and left undecoded: a reader over the
            // moved socket starts from an empty buffer.
            if self.sends.wants_pool() && frames.read_buffer().is_empty() {
                return Read::Busy;
            }
        }
        self.hand_on();
        Read::Ended
    }

    /// Serves the connection on from here (the pool), over `socket` (none
    /// of it read and left undecoded), with the writer's `outbox`.
    async fn go_on(mut self, socket: std::net::TcpStream, outbox: Outbox, shutdown: watch::Receiver<bool>) {
        let stream = match TcpStream::from_std(socket) {
            Ok(stream) => stream,
            Err(e) => {
                slog::warn!(self.logger, "cannot move connection"; "error" => %e);
                return self.close(None).await;
            }
        };
        let (mut frames, sink) = framed(stream, self.max_frame);
        let writer = tokio::spawn(write_loop(sink, outbox, self.wire.clone(), Arc::new(Notify::new())));
        self.sends.served_by_pool();
        self.read_loop(&mut frames, shutdown).await;
        self.close(Some(writer)).await;
    }

    /// Handles one frame off the wire: a send joins the gathered group, any
    /// other request runs as its own task.
    async fn take(&mut self, frame: Option<Result<Incoming, CodecError>>) -> Flow {
        let (id, work) = match frame {
            Some(Ok(Incoming::Send { id, body })) => (id, Work::Send(SendBody::Wire(body))),
            Some(Ok(Incoming::Frame(Frame::Request { id, body }))) => (Some(id), Work::of(body)),
            Some(Ok(Incoming::Frame(Frame::Oneway { body }))) => (None, Work::of(body)),
            // Answers to broker-initiated requests; none are awaited.
            Some(Ok(Incoming::Frame(Frame::Response { .. }))) => return Flow::Continue,
            Some(Err(e)) => {
                if !matches!(e, CodecError::Io(_)) {
                    slog::info!(self.logger, "closing connection after a bad frame"; "error" => %e);
                    let _ = self.tx.send(codec_error_frame(&e)).await;
                }
                return Flow::Stop;
            }
            None => return Flow::Stop,
        };
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Full: the gathered sends hold permits, so they go first.
                self.hand_on();
                match self.permits.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return Flow::Stop,
                }
            }
        };
        match work {
            Work::Send(body) => self.sends.push(SendRequest { id, body }, permit),
            Work::Other(body) => {
                // Keep arrival order: sends read before this request are
                // handed on first.
                self.hand_on();
                let (core, info, tx, max_frame) =
                    (self.core.clone(), self.info.clone(), self.tx.clone(), self.max_frame);
                // A pull runs where its connection is served: it reads the
                // log in place (a cold read goes to the blocking pool) or
                // parks, and a hop to the pool and back cost a consumer
                // keeping up ~70 µs of its latency. Anything else runs on
                // the pool: an admin request or a query must not hold up a
                // connection served on the writer's thread.
                let here = matches!(body, Request::Pull { .. });
                let task = async move {
                    let answer = dispatch::handle(&core, &info, body).await;
                    if let Some(id) = id {
                        let _ = tx.send(answer.framed(id, max_frame)).await;
                    }
                    drop(permit);
                };
                if here {
                    self.tasks.spawn(task);
                } else {
                    self.tasks.spawn_on(task, &self.core.pool);
                }
            }
        }
        Flow::Continue
    }

    fn hand_on(&mut self) {
        // Lone: one send, awaited, and nothing else in flight here.
        let lone = self.sends.is_one_awaited() && self.permits.available_permits() == MAX_IN_FLIGHT - 1;
        let wire = self.wire.as_ref().filter(|_| lone && !self.core.replication.is_sync());
        self.sends.hand_on((&self.core, &self.info), &self.sends_tx, wire);
    }

    /// Lets requests already accepted finish briefly, tells the groups the
    /// connection is gone, and closes the writer.
    async fn close(mut self, writer: Option<tokio::task::JoinHandle<Ended>>) {
        let drained =
            tokio::time::timeout(DRAIN_TIMEOUT, async { while self.tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            self.tasks.abort_all();
        }
        if self.info.in_group.load(Ordering::Relaxed) {
            self.core.groups.connection_closed(self.info.client.conn_id);
        }
        if self.info.producer.load(Ordering::Relaxed) {
            self.core.metrics.producer_connections.fetch_sub(1, Ordering::Relaxed);
        }
        // The writer ends once every sender is gone, including the one group
        // actors hold for notices, and the sends it waits for are answered;
        // closing it here does not wait for them.
        // The send group too: the task preparing its big groups on the pool
        // holds a sender, and ends once its queue closes.
        let Reader { tx, sends_tx, info, sends, logger, .. } = self;
        drop((tx, sends_tx, info, sends));
        if let Some(mut writer) = writer {
            if tokio::time::timeout(DRAIN_TIMEOUT, &mut writer).await.is_err() {
                writer.abort();
            }
        }
        slog::debug!(logger, "connection closed");
    }
}

/// A request as the read loop hands it on: sends are gathered, the rest
/// run on their own.
enum Work {
    Send(SendBody),
    Other(Request),
}

impl Work {
    fn of(request: Request) -> Self {
        match request {
            Request::Send { topic, queue, messages, producer } => {
                Work::Send(SendBody::Owned { topic, queue, messages, producer })
            }
            other => Work::Other(other),
        }
    }
}

fn codec_error_frame(e: &CodecError) -> Outbound {
    match e {
        CodecError::TooLarge { .. } => error_frame(0, ErrorCode::FrameTooLarge, e.to_string()),
        _ => error_frame(0, ErrorCode::MalformedFrame, e.to_string()),
    }
}
