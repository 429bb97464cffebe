//! Where brookctl's requests go: one broker (`--addr`), or, with
//! `--namesrv`, the broker that owns each request, found through the name
//! servers; commands that list things ask every master and merge.

use brook_client::{ClientError, Connection, Endpoint, MessageId, Router};
use brook_proto::route::{ClusterBroker, MASTER_ID};
use std::sync::Arc;

/// The broker or cluster a command talks to.
pub(crate) struct Target {
    addr: String,
    namesrv: Option<String>,
}

impl Target {
    pub(crate) fn new(addr: String, namesrv: Option<String>) -> Self {
        Self { addr, namesrv: namesrv.filter(|n| !n.trim().is_empty()) }
    }

    /// What clients (producers, consumers) connect to.
    pub(crate) fn endpoint(&self) -> Endpoint {
        match &self.namesrv {
            Some(list) => Endpoint::namesrv_list(list),
            None => Endpoint::Broker(self.addr.clone()),
        }
    }

    /// Whether requests are routed through name servers.
    pub(crate) fn is_cluster(&self) -> bool {
        self.namesrv.is_some()
    }

    pub(crate) async fn router(&self) -> Result<Arc<Router>, ClientError> {
        Router::connect(self.endpoint(), "brookctl").await
    }

    /// Every broker the name servers know (empty without them).
    pub(crate) async fn cluster(&self) -> Result<Vec<ClusterBroker>, ClientError> {
        if !self.is_cluster() {
            return Ok(Vec::new());
        }
        match self.router().await?.ask_names(brook_proto::Request::GetClusterInfo).await? {
            brook_proto::Response::Cluster(brokers) => Ok(brokers),
            other => Err(ClientError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// Asks the controller (through the name servers).
    pub(crate) async fn controller(
        &self,
        request: brook_proto::controller::ControllerRequest,
    ) -> Result<brook_proto::controller::ControllerResponse, ClientError> {
        if !self.is_cluster() {
            return Err(ClientError::InvalidArgument("the controller is reached through --namesrv".into()));
        }
        match self.router().await?.ask_names(brook_proto::Request::Controller(request)).await? {
            brook_proto::Response::Controller(answer) => Ok(answer),
            other => Err(ClientError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// A connection to every master, by replica set name ("" for the one
    /// broker named with `--addr`).
    pub(crate) async fn masters(&self) -> Result<Vec<(String, Connection)>, ClientError> {
        if !self.is_cluster() {
            return Ok(vec![(String::new(), Connection::connect_as(&self.addr, "brookctl").await?)]);
        }
        let mut conns = Vec::new();
        for b in self.cluster().await?.into_iter().filter(|b| b.broker_id == MASTER_ID) {
            conns.push((b.broker_name.clone(), connect(&b.broker_name, &b.addr).await?));
        }
        if conns.is_empty() {
            return Err(ClientError::Unavailable { broker: "*".into(), cause: "no broker is registered".into() });
        }
        Ok(conns)
    }

    /// A connection to the broker that stored message `id` (its address is
    /// in the id).
    pub(crate) async fn storing(&self, id: &str) -> Result<Connection, ClientError> {
        if !self.is_cluster() {
            return Connection::connect_as(&self.addr, "brookctl").await;
        }
        let parsed: MessageId = id.parse().map_err(|e| ClientError::InvalidArgument(format!("{e}")))?;
        let addr = parsed.broker.to_string();
        connect(&addr, &addr).await
    }
}

async fn connect(name: &str, addr: &str) -> Result<Connection, ClientError> {
    Connection::connect_as(addr, "brookctl")
        .await
        .map_err(|e| ClientError::Unavailable { broker: name.to_string(), cause: e.to_string() })
}

/// A merged answer's broker column: nothing for one broker named directly.
pub(crate) fn tagged(broker: &str, text: String) -> String {
    if broker.is_empty() {
        text
    } else {
        format!("{broker}\t{text}")
    }
}
