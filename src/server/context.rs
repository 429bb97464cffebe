//! What request handlers share: the broker's handles ([`BrokerCore`]) and
//! what is known of the connection a request came on ([`ConnInfo`]). Both
//! hold handles only, never broker state of their own.

use crate::actors::consumer_group::ClientHandle;
use crate::actors::group_registry::GroupRegistry;
use crate::actors::queue_registry::QueueRegistry;
use crate::config::Config;
use crate::store::commitlog::LogReader;
use crate::store::topics::TopicTable;
use crate::store::StorePaths;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// What request handlers need: handles, never state of their own.
pub struct BrokerCore {
    /// Replication: role, in-sync set, acks.
    pub replication: Arc<crate::ha::Replication>,
    /// Actor addresses.
    pub registry: Arc<QueueRegistry>,
    /// Topic table.
    pub topics: Arc<TopicTable>,
    /// Consumer groups.
    pub groups: Arc<GroupRegistry>,
    /// Commit-log reads.
    pub reader: LogReader,
    /// Effective configuration.
    pub config: Arc<Config>,
    /// The address message ids name (the bound listen address).
    pub advertised: SocketAddr,
    /// Where the data lives.
    pub paths: StorePaths,
    /// Delay levels and limit.
    pub delays: Arc<crate::delay::DelayPolicy>,
    /// Broker-made writes (retries, dead letters, resends).
    pub appender: crate::actors::appender::Appender,
    /// Connections of each producer group.
    pub producers: Arc<crate::actors::producer_registry::ProducerRegistry>,
    /// Hands out idempotent producers' ids.
    pub producer_ids: Arc<parking_lot::Mutex<crate::store::producer_ids::ProducerIds>>,
    /// The transaction checker.
    pub txn: actix::Addr<crate::actors::txn_checker::TxnCheckerActor>,
    /// Property filters parsed so far, by text.
    pub sql_cache: dashmap::DashMap<String, Arc<crate::filter::sql::Expr>>,
    /// Cancelled when the server stops: parked pulls are answered then.
    pub stopping: tokio_util::sync::CancellationToken,
    /// The writer's counters and state (writable, disk full, poisoned).
    pub writer_stats: Arc<crate::actors::writer::WriterStats>,
    /// When the broker started serving.
    pub started: std::time::Instant,
    /// Messages in and out per second (pulls count what they deliver).
    pub traffic: Arc<crate::cluster::traffic::Traffic>,
    /// What `/metrics` shows.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The connection pool, where requests other than sends run.
    pub pool: tokio::runtime::Handle,
    /// Who this broker is in its cluster.
    pub identity: crate::cluster::Identity,
    /// Logger.
    pub logger: slog::Logger,
}

/// Facts about the connection that handlers may need.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// How the broker reaches this client (its id and outgoing frames).
    pub client: ClientHandle,
    /// Set once the connection carried a group heartbeat, so its end is
    /// reported to the groups.
    pub in_group: AtomicBool,
    /// Set once the connection sent a message (`rocketmq_producer_connections`).
    pub producer: AtomicBool,
}
