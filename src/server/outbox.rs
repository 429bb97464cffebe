//! A connection's write side: the task that writes its answers and
//! notices ([`write_loop`]) and what it waits on ([`Outbox`]): frames from
//! request tasks and group notices, and the sends the read loop handed to
//! the queues. It can stop between writes and hand its state back, for the
//! connection to go on on another thread.

use crate::server::handlers::Reply;
use crate::server::wire::Wire;
use brook_proto::{BrokerCodec, CodecError, Frame, Outbound};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, SinkExt, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, Notify};
use tokio_util::codec::FramedWrite;

/// Sends handed to the queues, answered (request id and answer) once stored.
pub type PendingSends = Pin<Box<dyn Future<Output = Vec<(Option<u64>, Reply)>> + Send>>;

/// Something for the writer to write.
enum Ready {
    Frame(Outbound),
    Answers(Vec<(Option<u64>, Reply)>),
}

/// What the connection's writer waits on: frames from request tasks and
/// group notices, and the sends the read loop handed to the queues.
pub struct Outbox {
    frames: mpsc::Receiver<Outbound>,
    sends: mpsc::UnboundedReceiver<PendingSends>,
    sends_open: bool,
    waiting: FuturesUnordered<PendingSends>,
}

impl Outbox {
    /// An outbox over the channels of frames and of sends.
    pub fn new(frames: mpsc::Receiver<Outbound>, sends: mpsc::UnboundedReceiver<PendingSends>) -> Self {
        Self { frames, sends, sends_open: true, waiting: FuturesUnordered::new() }
    }

    /// The next thing to write; `None` once every sender is gone and every
    /// waiting send is answered.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Ready>> {
        // Frames first: the hello's answer must lead, before any send read
        // after it is answered. They cannot hold the sends back for long:
        // all but the rare group notice answer a request holding a permit,
        // and the read loop stops taking requests when permits run out.
        let frames_open = match self.frames.poll_recv(cx) {
            Poll::Ready(Some(frame)) => return Poll::Ready(Some(Ready::Frame(frame))),
            Poll::Ready(None) => false,
            Poll::Pending => true,
        };
        while self.sends_open {
            match self.sends.poll_recv(cx) {
                Poll::Ready(Some(pending)) => self.waiting.push(pending),
                Poll::Ready(None) => self.sends_open = false,
                Poll::Pending => break,
            }
        }
        match self.waiting.poll_next_unpin(cx) {
            Poll::Ready(Some(answers)) => Poll::Ready(Some(Ready::Answers(answers))),
            _ if !frames_open && !self.sends_open && self.waiting.is_empty() => Poll::Ready(None),
            _ => Poll::Pending,
        }
    }

    async fn next(&mut self) -> Option<Ready> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }
}

/// The write side of a connection's socket.
pub type Sink = FramedWrite<tokio::net::tcp::OwnedWriteHalf, BrokerCodec>;

/// How a write loop ended.
pub enum Ended {
    /// Every sender is gone and everything is written, or the socket failed.
    Closed,
    /// Stopped when asked, between writes: the sink (nothing buffered in
    /// it) and the outbox, for a write loop elsewhere to go on with.
    Stopped(Sink, Outbox),
}

/// Writes answers as they come, flushing only when no more are waiting, so
/// many answers share one syscall under load. Lone sends' answers may be
/// written directly meanwhile (see [`Wire`]) while this waits idle. Stops
/// at its next wait for work once `stop` is notified.
pub async fn write_loop(mut sink: Sink, mut outbox: Outbox, wire: Option<Arc<Wire>>, stop: Arc<Notify>) -> Ended {
    if write_all(&mut sink, &mut outbox, wire.as_deref(), &stop).await {
        return Ended::Stopped(sink, outbox);
    }
    if let Some(wire) = &wire {
        wire.close();
    }
    let _ = sink.close().await;
    Ended::Closed
}

/// Writes until the outbox closes or the socket fails (false), or `stop`
/// is notified (true).
async fn write_all(sink: &mut Sink, outbox: &mut Outbox, wire: Option<&Wire>, stop: &Notify) -> bool {
    loop {
        // Between writes: nothing is buffered and, after the first flush,
        // the wire is idle, so the socket can change hands here.
        let ready = tokio::select! {
            biased;
            () = stop.notified() => return true,
            ready = outbox.next() => ready,
        };
        let Some(ready) = ready else {
            return false;
        };
        if let Some(rest) = wire.and_then(Wire::take_turn) {
            if tokio::io::AsyncWriteExt::write_all(sink.get_mut(), &rest).await.is_err() {
                return false;
            }
        }
        let from_task = matches!(ready, Ready::Frame(_));
        if feed(sink, ready).await.is_err() {
            return false;
        }
        // Give the request tasks woken with this one a turn to queue their
        // answers too: one writev then carries them all (on loopback each
        // write also pays for the receiver's TCP processing). Sends need no
        // turn: those answered together are ready here together.
        if from_task {
            tokio::task::yield_now().await;
        }
        while let Some(Some(ready)) = outbox.next().now_or_never() {
            if feed(sink, ready).await.is_err() {
                return false;
            }
        }
        if sink.flush().await.is_err() {
            return false;
        }
        // Everything taken so far is in the socket (the hello's answer
        // first: nothing is written directly before it).
        if let Some(wire) = wire {
            wire.set_idle();
        }
    }
}

async fn feed(sink: &mut Sink, ready: Ready) -> Result<(), CodecError> {
    match ready {
        Ready::Frame(frame) => sink.feed(frame).await,
        Ready::Answers(answers) => {
            for (id, body) in answers {
                if let Some(id) = id {
                    sink.feed(Frame::Response { id, body }.into()).await?;
                }
            }
            Ok(())
        }
    }
}
