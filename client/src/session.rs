//! A connection that comes back: `Session` hands out the current
//! [`Connection`] and, when it has failed, dials again with backoff. Callers
//! decide what to retry; the session only guarantees a live connection (or a
//! clear error) each time it is asked.

use crate::connection::Connection;
use crate::error::ClientError;
use std::time::Duration;
use tokio::sync::Mutex;

/// How reconnecting backs off.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First wait.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { initial: Duration::from_millis(100), max: Duration::from_secs(2) }
    }
}

impl Backoff {
    /// The wait before attempt `n` (0-based): doubling from `initial`, capped.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.initial.saturating_mul(1u32 << attempt.min(16)).min(self.max)
    }
}

/// A reconnecting connection to one broker.
pub struct Session {
    addr: String,
    client_id: String,
    current: Mutex<Option<Connection>>,
}

impl Session {
    /// A session to `addr`; nothing is dialled until first use.
    pub fn new(addr: &str, client_id: &str) -> Self {
        Self { addr: addr.to_string(), client_id: client_id.to_string(), current: Mutex::new(None) }
    }

    /// Dials at once, so a bad address fails early.
    pub async fn connect(addr: &str, client_id: &str) -> Result<Self, ClientError> {
        let session = Self::new(addr, client_id);
        session.get().await?;
        Ok(session)
    }

    /// The broker address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The client id sent in hellos.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// A live connection: the current one, or a new one if it failed.
    pub async fn get(&self) -> Result<Connection, ClientError> {
        let mut current = self.current.lock().await;
        if let Some(conn) = current.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let conn = Connection::connect_as(&self.addr, &self.client_id).await?;
        *current = Some(conn.clone());
        Ok(conn)
    }

    /// Like [`Session::get`], retrying the dial `attempts` times with backoff.
    pub async fn get_with_retry(&self, attempts: u32, backoff: Backoff) -> Result<Connection, ClientError> {
        let mut last = None;
        for attempt in 0..attempts.max(1) {
            match self.get().await {
                Ok(conn) => return Ok(conn),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(backoff.delay(attempt)).await;
        }
        Err(last.unwrap_or_else(|| ClientError::Connection("no attempt made".into())))
    }

    /// Drops the current connection (tests simulate a crash with it).
    pub async fn close(&self) {
        self.current.lock().await.take();
    }
}
