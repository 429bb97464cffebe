//! The name servers as a broker talks to them: one reconnecting session
//! each. Registrations go to every one (they are independent); a route is
//! asked of one after another until one answers.

use brook_client::{ClientError, Session};
use brook_proto::controller::{ControllerRequest, ControllerResponse};
use brook_proto::route::{BrokerRegistration, TopicRoute};
use brook_proto::{ErrorCode, Request, Response};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long one name server may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// The name servers of a cluster.
pub struct NameServers {
    sessions: Vec<Arc<Session>>,
    next: AtomicUsize,
}

impl NameServers {
    /// Sessions to `addrs` (dialled on first use, from `local`).
    pub fn new(addrs: &[String], client_id: &str, local: Option<std::net::IpAddr>) -> Self {
        Self {
            sessions: addrs.iter().map(|a| Arc::new(Session::bound(a, client_id, local))).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Asks the controller, through one name server after another until
    /// one answers (a name server forwards to the controller's leader).
    pub async fn controller(&self, request: ControllerRequest) -> Result<ControllerResponse, ClientError> {
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = ClientError::Connection("no name servers".into());
        for i in 0..self.sessions.len() {
            let Some(session) = self.sessions.get((first + i) % self.sessions.len()) else { continue };
            match Self::ask(session, Request::Controller(request.clone())).await {
                Ok(Response::Controller(answer)) => return Ok(answer),
                Ok(other) => last = ClientError::Protocol(format!("unexpected answer {other:?}")),
                // Refused on its merits: another name server says the same.
                Err(e) if matches!(e.code(), Some(ErrorCode::InvalidArgument | ErrorCode::Fenced)) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Their addresses.
    pub fn addrs(&self) -> Vec<String> {
        self.sessions.iter().map(|s| s.addr().to_string()).collect()
    }

    async fn ask(session: &Session, request: Request) -> Result<Response, ClientError> {
        let asked = async { session.get().await?.request(request).await };
        tokio::time::timeout(ASK_TIMEOUT, asked).await.unwrap_or(Err(ClientError::Timeout(ASK_TIMEOUT)))
    }

    /// Registers with every name server at once; each one's outcome, by
    /// address.
    pub async fn register(&self, registration: &BrokerRegistration) -> Vec<(String, Result<(), ClientError>)> {
        let asks = self.sessions.iter().map(|s| async move {
            let outcome = Self::ask(s, Request::RegisterBroker(Box::new(registration.clone()))).await.map(|_| ());
            (s.addr().to_string(), outcome)
        });
        futures::future::join_all(asks).await
    }

    /// Tells every name server this broker is stopping.
    pub async fn unregister(&self, cluster: &str, broker_name: &str, broker_id: u64) {
        let asks = self.sessions.iter().map(|s| {
            let request = Request::UnregisterBroker {
                cluster: cluster.to_string(),
                broker_name: broker_name.to_string(),
                broker_id,
            };
            async move {
                let _ = Self::ask(s, request).await;
            }
        });
        futures::future::join_all(asks).await;
    }

    /// The cluster's brokers from the first name server that answers.
    pub async fn cluster(&self) -> Result<Vec<brook_proto::route::ClusterBroker>, ClientError> {
        let mut last = ClientError::Connection("no name servers".into());
        for session in &self.sessions {
            match Self::ask(session, Request::GetClusterInfo).await {
                Ok(Response::Cluster(brokers)) => return Ok(brokers),
                Ok(other) => last = ClientError::Protocol(format!("unexpected answer {other:?}")),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// A topic's route from the first name server that answers.
    pub async fn route(&self, topic: &str) -> Result<TopicRoute, ClientError> {
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = ClientError::Connection("no name servers".into());
        for i in 0..self.sessions.len() {
            let Some(session) = self.sessions.get((first + i) % self.sessions.len()) else { continue };
            match Self::ask(session, Request::GetRoute { topic: topic.to_string() }).await {
                Ok(Response::Route(route)) => return Ok(route),
                Ok(other) => last = ClientError::Protocol(format!("unexpected answer {other:?}")),
                // The name server answered: the topic is nowhere.
                Err(e) if e.code().is_some() => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}
