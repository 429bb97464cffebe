//! A connection's way out. A request on an idle connection (as the
//! connection judges it, and nothing queued here) is written by its caller
//! at once, on the caller's thread: waking the writer task for it cost a
//! lone synchronous send a task hop, and often a second thread's wake-up.
//! Anything else queues for the writer task, which gathers what waits into
//! one write, as pipelining and shared connections need.

use crate::error::ClientError;
use brook_proto::{Frame, FrameCodec, Outbound};
use bytes::BytesMut;
use futures::SinkExt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{Encoder, FramedWrite};

/// Items the writer task may hold before callers wait for room.
const QUEUE: usize = 4096;

/// The write side of one connection.
pub(crate) struct Outbox {
    /// Held (exclusively) through a caller's own write, and (shared) while
    /// an item enters the writer task's queue: the task never writes
    /// while a caller does, so bytes of two frames never interleave, and
    /// queueing callers do not wait for one another.
    choosing: RwLock<()>,
    /// Items handed to the writer task and not yet flushed by it, counted
    /// before they enter its queue: a caller writes itself only when there
    /// are none, so its frame follows every one sent before it.
    queued: Arc<AtomicUsize>,
    tx: mpsc::Sender<Outbound>,
    half: Arc<OwnedWriteHalf>,
    codec: FrameCodec,
}

impl Outbox {
    /// The way out through `half`, its writer task started; `on_fail` runs
    /// when the task stops on a failed write or once the outbox is gone.
    pub(crate) fn start(half: OwnedWriteHalf, codec: FrameCodec, on_fail: impl FnOnce() + Send + 'static) -> Self {
        let half = Arc::new(half);
        let (tx, rx) = mpsc::channel(QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let sink = FramedWrite::new(SharedHalf(half.clone()), codec.clone());
        let task_queued = queued.clone();
        tokio::spawn(async move {
            write_loop(sink, rx, &task_queued).await;
            on_fail();
        });
        Self { choosing: RwLock::new(()), queued, tx, half, codec }
    }

    /// Puts `frame` on its way: written here when the connection is `idle`
    /// and nothing is queued, else queued for the writer task. `Some` is
    /// an item the full queue could not take yet: hand it to
    /// [`Outbox::send_queued`].
    pub(crate) fn push(&self, frame: Frame, idle: bool) -> Result<Option<Outbound>, ClientError> {
        let frame = if idle {
            match self.choosing.try_write() {
                Ok(_own) if self.queued.load(Ordering::Acquire) == 0 => {
                    return match self.write_here(frame)? {
                        None => Ok(None),
                        // Queued before the lock goes, so no caller writes
                        // ahead of the rest; the queue was empty, so it
                        // has room.
                        Some(rest) => self.enqueue(rest),
                    };
                }
                _ => frame,
            }
        } else {
            frame
        };
        let _queueing = self.choosing.read().map_err(|_| ClientError::Connection("poisoned".into()))?;
        self.enqueue(Outbound::Frame(frame))
    }

    fn enqueue(&self, item: Outbound) -> Result<Option<Outbound>, ClientError> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(item) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Full(item)) => Ok(Some(item)),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued.fetch_sub(1, Ordering::AcqRel);
                Err(ClientError::Connection("connection closed".into()))
            }
        }
    }

    /// Writes `frame` on this thread (the caller holds `choosing`
    /// exclusively and nothing is queued); what the socket did not take
    /// is returned for the writer task, which then writes it first.
    fn write_here(&self, frame: Frame) -> Result<Option<Outbound>, ClientError> {
        let mut bytes = BytesMut::new();
        self.codec.clone().encode(frame, &mut bytes).map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        let stream: &TcpStream = (*self.half).as_ref();
        match stream.try_write(&bytes) {
            Ok(n) if n == bytes.len() => Ok(None),
            Ok(n) => Ok(Some(Outbound::Encoded(bytes.split_off(n).freeze()))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Some(Outbound::Encoded(bytes.freeze()))),
            Err(e) => Err(ClientError::Connection(e.to_string())),
        }
    }

    /// Queues an item [`Outbox::push`] could not, once there is room,
    /// waiting up to `limit`. An item that never enters the queue is no
    /// longer counted.
    pub(crate) async fn send_queued(&self, item: Outbound, limit: Duration) -> Result<(), ClientError> {
        let queued = match tokio::time::timeout(limit, self.tx.send(item)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => Err(ClientError::Connection("connection closed".into())),
            Err(_) => Err(ClientError::Timeout(limit)),
        };
        self.queued.fetch_sub(1, Ordering::AcqRel);
        queued
    }
}

async fn write_loop(
    mut sink: FramedWrite<SharedHalf, FrameCodec>,
    mut rx: mpsc::Receiver<Outbound>,
    queued: &AtomicUsize,
) {
    while let Some(item) = rx.recv().await {
        let mut taken = 1;
        let mut ok = sink.feed(item).await.is_ok();
        // Let other callers queue their requests so one write carries many.
        tokio::task::yield_now().await;
        while ok {
            match rx.try_recv() {
                Ok(item) => {
                    taken += 1;
                    ok = sink.feed(item).await.is_ok();
                }
                Err(_) => break,
            }
        }
        if !ok || SinkExt::<Outbound>::flush(&mut sink).await.is_err() {
            break;
        }
        queued.fetch_sub(taken, Ordering::AcqRel);
    }
}

/// The write half shared by callers and the writer task; the task writes
/// through it as through the half itself. The last one dropped shuts the
/// write direction.
struct SharedHalf(Arc<OwnedWriteHalf>);

impl SharedHalf {
    fn poll_with(
        &self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        let stream: &TcpStream = (*self.0).as_ref();
        loop {
            ready!(stream.poll_write_ready(cx))?;
            match write(stream) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }
}

impl AsyncWrite for SharedHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_with(cx, |stream| stream.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_with(cx, |stream| stream.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_proto::{Message, Request};
    use futures::StreamExt;
    use std::sync::atomic::AtomicBool;
    use tokio::net::TcpListener;
    use tokio_util::codec::FramedRead;

    /// Callers writing their own frames and the writer task writing queued
    /// ones share one socket: with the peer not reading, the socket fills,
    /// callers' writes are cut short and handed on. Every frame must still
    /// arrive whole, and each caller's in the order it pushed them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn frames_arrive_whole_and_in_order_when_the_socket_fills() {
        const TASKS: u64 = 4;
        const FRAMES: u64 = 150;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (peer, _) = listener.accept().await.expect("accept");
        let (_read, write) = client.into_split();
        let failed = Arc::new(AtomicBool::new(false));
        let on_fail = {
            let failed = failed.clone();
            move || failed.store(true, Ordering::SeqCst)
        };
        let out = Arc::new(Outbox::start(write, FrameCodec::default(), on_fail));
        let mut pushers = Vec::new();
        for task in 0..TASKS {
            let out = out.clone();
            pushers.push(tokio::spawn(async move {
                for i in 0..FRAMES {
                    let messages = vec![Message::new("t", vec![b'x'; 20_000 + (i as usize * 7) % 5000])];
                    let body = Request::Send { topic: "t".into(), queue: 0, messages, producer: None };
                    let frame = Frame::Request { id: task << 32 | i, body };
                    if let Some(item) = out.push(frame, i % 3 != 0).expect("push") {
                        out.send_queued(item, std::time::Duration::from_secs(20)).await.expect("queued");
                    }
                    if i % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
        // The peer starts reading only once the socket is full.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut frames = FramedRead::new(peer, FrameCodec::default());
        let mut next = vec![0u64; TASKS as usize];
        for _ in 0..TASKS * FRAMES {
            let frame = tokio::time::timeout(std::time::Duration::from_secs(20), frames.next())
                .await
                .expect("in time")
                .expect("a frame")
                .expect("a whole frame");
            let Frame::Request { id, .. } = frame else { panic!("{frame:?}") };
            let (task, i) = ((id >> 32) as usize, id & 0xffff_ffff);
            assert_eq!(i, next[task], "task {task}'s frames in order");
            next[task] += 1;
        }
        for pusher in pushers {
            pusher.await.expect("pusher");
        }
        assert!(!failed.load(Ordering::SeqCst));
    }
}
