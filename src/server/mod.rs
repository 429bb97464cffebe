//! The network edge: the accept loop ([`listener`]), one handler per
//! connection ([`connection`]) and the routing of each request to the actor
//! that owns it ([`dispatch`]). Nothing here holds broker state; errors are
//! mapped to wire codes here and nowhere else.

pub mod connection;
pub mod dispatch;
pub mod groups;
pub mod listener;
pub mod query;
pub mod retry;
pub mod trace;
pub mod txn;

use crate::actors::groups::Groups;
use crate::actors::Registry;
use crate::config::Config;
use crate::store::commitlog::LogReader;
use crate::store::topics::TopicTable;
use crate::store::StorePaths;
use std::net::SocketAddr;
use std::sync::Arc;

/// What request handlers need: handles, never state of their own.
pub struct BrokerCore {
    /// Actor addresses.
    pub registry: Arc<Registry>,
    /// Topic table.
    pub topics: Arc<TopicTable>,
    /// Consumer groups.
    pub groups: Arc<Groups>,
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
    pub reput: crate::actors::reput::Reput,
    /// Connections of each producer group.
    pub producers: Arc<crate::actors::txn_checker::Producers>,
    /// The transaction checker.
    pub txn: actix::Addr<crate::actors::txn_checker::TxnCheckerActor>,
    /// Property filters parsed so far, by text.
    pub sql_cache: dashmap::DashMap<String, Arc<crate::filter::sql::Expr>>,
    /// Cancelled when the server stops: parked pulls are answered then.
    pub stopping: tokio_util::sync::CancellationToken,
    /// Logger.
    pub logger: slog::Logger,
}
