//! The accept loop. Connections are capped by a semaphore (beyond
//! `max_connections` the loop waits for one to close), served where
//! [`Homes`] has room, and tracked so shutdown can wait for all of them.
//! A failed accept is logged and retried with backoff; the loop keeps going.

use crate::metrics::Held;
use crate::server::connection;
use crate::server::BrokerCore;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

/// Where connections are served. The log writer's thread (which the queues
/// share) takes them first, up to `server.writer_connections`: a send read
/// there is stored and answered without a thread hop, where one read on a
/// pool thread wakes the writer's, and on these hosts such a wake-up costs
/// more than the rest of a small send (BENCHMARKS.md, "A sixth sitting").
/// The pool (`server.workers` threads) takes the rest, and every request
/// but sends and pulls (which read the log in place or park), so queries
/// and admin work never hold up the writer; it also checks and encodes the
/// pipelined or batched sends read on the writer's thread (`send_group`).
pub struct Homes {
    /// The connection pool.
    pub pool: tokio::runtime::Handle,
    /// The writer's thread, and how many more connections it takes.
    pub writer: Option<(actix::ArbiterHandle, Arc<Semaphore>)>,
}

impl Homes {
    /// Serves a connection on the writer's thread if it has room, on the
    /// pool if not: `connection(place)` is its task, `place` its place on
    /// the writer's thread (none: on the pool).
    fn serve<F: Future<Output = ()> + Send + 'static>(
        &self,
        core: &Arc<BrokerCore>,
        connection: impl FnOnce(Option<WriterPlace>) -> F,
    ) {
        let room =
            self.writer.as_ref().and_then(|(thread, room)| Some((thread, room.clone().try_acquire_owned().ok()?)));
        let Some((thread, room)) = room else {
            self.pool.spawn(connection(None));
            return;
        };
        let place = WriterPlace { _room: room, _counted: Held::new(&core.metrics, |m| &m.writer_connections) };
        // A stopped arbiter (the broker shutting down) drops the connection.
        thread.spawn(connection(Some(place)));
    }
}

/// A connection's place on the writer's thread, given back when dropped
/// (the connection ended, or moved to the pool).
pub struct WriterPlace {
    _room: OwnedSemaphorePermit,
    _counted: Held,
}

/// Runs until `shutdown` turns true. Each connection holds a clone of
/// `done`; when every clone is dropped, every connection has ended.
pub async fn run(
    listener: TcpListener,
    core: Arc<BrokerCore>,
    homes: Homes,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let limit = Arc::new(Semaphore::new(core.config.server.max_connections));
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(5);
                pair
            }
            Err(e) => {
                slog::warn!(core.logger, "accept failed"; "error" => %e, "retry_in_ms" => backoff.as_millis() as u64);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                slog::warn!(core.logger, "cannot hand over connection"; "peer" => %peer, "error" => %e);
                continue;
            }
        };
        let (theirs, shutdown, done) = (core.clone(), shutdown.clone(), done.clone());
        let task = move |place| async move {
            let core = theirs;
            let _permit = permit;
            let _done = done;
            match tokio::net::TcpStream::from_std(std_stream) {
                Ok(stream) => connection::serve(stream, peer, core, shutdown, place).await,
                Err(e) => {
                    slog::warn!(core.logger, "cannot adopt connection"; "peer" => %peer, "error" => %e)
                }
            }
        };
        homes.serve(&core, task);
    }
}
