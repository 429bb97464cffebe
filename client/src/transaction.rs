//! The transactional producer. `send` stores a *half* message (invisible to
//! consumers), runs the application's local transaction through the
//! executor, and tells the broker to commit or roll back. If the outcome is
//! unknown — or the answer is lost, or this process dies — the broker asks a
//! live producer of the same group later, and the checker answers from the
//! application's records.
//!
//! Through name servers, halves go round-robin over the writable queues of
//! every master, and each outcome to the broker that stored its half. The
//! producer stays registered in its group on every master of the cluster
//! (and on any broker it sends to later); a background task per broker
//! answers that broker's checks and re-registers after a reconnect.

use crate::error::ClientError;
use crate::router::{Endpoint, Router};
use crate::session::{Backoff, Session};
use brook_proto::request::{SendAck, TxnOutcome};
use brook_proto::system::{PROP_PRODUCER_GROUP, PROP_TRANSACTION, PROP_TRANSACTION_TIMEOUT_MS};
use brook_proto::{Message, Request, Response, StoredMessage};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// Runs the local transaction for a half message just stored.
pub type Executor = Arc<dyn Fn(&Message, &SendAck) -> TxnOutcome + Send + Sync>;
/// Answers the broker's check of a half message whose outcome is overdue.
pub type Checker = Arc<dyn Fn(&StoredMessage) -> TxnOutcome + Send + Sync>;

/// A producer of transactional messages.
pub struct TransactionProducer {
    router: Arc<Router>,
    group: String,
    executor: Executor,
    checker: Checker,
    next_queue: AtomicU32,
    /// The check answerer on each broker, by address.
    listeners: Mutex<HashMap<String, JoinHandle<()>>>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl TransactionProducer {
    /// Connects as a member of producer group `group`, to one broker
    /// (`"127.0.0.1:10911"`) or through name servers
    /// (`Endpoint::namesrv(["127.0.0.1:9876"])`).
    pub async fn new(
        endpoint: impl Into<Endpoint>,
        group: &str,
        executor: impl Fn(&Message, &SendAck) -> TxnOutcome + Send + Sync + 'static,
        checker: impl Fn(&StoredMessage) -> TxnOutcome + Send + Sync + 'static,
    ) -> Result<TransactionProducer, ClientError> {
        brook_proto::names::validate_name("producer group", group).map_err(ClientError::InvalidArgument)?;
        let client_id = format!("{group}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed));
        let router = Router::connect(endpoint.into(), &client_id).await?;
        let producer = TransactionProducer {
            router,
            group: group.to_string(),
            executor: Arc::new(executor),
            checker: Arc::new(checker),
            next_queue: AtomicU32::new(0),
            listeners: Mutex::new(HashMap::new()),
        };
        // Registered everywhere at once, so a half left by an earlier run of
        // this group is checked here, whichever broker holds it. A broker
        // named directly must take the registration; in a cluster one that
        // is down now is registered with when it answers.
        for (_, addr) in producer.router.masters().await? {
            let session = producer.router.session(&addr);
            let registered = register(&session, group).await;
            if producer.router.direct_addr().is_some() {
                registered?;
            }
            producer.listen(&addr, session);
        }
        Ok(producer)
    }

    /// Answers checks from the broker at `addr` (once per broker).
    fn listen(&self, addr: &str, session: Arc<Session>) {
        let mut listeners = self.listeners.lock().unwrap_or_else(PoisonError::into_inner);
        listeners
            .entry(addr.to_string())
            .or_insert_with(|| tokio::spawn(answer_checks(session, self.group.clone(), self.checker.clone())));
    }

    /// Sends `msg` as a half message, runs the executor, and ends the
    /// transaction with its outcome (an unknown outcome is left to the
    /// broker's check). Returns the half's acknowledgement — the committed
    /// message keeps its id — and the executor's outcome.
    pub async fn send(&self, msg: Message) -> Result<(SendAck, TxnOutcome), ClientError> {
        self.send_with_timeout(msg, None).await
    }

    /// [`TransactionProducer::send`], with the broker asked to wait `timeout`
    /// for the outcome before checking (instead of its
    /// `transaction_timeout`).
    pub async fn send_with_timeout(
        &self,
        mut msg: Message,
        timeout: Option<Duration>,
    ) -> Result<(SendAck, TxnOutcome), ClientError> {
        msg.properties.insert(PROP_TRANSACTION.into(), "true".into());
        msg.properties.insert(PROP_PRODUCER_GROUP.into(), self.group.clone());
        if let Some(t) = timeout {
            msg.properties.insert(PROP_TRANSACTION_TIMEOUT_MS.into(), t.as_millis().to_string());
        }
        if msg.born_ts == 0 {
            msg.born_ts = crate::producer::now_ms();
        }
        let view = self.router.topic(&msg.topic).await?;
        if view.writable.is_empty() {
            return Err(ClientError::Unavailable {
                broker: view.masters.keys().cloned().collect::<Vec<_>>().join(","),
                cause: format!("no writable queue of topic {}", msg.topic),
            });
        }
        let slot = &view.writable[self.next_queue.fetch_add(1, Ordering::Relaxed) as usize % view.writable.len()];
        let addr = view.master(&slot.broker).unwrap_or_default().to_string();
        let session = self.router.session(&addr);
        self.listen(&addr, session.clone());
        let conn = session.get().await.inspect_err(|_| self.router.invalidate(&msg.topic))?;
        // Sent once: a retry after a lost ack could store a second half.
        let ack = conn
            .send(&msg.topic.clone(), slot.queue, vec![msg.clone()])
            .await?
            .pop()
            .ok_or_else(|| ClientError::Protocol("no ack for the half message".into()))?;
        let outcome = (self.executor)(&msg, &ack);
        if outcome != TxnOutcome::Unknown {
            // If this is lost, the broker's check settles it.
            let end = Request::EndTransaction {
                group: self.group.clone(),
                msg_id: ack.msg_id.to_string(),
                outcome,
                from_check: false,
            };
            conn.request(end).await?;
        }
        Ok((ack, outcome))
    }

    /// Stops answering checks and disconnects.
    pub fn close(self) {
        let addrs: Vec<String> =
            self.listeners.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        for addr in addrs {
            self.router.session(&addr).close();
        }
    }
}

impl Drop for TransactionProducer {
    fn drop(&mut self) {
        for listener in self.listeners.lock().unwrap_or_else(PoisonError::into_inner).values() {
            listener.abort();
        }
    }
}

async fn register(session: &Session, group: &str) -> Result<(), ClientError> {
    match session.get().await?.request(Request::RegisterProducer { group: group.to_string() }).await? {
        Response::Done => Ok(()),
        other => Err(ClientError::Protocol(format!("unexpected answer {other:?}"))),
    }
}

/// Answers checks on the session's connection, re-registering after every
/// reconnect.
async fn answer_checks(session: Arc<Session>, group: String, checker: Checker) {
    let mut attempt = 0;
    loop {
        let conn = match session.get().await {
            Ok(conn) => conn,
            Err(_) => {
                tokio::time::sleep(Backoff::default().delay(attempt)).await;
                attempt += 1;
                continue;
            }
        };
        let mut notices = conn.notices();
        if register(&session, &group).await.is_err() {
            tokio::time::sleep(Backoff::default().delay(attempt)).await;
            attempt += 1;
            continue;
        }
        attempt = 0;
        let mut alive = tokio::time::interval(Duration::from_millis(500));
        loop {
            let notice = tokio::select! {
                notice = notices.recv() => notice,
                _ = alive.tick() => {
                    if conn.is_closed() { break } else { continue }
                }
            };
            match notice {
                Ok(Request::CheckTransaction { group: g, msg_id, message }) if g == group => {
                    let (checker, conn, group) = (checker.clone(), conn.clone(), group.clone());
                    tokio::spawn(async move {
                        let outcome = checker(&message);
                        let end = Request::EndTransaction { group, msg_id, outcome, from_check: true };
                        let _ = conn.request(end).await;
                    });
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
        }
    }
}
