//! The accept loop. Connections are capped by a semaphore (beyond
//! `max_connections` the loop waits for one to close), spawned on the
//! connection runtime, and tracked so shutdown can wait for all of them.
//! A failed accept is logged and retried with backoff; the loop keeps going.

use crate::server::connection;
use crate::server::BrokerCore;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

/// Runs until `shutdown` turns true. Each connection holds a clone of
/// `done`; when every clone is dropped, every connection has ended.
pub async fn run(
    listener: TcpListener,
    core: Arc<BrokerCore>,
    connections: tokio::runtime::Handle,
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
        let core = core.clone();
        let shutdown = shutdown.clone();
        let done = done.clone();
        let task = async move {
            let _permit = permit;
            let _done = done;
            match tokio::net::TcpStream::from_std(std_stream) {
                Ok(stream) => connection::serve(stream, peer, core, shutdown).await,
                Err(e) => {
                    slog::warn!(core.logger, "cannot adopt connection"; "peer" => %peer, "error" => %e)
                }
            }
        };
        connections.spawn(task);
    }
}
