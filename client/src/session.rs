//! A connection that comes back: `Session` hands out the current
//! [`Connection`] and, when it has failed, dials again with backoff. Callers
//! decide what to retry; the session only guarantees a live connection (or a
//! clear error) each time it is asked.

use crate::connection::Connection;
use crate::error::ClientError;
use futures::future::{BoxFuture, FutureExt, Shared};
use std::sync::Mutex;
use std::time::Duration;

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

type Dial = Shared<BoxFuture<'static, Result<Connection, ClientError>>>;

enum State {
    Idle,
    Live(Connection),
    Dialing(Dial),
}

/// A reconnecting connection to one broker.
///
/// A dial runs as its own task and callers share its outcome: no caller
/// holds a lock while waiting, so a caller whose future is parked (say, a
/// long poll in one arm of a `select!`) can never block another caller.
pub struct Session {
    addr: String,
    client_id: String,
    local: Option<std::net::IpAddr>,
    state: Mutex<State>,
}

impl Session {
    /// A session to `addr`; nothing is dialled until first use.
    pub fn new(addr: &str, client_id: &str) -> Self {
        Self::bound(addr, client_id, None)
    }

    /// A session whose connections leave from local address `local`.
    pub fn bound(addr: &str, client_id: &str, local: Option<std::net::IpAddr>) -> Self {
        Self { addr: addr.to_string(), client_id: client_id.to_string(), local, state: Mutex::new(State::Idle) }
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
        let dial = {
            let mut state = self.state.lock().map_err(|_| ClientError::Connection("session poisoned".into()))?;
            match &*state {
                State::Live(conn) if !conn.is_closed() => return Ok(conn.clone()),
                State::Dialing(dial) => dial.clone(),
                _ => {
                    let (addr, client_id, local) = (self.addr.clone(), self.client_id.clone(), self.local);
                    let task = tokio::spawn(async move { Connection::connect_from(&addr, &client_id, local).await });
                    let dial: Dial = async move {
                        task.await.map_err(|e| ClientError::Connection(format!("dial task failed: {e}")))?
                    }
                    .boxed()
                    .shared();
                    *state = State::Dialing(dial.clone());
                    dial
                }
            }
        };
        let outcome = dial.await;
        if let Ok(mut state) = self.state.lock() {
            if matches!(*state, State::Dialing(_)) {
                *state = match &outcome {
                    Ok(conn) => State::Live(conn.clone()),
                    Err(_) => State::Idle,
                };
            }
        }
        outcome
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
    pub fn close(&self) {
        if let Ok(mut state) = self.state.lock() {
            *state = State::Idle;
        }
    }
}
