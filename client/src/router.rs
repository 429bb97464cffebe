//! Where a client finds its brokers ([`Endpoint`]): one broker named
//! directly, or the name servers of a cluster. The [`Router`] answers the
//! one question producers and consumers ask — which queues does a topic
//! have, and at which broker — caching each topic's answer
//! ([`TopicView`]) for `route_ttl` and asking again at once after a
//! routing error. While no name server answers, the last answer stands.
//!
//! A topic's queues keep a stable order — by replica set name, then queue
//! id — that does not shrink when a broker leaves the route: its queues
//! stay in the list, marked unavailable, so a sharding key keeps mapping
//! to the queue it mapped to before (RocketMQ remaps keys then,
//! apache/rocketmq#248).

use crate::error::ClientError;
use crate::session::Session;
use brook_proto::route::{TopicRoute, PERM_READ, PERM_WRITE};
use brook_proto::{Request, Response};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a client finds brokers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// One broker, at this address.
    Broker(String),
    /// The name servers of a cluster (any of them will do).
    NameServers(Vec<String>),
}

impl Endpoint {
    /// The name servers at `addrs`.
    pub fn namesrv<I, S>(addrs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Endpoint::NameServers(addrs.into_iter().map(Into::into).collect())
    }

    /// Name servers from a comma-separated list (as `BROOK_NAMESRV` holds).
    pub fn namesrv_list(list: &str) -> Self {
        Self::namesrv(list.split(',').map(str::trim).filter(|a| !a.is_empty()))
    }
}

impl From<&str> for Endpoint {
    fn from(addr: &str) -> Self {
        Endpoint::Broker(addr.to_string())
    }
}

impl From<String> for Endpoint {
    fn from(addr: String) -> Self {
        Endpoint::Broker(addr)
    }
}

impl From<&String> for Endpoint {
    fn from(addr: &String) -> Self {
        Endpoint::Broker(addr.clone())
    }
}

/// The replica set name a directly named broker goes by in views.
pub const DIRECT: &str = "";

/// One queue of a topic, somewhere in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueSlot {
    /// Its replica set ([`DIRECT`] for a directly named broker).
    pub broker: String,
    /// Its id on that broker.
    pub queue: u32,
}

/// What a client knows of a topic: its queues in a stable order, and where
/// each replica set's master is (`None`: not in the route now).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicView {
    /// Every queue known, sorted by replica set then id; queues of a
    /// replica set that left the route stay.
    pub queues: Vec<QueueSlot>,
    /// Queues producers may write (of replica sets with a master).
    pub writable: Vec<QueueSlot>,
    /// Master address by replica set.
    pub masters: BTreeMap<String, Option<String>>,
    /// Where each replica set is read: its master, or while the route has
    /// none, one of its slaves (RocketMQ's `slaveReadEnable`).
    pub readers: BTreeMap<String, String>,
}

impl TopicView {
    /// Where the master of `broker` is, if it is in the route.
    pub fn master(&self, broker: &str) -> Option<&str> {
        self.masters.get(broker).and_then(|a| a.as_deref())
    }

    /// Every replica set with a master in the route, and its address.
    pub fn live_masters(&self) -> impl Iterator<Item = (&str, &str)> {
        self.masters.iter().filter_map(|(name, addr)| addr.as_deref().map(|a| (name.as_str(), a)))
    }

    /// Every replica set that can be read, and where: its master, or a
    /// slave while the master is gone.
    pub fn live_readers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.readers.iter().map(|(name, addr)| (name.as_str(), addr.as_str()))
    }

    /// The view a route gives, keeping what `before` knew of replica sets
    /// that are no longer in it.
    fn from_route(route: &TopicRoute, before: Option<&TopicView>) -> Self {
        let mut view = TopicView::default();
        for q in &route.queues {
            let set = route.broker(&q.broker_name);
            let master = set.and_then(|b| b.master()).map(str::to_string);
            let reader = master.clone().or_else(|| set.and_then(|b| b.addrs.values().next().cloned()));
            if let Some(reader) = reader {
                view.readers.insert(q.broker_name.clone(), reader);
            }
            let count = if q.perm & PERM_READ != 0 { q.read_queues.max(q.write_queues) } else { q.write_queues };
            for queue in 0..count {
                let slot = QueueSlot { broker: q.broker_name.clone(), queue };
                if master.is_some() && q.perm & PERM_WRITE != 0 && queue < q.write_queues {
                    view.writable.push(slot.clone());
                }
                view.queues.push(slot);
            }
            view.masters.insert(q.broker_name.clone(), master);
        }
        if let Some(before) = before {
            for slot in &before.queues {
                if !view.masters.contains_key(&slot.broker) {
                    view.queues.push(slot.clone());
                }
            }
            for name in before.masters.keys() {
                view.masters.entry(name.clone()).or_insert(None);
            }
        }
        view.queues.sort();
        view.queues.dedup();
        view.writable.sort();
        view
    }

    /// The view of one broker named directly, with `queues` queues.
    fn direct(addr: &str, queues: u32) -> Self {
        let queues: Vec<QueueSlot> = (0..queues).map(|queue| QueueSlot { broker: DIRECT.into(), queue }).collect();
        let masters = BTreeMap::from([(DIRECT.to_string(), Some(addr.to_string()))]);
        let readers = BTreeMap::from([(DIRECT.to_string(), addr.to_string())]);
        TopicView { writable: queues.clone(), queues, masters, readers }
    }
}

struct Cached {
    view: Arc<TopicView>,
    fetched: Instant,
}

/// How long a topic's view is used before it is asked for again (RocketMQ's
/// `pollNameServerInterval`).
pub const DEFAULT_ROUTE_TTL: Duration = Duration::from_secs(30);

/// How long one name server may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// Routes and broker sessions for one client.
pub struct Router {
    endpoint: Endpoint,
    client_id: String,
    names: Vec<Arc<Session>>,
    brokers: Mutex<HashMap<String, Arc<Session>>>,
    views: Mutex<HashMap<String, Cached>>,
    ttl: Duration,
}

impl Router {
    /// A router for `endpoint`; a broker named directly is dialled now, so
    /// a bad address fails here.
    pub async fn connect(endpoint: Endpoint, client_id: &str) -> Result<Arc<Router>, ClientError> {
        Self::connect_with_ttl(endpoint, client_id, DEFAULT_ROUTE_TTL).await
    }

    /// [`Router::connect`] with views kept for `ttl`.
    pub async fn connect_with_ttl(
        endpoint: Endpoint,
        client_id: &str,
        ttl: Duration,
    ) -> Result<Arc<Router>, ClientError> {
        let names = match &endpoint {
            Endpoint::NameServers(addrs) if addrs.is_empty() => {
                return Err(ClientError::InvalidArgument("no name server addresses".into()))
            }
            Endpoint::NameServers(addrs) => addrs.iter().map(|a| Arc::new(Session::new(a, client_id))).collect(),
            Endpoint::Broker(_) => Vec::new(),
        };
        let router = Arc::new(Router {
            endpoint,
            client_id: client_id.to_string(),
            names,
            brokers: Mutex::new(HashMap::new()),
            views: Mutex::new(HashMap::new()),
            ttl,
        });
        if let Endpoint::Broker(addr) = &router.endpoint {
            router.session(addr).get().await?;
        }
        Ok(router)
    }

    /// The endpoint it routes for.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The broker named directly, if that is the endpoint.
    pub fn direct_addr(&self) -> Option<&str> {
        match &self.endpoint {
            Endpoint::Broker(addr) => Some(addr),
            Endpoint::NameServers(_) => None,
        }
    }

    /// Whether it routes through name servers.
    pub fn is_cluster(&self) -> bool {
        matches!(self.endpoint, Endpoint::NameServers(_))
    }

    /// The session to the broker at `addr` (one per address, shared).
    pub fn session(&self, addr: &str) -> Arc<Session> {
        let mut brokers = self.brokers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        brokers.entry(addr.to_string()).or_insert_with(|| Arc::new(Session::new(addr, &self.client_id))).clone()
    }

    /// `topic`'s view: cached, or asked for when older than the TTL (the
    /// old one stands while nobody answers).
    pub async fn topic(&self, topic: &str) -> Result<Arc<TopicView>, ClientError> {
        let before = {
            let views = self.views.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match views.get(topic) {
                Some(c) if c.fetched.elapsed() < self.ttl => return Ok(c.view.clone()),
                other => other.map(|c| c.view.clone()),
            }
        };
        let fresh = match &self.endpoint {
            Endpoint::Broker(addr) => {
                let conn = self.session(addr).get().await;
                match conn {
                    Ok(conn) => conn.describe_topic(topic).await.map(|info| TopicView::direct(addr, info.queues)),
                    Err(e) => Err(e),
                }
            }
            Endpoint::NameServers(_) => self.route(topic).await.map(|r| TopicView::from_route(&r, before.as_deref())),
        };
        match (fresh, before) {
            (Ok(view), _) => {
                let view = Arc::new(view);
                let cached = Cached { view: view.clone(), fetched: Instant::now() };
                self.views.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(topic.to_string(), cached);
                Ok(view)
            }
            // Nobody answers, or only name servers that know nothing yet
            // (restarted, not refilled): the last view stands. Brokers
            // still refuse sends to a topic that is really gone.
            (Err(_), Some(before)) => Ok(before),
            (Err(e), _) => Err(e),
        }
    }

    /// Forgets `topic`'s view: the next use asks again (after a routing
    /// error: a broker gone, a queue not its owner's).
    pub fn invalidate(&self, topic: &str) {
        let mut views = self.views.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(cached) = views.get_mut(topic) {
            cached.fetched = Instant::now().checked_sub(self.ttl).unwrap_or_else(Instant::now);
        }
    }

    /// The route of `topic` from the first name server that answers.
    pub async fn route(&self, topic: &str) -> Result<TopicRoute, ClientError> {
        match self.ask_names(Request::GetRoute { topic: topic.to_string() }).await? {
            Response::Route(route) => Ok(route),
            other => Err(crate::connection::unexpected(other)),
        }
    }

    /// Asks the name servers, one after another, until one answers. An
    /// error answer ("no such topic") is final only when every name server
    /// gives one: a name server restarted a moment ago knows nothing yet.
    pub async fn ask_names(&self, request: Request) -> Result<Response, ClientError> {
        let mut last = ClientError::Connection("no name servers".into());
        for session in &self.names {
            let asked = async { session.get().await?.request(request.clone()).await };
            match tokio::time::timeout(ASK_TIMEOUT, asked).await.unwrap_or(Err(ClientError::Timeout(ASK_TIMEOUT))) {
                Ok(answer) => return Ok(answer),
                Err(e) if e.code().is_some() || last.code().is_none() => last = e,
                Err(_) => {}
            }
        }
        Err(last)
    }

    /// Every master broker of the cluster, by replica set name and address
    /// (the one broker, named [`DIRECT`], without name servers).
    pub async fn masters(&self) -> Result<Vec<(String, String)>, ClientError> {
        match &self.endpoint {
            Endpoint::Broker(addr) => Ok(vec![(DIRECT.to_string(), addr.clone())]),
            Endpoint::NameServers(_) => match self.ask_names(Request::GetClusterInfo).await? {
                Response::Cluster(brokers) => Ok(brokers
                    .into_iter()
                    .filter(|b| b.broker_id == brook_proto::route::MASTER_ID)
                    .map(|b| (b.broker_name, b.addr))
                    .collect()),
                other => Err(crate::connection::unexpected(other)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_proto::route::{BrokerData, QueueData, PERM_READ_WRITE};

    fn route(sets: &[(&str, Option<&str>, u32)]) -> TopicRoute {
        TopicRoute {
            topic: "t".into(),
            brokers: sets
                .iter()
                .map(|(name, master, _)| BrokerData {
                    cluster: "c".into(),
                    broker_name: (*name).into(),
                    addrs: master.iter().map(|a| (0, (*a).to_string())).collect(),
                })
                .collect(),
            queues: sets
                .iter()
                .map(|(name, _, q)| QueueData {
                    broker_name: (*name).into(),
                    write_queues: *q,
                    read_queues: *q,
                    perm: PERM_READ_WRITE,
                })
                .collect(),
        }
    }

    #[test]
    fn a_broker_leaving_the_route_keeps_its_queues_in_place() {
        let full = TopicView::from_route(&route(&[("b", Some("B"), 2), ("a", Some("A"), 2)]), None);
        let names: Vec<(&str, u32)> = full.queues.iter().map(|s| (s.broker.as_str(), s.queue)).collect();
        assert_eq!(names, [("a", 0), ("a", 1), ("b", 0), ("b", 1)], "sorted by replica set, then id");
        assert_eq!(full.writable.len(), 4);
        let without_a = TopicView::from_route(&route(&[("b", Some("B"), 2)]), Some(&full));
        assert_eq!(without_a.queues, full.queues, "the same list: keys map where they mapped");
        assert_eq!(without_a.master("a"), None);
        assert_eq!(without_a.writable.len(), 2, "only b's queues take sends");
        // A set registered without a master: its queues listed, not written.
        let no_master = TopicView::from_route(&route(&[("a", None, 2), ("b", Some("B"), 2)]), None);
        assert_eq!((no_master.queues.len(), no_master.writable.len()), (4, 2));
        assert_eq!(no_master.live_masters().collect::<Vec<_>>(), [("b", "B")]);
    }

    #[test]
    fn a_direct_broker_is_one_unnamed_replica_set() {
        let view = TopicView::direct("127.0.0.1:1", 3);
        assert_eq!(view.queues.iter().map(|s| s.queue).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(view.master(DIRECT), Some("127.0.0.1:1"));
    }
}
