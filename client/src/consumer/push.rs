//! The push consumer: a member of a consumer group. A coordinator task sends
//! heartbeats (every `heartbeat_interval`, and at once when the broker says
//! the assignment changed), receives the member's queues, and runs one worker
//! per queue. Workers pull with long polling — no fixed polling interval
//! anywhere — hand messages to the listener and commit offsets to the
//! broker:
//!
//! - concurrent mode: up to `max_in_flight` messages at once; the committed
//!   offset is the smallest one not yet done;
//! - orderly mode: one message of a queue at a time, in offset order, while
//!   holding the queue's lock on the broker (taken before consuming, renewed,
//!   released after the last commit), so during a rebalance two members
//!   never consume one queue at once.
//!
//! A message the listener answers "later" for (or does not finish within
//! `consume_timeout`) is handed back to the broker, which delivers it again
//! through the group's retry topic after a back-off, and parks it in the
//! group's dead-letter topic after `max_reconsume_times`. Orderly consumers
//! retry in place after `suspend` instead, then dead-letter it and move on.
//! Broadcasting consumers retry locally after `suspend`.

use super::config::PushConfig;
use super::coordinator;
use super::worker::{Ctx, Listener};
use super::ConsumeResult;
use crate::error::ClientError;
use crate::router::{Endpoint, Router};
use brook_proto::request::QueueRef;
use brook_proto::StoredMessage;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

/// How long after a broker stops answering its route is asked for again.
const STALE_ROUTE_DELAY: Duration = Duration::from_millis(500);

/// A running push consumer.
pub struct PushConsumer {
    shutdown: watch::Sender<bool>,
    supervisor: JoinHandle<()>,
    shared: Arc<Shared>,
}

/// What the consumer's parts share.
struct Shared {
    router: Arc<Router>,
    config: PushConfig,
    listener: Listener,
    permits: Arc<Semaphore>,
    /// The part on each broker, by replica set name.
    parts: Mutex<BTreeMap<String, Part>>,
    /// A part's broker stopped answering.
    route_stale: Arc<tokio::sync::Notify>,
    /// Commits a slave refused, by replica set, until its master is back.
    held: Arc<super::held::HeldCommits>,
}

/// The consumer's membership on one broker.
struct Part {
    addr: String,
    ctx: Arc<Ctx>,
    stop: watch::Sender<bool>,
    coordinator: JoinHandle<()>,
}

impl Part {
    /// Leaves the broker's group gracefully; the returned task ends when
    /// its workers have committed.
    fn stop(self) -> JoinHandle<()> {
        let _ = self.stop.send(true);
        self.coordinator
    }
}

impl PushConsumer {
    /// Joins the group and calls `listener` for each message. `endpoint`
    /// is a broker's address, or name servers
    /// (`Endpoint::namesrv(["127.0.0.1:9876"])`, or `PushConfig::namesrv`).
    pub async fn start<F, Fut>(
        endpoint: impl Into<Endpoint>,
        config: PushConfig,
        listener: F,
    ) -> Result<PushConsumer, ClientError>
    where
        F: Fn(StoredMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ConsumeResult> + Send + 'static,
    {
        let each: Arc<dyn Fn(StoredMessage) -> BoxFuture<'static, ConsumeResult> + Send + Sync> =
            Arc::new(move |m| listener(m).boxed());
        Self::start_with(endpoint.into(), config, Listener::Each(each)).await
    }

    /// Joins the group and calls `listener` with each pulled batch (one
    /// queue's messages in offset order); the answer covers the batch.
    pub async fn start_batch<F, Fut>(
        endpoint: impl Into<Endpoint>,
        config: PushConfig,
        listener: F,
    ) -> Result<PushConsumer, ClientError>
    where
        F: Fn(Vec<StoredMessage>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ConsumeResult> + Send + 'static,
    {
        let batch: Arc<dyn Fn(Vec<StoredMessage>) -> BoxFuture<'static, ConsumeResult> + Send + Sync> =
            Arc::new(move |m| listener(m).boxed());
        Self::start_with(endpoint.into(), config, Listener::Batch(batch)).await
    }

    async fn start_with(
        endpoint: Endpoint,
        config: PushConfig,
        listener: Listener,
    ) -> Result<PushConsumer, ClientError> {
        if config.subscriptions.is_empty() {
            return Err(ClientError::InvalidArgument("subscribe to at least one topic".into()));
        }
        let endpoint = config.namesrv.clone().map_or(endpoint, Endpoint::NameServers);
        let router = Router::connect_with_ttl(endpoint, &config.member, config.route_refresh).await?;
        let shared = Arc::new(Shared {
            router,
            permits: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            config,
            listener,
            parts: Mutex::new(BTreeMap::new()),
            route_stale: Arc::new(tokio::sync::Notify::new()),
            held: Arc::default(),
        });
        let brokers = shared.brokers().await?;
        for (name, addr) in brokers {
            // A subscription the broker refuses (a malformed filter, say)
            // fails here, with the broker's reason, instead of in every
            // heartbeat.
            shared.join(&name, &addr, true).await?;
        }
        let (shutdown, stop) = watch::channel(false);
        let supervisor = tokio::spawn(supervise(shared.clone(), stop));
        Ok(PushConsumer { shutdown, supervisor, shared })
    }

    /// The queues this member consumes now, on every broker.
    pub fn assignment(&self) -> Vec<QueueRef> {
        self.assignment_by_broker().into_iter().map(|(_, q)| q).collect()
    }

    /// The queues this member consumes now, with their replica set name
    /// ("" for a broker named directly).
    pub fn assignment_by_broker(&self) -> Vec<(String, QueueRef)> {
        let parts = self.shared.parts.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all = Vec::new();
        for (name, part) in parts.iter() {
            let queues = part.ctx.assignment.lock().map(|a| a.clone()).unwrap_or_default();
            all.extend(queues.into_iter().map(|q| (name.clone(), q)));
        }
        all
    }

    /// The member id.
    pub fn member(&self) -> &str {
        &self.shared.config.member
    }

    /// Leaves gracefully: stops pulling, lets messages in the listener
    /// finish, commits, releases locks and leaves the group on every
    /// broker.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.supervisor.await;
    }

    /// Stops dead, as a crash would: no commit, no unlock, no leave; the
    /// connections simply close.
    pub async fn kill(self) {
        self.supervisor.abort();
        let _ = self.supervisor.await;
        let parts = std::mem::take(&mut *self.shared.parts.lock().unwrap_or_else(PoisonError::into_inner));
        for part in parts.into_values() {
            part.coordinator.abort();
            let _ = part.coordinator.await;
            part.ctx.session.close();
        }
    }
}

impl Shared {
    /// The brokers to be a member on: every replica set holding a
    /// subscribed topic, at its master — or, while the master is gone, at
    /// a slave, whose offsets are the master's as of its log; commits it
    /// cannot take are held and made when the master is back (the broker
    /// itself when named directly).
    async fn brokers(&self) -> Result<BTreeMap<String, String>, ClientError> {
        let mut brokers = BTreeMap::new();
        for sub in &self.config.subscriptions {
            let view = self.router.topic(&sub.topic).await?;
            for (name, addr) in view.live_readers() {
                brokers.insert(name.to_string(), addr.to_string());
            }
        }
        Ok(brokers)
    }

    /// Starts the part on broker `name` at `addr`. With `strict`, a first
    /// heartbeat the broker refuses is returned.
    async fn join(self: &Arc<Self>, name: &str, addr: &str, strict: bool) -> Result<(), ClientError> {
        let ctx = Arc::new(Ctx {
            broker: name.to_string(),
            session: self.router.session(addr),
            permits: self.permits.clone(),
            config: self.config.clone(),
            listener: self.listener.clone(),
            assignment: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            route_stale: self.route_stale.clone(),
            held: self.held.clone(),
        });
        let mut notices = None;
        if let Err(e) = coordinator::heartbeat(&ctx, &mut notices).await {
            if strict && !e.is_retriable() {
                return Err(e);
            }
        }
        // Commits a slave could not take go to the master first, before
        // any worker of this part asks where to start.
        ctx.commit_held().await;
        let (stop, rx) = watch::channel(false);
        let coordinator = tokio::spawn(coordinator::coordinate(ctx.clone(), rx));
        let part = Part { addr: addr.to_string(), ctx, stop, coordinator };
        let old = self.parts.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_string(), part);
        if let Some(old) = old {
            tokio::spawn(old.stop());
        }
        Ok(())
    }
}

/// Follows the routes, every `route_refresh` and soon after a broker stops
/// answering: joins brokers that appear (or whose master moved), leaves
/// those that are gone; on shutdown, leaves every one.
async fn supervise(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let cluster = shared.router.is_cluster();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.config.route_refresh), if cluster => {}
            // Not at once: the name server may not have noticed yet.
            _ = shared.route_stale.notified(), if cluster => {
                tokio::time::sleep(STALE_ROUTE_DELAY.min(shared.config.route_refresh)).await;
            }
            _ = stop.changed() => break,
        }
        for sub in &shared.config.subscriptions {
            shared.router.invalidate(&sub.topic);
        }
        // No name server answers: the last route stands.
        let Ok(brokers) = shared.brokers().await else { continue };
        let gone: Vec<Part> = {
            let mut parts = shared.parts.lock().unwrap_or_else(PoisonError::into_inner);
            let names: Vec<String> = parts.keys().filter(|n| !brokers.contains_key(*n)).cloned().collect();
            names.iter().filter_map(|n| parts.remove(n)).collect()
        };
        for part in gone {
            tokio::spawn(part.stop());
        }
        for (name, addr) in brokers {
            let known = shared.parts.lock().unwrap_or_else(PoisonError::into_inner).get(&name).map(|p| p.addr.clone());
            if known.as_deref() != Some(addr.as_str()) {
                let _ = shared.join(&name, &addr, false).await;
            }
        }
    }
    let parts = std::mem::take(&mut *shared.parts.lock().unwrap_or_else(PoisonError::into_inner));
    let leaving: Vec<JoinHandle<()>> = parts.into_values().map(Part::stop).collect();
    for handle in leaving {
        let _ = handle.await;
    }
}
