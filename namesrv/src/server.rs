//! The name server's network side: the accept loop, one task per
//! connection (a hello first, then requests answered in order), the
//! expiry scan, and the answer to each request. Bad input — garbage,
//! oversized frames, bogus registrations — gets a clear error and changes
//! nothing.

use crate::config::NamesrvConfig;
use crate::controller::Controller;
use crate::table::RouteTable;
use brook_proto::controller::ControllerRequest;
use brook_proto::names::validate_name;
use brook_proto::route::{BrokerRegistration, PERM_READ_WRITE};
use brook_proto::{CodecError, ErrorCode, Frame, FrameCodec, Request, Response, WireError, PROTOCOL_VERSION};
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::codec::{FramedRead, FramedWrite};

/// How long a new connection has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most queues a registered topic may have (per replica set): what a
/// broker allows.
const MAX_QUEUES: u32 = brook::config::MAX_QUEUES_PER_TOPIC;

/// A name server's shared state.
pub struct NameServer {
    table: Mutex<RouteTable>,
    config: NamesrvConfig,
    /// The address it answers hellos with.
    addr: String,
    next_conn: AtomicU64,
    /// The controller voter here, if this name server runs one.
    controller: Option<Arc<Controller>>,
    logger: slog::Logger,
}

impl NameServer {
    /// A name server with an empty table.
    pub fn new(
        config: NamesrvConfig,
        addr: SocketAddr,
        controller: Option<Arc<Controller>>,
        logger: slog::Logger,
    ) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(RouteTable::default()),
            config,
            addr: addr.to_string(),
            next_conn: AtomicU64::new(1),
            controller,
            logger,
        })
    }

    /// Drops brokers not heard from within `broker_expiry_ms`, every
    /// `scan_interval_ms`, until shutdown.
    pub async fn expire_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let expiry = Duration::from_millis(self.config.broker_expiry_ms);
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.scan_interval_ms));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let gone = self.table.lock().expire(Instant::now(), expiry);
            for (name, id) in gone {
                slog::warn!(self.logger, "broker expired: no registration in time";
                    "broker_name" => name, "broker_id" => id, "expiry_ms" => self.config.broker_expiry_ms);
            }
        }
    }

    /// Accepts connections until shutdown.
    pub async fn accept_loop(self: Arc<Self>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.changed() => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(self.clone().serve(stream, peer));
                }
                Err(e) => {
                    slog::warn!(self.logger, "accept failed"; "error" => %e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// One connection: a hello, then requests, answered in order.
    async fn serve(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (read, write) = stream.into_split();
        let codec = FrameCodec::new(self.config.max_frame_bytes);
        let mut frames = FramedRead::new(read, codec.clone());
        let mut out = FramedWrite::new(write, codec);
        if !self.hello(&mut frames, &mut out).await {
            return;
        }
        while let Some(frame) = frames.next().await {
            let answer = match frame {
                Ok(Frame::Request { id, body: Request::Controller(request) }) => {
                    Frame::Response { id, body: self.ask_controller(request).await }
                }
                Ok(Frame::Request { id, body }) => Frame::Response { id, body: self.answer(conn, body) },
                Ok(Frame::Oneway { body }) => {
                    let _ = self.answer(conn, body);
                    continue;
                }
                Ok(Frame::Response { .. }) => continue,
                Err(e) => {
                    if !matches!(e, CodecError::Io(_)) {
                        slog::info!(self.logger, "closing connection after a bad frame"; "peer" => %peer, "error" => %e);
                        let _ = out.send(codec_error(&e)).await;
                    }
                    break;
                }
            };
            if out.send(answer).await.is_err() {
                break;
            }
        }
        for (name, id) in self.table.lock().connection_closed(conn) {
            slog::warn!(self.logger, "broker's connection closed: dropped from routes";
                "broker_name" => name, "broker_id" => id, "peer" => %peer);
        }
    }

    async fn hello(
        &self,
        frames: &mut FramedRead<tokio::net::tcp::OwnedReadHalf, FrameCodec>,
        out: &mut FramedWrite<tokio::net::tcp::OwnedWriteHalf, FrameCodec>,
    ) -> bool {
        let refusal = match tokio::time::timeout(HELLO_TIMEOUT, frames.next()).await {
            Ok(Some(Ok(Frame::Request { id, body: Request::Hello { version, .. } }))) => {
                if version == PROTOCOL_VERSION {
                    let hello = Response::Hello { version: PROTOCOL_VERSION, broker: self.addr.clone() };
                    return out.send(Frame::Response { id, body: Ok(hello) }).await.is_ok();
                }
                let why =
                    format!("protocol version {version} is not supported; this name server speaks {PROTOCOL_VERSION}");
                Frame::Response { id, body: Err(WireError::new(ErrorCode::UnsupportedVersion, why)) }
            }
            Ok(Some(Ok(Frame::Request { id, .. }))) => Frame::Response {
                id,
                body: Err(WireError::new(ErrorCode::HelloRequired, "the first frame must be a hello")),
            },
            Ok(Some(Ok(_))) => Frame::Response {
                id: 0,
                body: Err(WireError::new(ErrorCode::HelloRequired, "the first frame must be a hello")),
            },
            Ok(Some(Err(e))) => codec_error(&e),
            Ok(None) | Err(_) => return false,
        };
        let _ = out.send(refusal).await;
        false
    }

    /// A controller request: answered by the controller voter here (which
    /// forwards to its leader).
    async fn ask_controller(&self, request: ControllerRequest) -> Result<Response, WireError> {
        match &self.controller {
            Some(controller) => controller.handle(request).await.map(Response::Controller),
            None => Err(WireError::new(ErrorCode::ControllerUnavailable, "this name server runs no controller")),
        }
    }

    /// The answer to one request.
    fn answer(&self, conn: u64, request: Request) -> Result<Response, WireError> {
        match request {
            Request::RegisterBroker(registration) => {
                check_registration(&registration)?;
                let (name, id, addr) =
                    (registration.broker_name.clone(), registration.broker_id, registration.addr.clone());
                let topics = registration.topics.len();
                match self.table.lock().register(*registration, conn) {
                    Ok(true) => slog::info!(self.logger, "broker registered";
                        "broker_name" => name, "broker_id" => id, "addr" => addr, "topics" => topics),
                    Ok(false) => {}
                    Err(why) => return Err(WireError::new(ErrorCode::Fenced, why)),
                }
                Ok(Response::Done)
            }
            Request::UnregisterBroker { broker_name, broker_id, .. } => {
                if self.table.lock().unregister(&broker_name, broker_id) {
                    slog::info!(self.logger, "broker unregistered"; "broker_name" => broker_name, "broker_id" => broker_id);
                }
                Ok(Response::Done)
            }
            Request::GetRoute { topic } => {
                validate_name("topic", &topic).map_err(|e| WireError::new(ErrorCode::InvalidName, e))?;
                match self.table.lock().route(&topic) {
                    Some(route) => Ok(Response::Route(route)),
                    None => Err(WireError::new(ErrorCode::TopicNotFound, format!("no broker holds topic {topic:?}"))),
                }
            }
            Request::GetClusterInfo => Ok(Response::Cluster(self.table.lock().cluster(Instant::now()))),
            Request::ListTopics => Ok(Response::Topics(self.table.lock().topics())),
            Request::Ping => Ok(Response::Pong),
            Request::Hello { .. } => Err(WireError::new(ErrorCode::InvalidArgument, "hello was already received")),
            _ => Err(WireError::new(ErrorCode::NotSupported, "this is a name server; ask a broker")),
        }
    }
}

/// Refuses a registration that names something invalid: nothing of it is
/// recorded.
fn check_registration(reg: &BrokerRegistration) -> Result<(), WireError> {
    let invalid = |e: String| WireError::new(ErrorCode::InvalidArgument, e);
    validate_name("cluster", &reg.cluster).map_err(invalid)?;
    validate_name("broker", &reg.broker_name).map_err(invalid)?;
    reg.addr
        .parse::<SocketAddr>()
        .map_err(|e| invalid(format!("broker address {:?} is not host:port: {e}", reg.addr)))?;
    if reg.version.len() > 64 {
        return Err(invalid("version is longer than 64 bytes".into()));
    }
    for topic in &reg.topics {
        validate_name("topic", &topic.name).map_err(invalid)?;
        let queues_ok = |q: u32| (1..=MAX_QUEUES).contains(&q);
        if !queues_ok(topic.write_queues) || !queues_ok(topic.read_queues) || topic.perm & !PERM_READ_WRITE != 0 {
            return Err(invalid(format!(
                "topic {:?}: queues must be 1..={MAX_QUEUES} and perm a subset of {PERM_READ_WRITE}",
                topic.name
            )));
        }
    }
    Ok(())
}

fn codec_error(e: &CodecError) -> Frame {
    let code = match e {
        CodecError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        _ => ErrorCode::MalformedFrame,
    };
    Frame::Response { id: 0, body: Err(WireError::new(code, e.to_string())) }
}
