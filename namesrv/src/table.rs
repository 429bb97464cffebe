//! What a name server knows: the brokers that registered, each with its
//! topics, when it was last heard from and on which connection. Nothing of
//! it is on disk (as RocketMQ's name server): a restarted name server is
//! filled again by the brokers' next registrations.
//!
//! A replica set whose last broker left (connection closed, expired or
//! unregistered) keeps its topics' queues in routes, with no address, until
//! a broker of that name registers again: clients then keep mapping a
//! sharding key to the queue it mapped to, and fail its sends, instead of
//! moving the key to another broker and breaking its order
//! (apache/rocketmq#248).

use brook_proto::request::TopicInfo;
use brook_proto::route::{BrokerData, BrokerRegistration, ClusterBroker, QueueData, TopicConf, TopicRoute};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// A broker as registered: which replica set and id.
pub type BrokerKey = (String, u64);

struct Registered {
    registration: BrokerRegistration,
    last_seen: Instant,
    /// The connection it last registered on: when that closes, it goes.
    conn: u64,
}

/// A replica set's queues as one of its brokers (by id) registered them.
type QueuesOf = (u64, QueueData);

/// Every registered broker.
#[derive(Default)]
pub struct RouteTable {
    brokers: HashMap<BrokerKey, Registered>,
    /// Replica sets with no broker left: their cluster and topics.
    departed: HashMap<String, (String, Vec<TopicConf>)>,
}

impl RouteTable {
    /// Records a registration; true if the broker is new (or came back).
    /// Two brokers claiming one id (two masters after a failover): the one
    /// of the higher epoch stands, the other is refused.
    pub fn register(&mut self, registration: BrokerRegistration, conn: u64) -> Result<bool, String> {
        let key = (registration.broker_name.clone(), registration.broker_id);
        if let Some(held) = self.brokers.get(&key) {
            let (old, new) = (&held.registration, &registration);
            if old.addr != new.addr && old.replica.epoch > new.replica.epoch {
                return Err(format!(
                    "{}/{} is held by {} in epoch {}; {} claims it in epoch {}",
                    new.broker_name, new.broker_id, old.addr, old.replica.epoch, new.addr, new.replica.epoch
                ));
            }
        }
        let new = !self.brokers.contains_key(&key);
        self.departed.remove(&registration.broker_name);
        self.brokers.insert(key, Registered { registration, last_seen: Instant::now(), conn });
        Ok(new)
    }

    /// Forgets a broker; true if it was known.
    pub fn unregister(&mut self, broker_name: &str, broker_id: u64) -> bool {
        let key = (broker_name.to_string(), broker_id);
        !self.remove_where(|r| (&r.registration.broker_name, r.registration.broker_id) == (&key.0, key.1)).is_empty()
    }

    /// Forgets every broker last registered on connection `conn`.
    pub fn connection_closed(&mut self, conn: u64) -> Vec<BrokerKey> {
        self.remove_where(|r| r.conn == conn)
    }

    /// Forgets every broker not heard from within `expiry`.
    pub fn expire(&mut self, now: Instant, expiry: Duration) -> Vec<BrokerKey> {
        self.remove_where(|r| now.saturating_duration_since(r.last_seen) > expiry)
    }

    fn remove_where(&mut self, gone: impl Fn(&Registered) -> bool) -> Vec<BrokerKey> {
        let keys: Vec<BrokerKey> = self.brokers.iter().filter(|(_, r)| gone(r)).map(|(k, _)| k.clone()).collect();
        for key in &keys {
            let Some(gone) = self.brokers.remove(key) else { continue };
            let reg = gone.registration;
            if !self.brokers.keys().any(|(name, _)| *name == reg.broker_name) {
                self.departed.insert(reg.broker_name, (reg.cluster, reg.topics));
            }
        }
        keys
    }

    /// Where `topic` lives: every replica set with a broker holding it,
    /// its addresses by id, and its queues as its master registered them
    /// (or its lowest id, with no master registered).
    pub fn route(&self, topic: &str) -> Option<TopicRoute> {
        // Replica set → its addresses, and the queues of its lowest id.
        let mut sets: BTreeMap<&str, (BrokerData, Option<QueuesOf>)> = BTreeMap::new();
        for r in self.brokers.values() {
            let reg = &r.registration;
            let Some(conf) = reg.topics.iter().find(|t| t.name == topic) else { continue };
            let (data, queues) = sets.entry(&reg.broker_name).or_insert_with(|| {
                let data = BrokerData {
                    cluster: reg.cluster.clone(),
                    broker_name: reg.broker_name.clone(),
                    addrs: BTreeMap::new(),
                };
                (data, None)
            });
            data.addrs.insert(reg.broker_id, reg.addr.clone());
            let mine = QueueData {
                broker_name: reg.broker_name.clone(),
                write_queues: conf.write_queues,
                read_queues: conf.read_queues,
                perm: conf.perm,
            };
            if queues.as_ref().is_none_or(|(id, _)| reg.broker_id < *id) {
                *queues = Some((reg.broker_id, mine));
            }
        }
        for (name, (cluster, topics)) in &self.departed {
            let Some(conf) = topics.iter().find(|t| t.name == topic) else { continue };
            let data = BrokerData { cluster: cluster.clone(), broker_name: name.clone(), addrs: BTreeMap::new() };
            let queues = QueueData {
                broker_name: name.clone(),
                write_queues: conf.write_queues,
                read_queues: conf.read_queues,
                perm: conf.perm,
            };
            sets.insert(name, (data, Some((0, queues))));
        }
        if sets.is_empty() {
            return None;
        }
        let mut route = TopicRoute { topic: topic.to_string(), ..TopicRoute::default() };
        for (_, (data, queues)) in sets {
            route.brokers.push(data);
            route.queues.extend(queues.map(|(_, q)| q));
        }
        Some(route)
    }

    /// Every registered broker, by cluster, name and id.
    pub fn cluster(&self, now: Instant) -> Vec<ClusterBroker> {
        let mut out: Vec<ClusterBroker> = self
            .brokers
            .values()
            .map(|r| {
                let reg = &r.registration;
                ClusterBroker {
                    cluster: reg.cluster.clone(),
                    broker_name: reg.broker_name.clone(),
                    broker_id: reg.broker_id,
                    addr: reg.addr.clone(),
                    version: reg.version.clone(),
                    topics: u32::try_from(reg.topics.len()).unwrap_or(u32::MAX),
                    msgs_in_per_s: reg.msgs_in_per_s,
                    msgs_out_per_s: reg.msgs_out_per_s,
                    last_seen_ms: u64::try_from(now.saturating_duration_since(r.last_seen).as_millis())
                        .unwrap_or(u64::MAX),
                    replica: reg.replica.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.cluster, &a.broker_name, a.broker_id).cmp(&(&b.cluster, &b.broker_name, b.broker_id)));
        out
    }

    /// Every topic any broker holds, with its queues summed over replica
    /// sets (each set counted once).
    pub fn topics(&self) -> Vec<TopicInfo> {
        let mut queues: BTreeMap<&str, BTreeMap<&str, u32>> = BTreeMap::new();
        for r in self.brokers.values() {
            for t in &r.registration.topics {
                let per_set = queues.entry(&t.name).or_default();
                let q = per_set.entry(&r.registration.broker_name).or_default();
                *q = (*q).max(t.write_queues.max(t.read_queues));
            }
        }
        queues
            .into_iter()
            .map(|(name, sets)| TopicInfo { name: name.to_string(), queues: sets.values().sum(), queue_stats: vec![] })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brook_proto::route::{TopicConf, PERM_READ_WRITE};

    fn reg(name: &str, id: u64, addr: &str, topics: &[(&str, u32)]) -> BrokerRegistration {
        BrokerRegistration {
            cluster: "c".into(),
            broker_name: name.into(),
            broker_id: id,
            addr: addr.into(),
            version: "0".into(),
            topics: topics
                .iter()
                .map(|(t, q)| TopicConf { name: (*t).into(), write_queues: *q, read_queues: *q, perm: PERM_READ_WRITE })
                .collect(),
            msgs_in_per_s: 0.0,
            msgs_out_per_s: 0.0,
            replica: Default::default(),
        }
    }

    #[test]
    fn routes_gather_every_replica_set_holding_the_topic() {
        let mut table = RouteTable::default();
        assert_eq!(table.register(reg("b", 0, "127.0.0.2:1", &[("t", 4)]), 1), Ok(true));
        assert_eq!(table.register(reg("a", 0, "127.0.0.1:1", &[("t", 8), ("u", 1)]), 2), Ok(true));
        assert_eq!(table.register(reg("a", 1, "127.0.0.3:1", &[("t", 8)]), 3), Ok(true));
        assert_eq!(table.register(reg("a", 0, "127.0.0.1:1", &[("t", 8), ("u", 1)]), 2), Ok(false), "again: not new");
        let route = table.route("t").expect("route");
        let names: Vec<&str> = route.brokers.iter().map(|b| b.broker_name.as_str()).collect();
        assert_eq!(names, ["a", "b"], "in name order");
        assert_eq!(route.broker("a").and_then(BrokerData::master), Some("127.0.0.1:1"));
        assert_eq!(route.broker("a").map(|b| b.addrs.len()), Some(2));
        assert_eq!(route.queues.iter().map(|q| q.write_queues).collect::<Vec<_>>(), [8, 4]);
        assert_eq!(table.route("nope"), None);
        assert_eq!(
            table.topics().iter().map(|t| (t.name.as_str(), t.queues)).collect::<Vec<_>>(),
            [("t", 12), ("u", 1)]
        );
        // The master's connection closes: it is gone, its slave stays.
        assert_eq!(table.connection_closed(2), vec![("a".to_string(), 0)]);
        let route = table.route("t").expect("route");
        assert_eq!(route.broker("a").and_then(BrokerData::master), None);
        assert!(table.unregister("b", 0));
        assert!(!table.unregister("b", 0));
        // b left: its queues stay in the route, with no address.
        let route = table.route("t").expect("route");
        assert_eq!(route.broker("b").map(|b| b.addrs.len()), Some(0));
        assert_eq!(route.queues.iter().map(|q| q.write_queues).collect::<Vec<_>>(), [8, 4]);
        assert!(table.cluster(Instant::now()).iter().all(|b| b.broker_name != "b"), "no address to list");
        assert_eq!(table.expire(Instant::now() + Duration::from_secs(10), Duration::from_secs(5)).len(), 1);
        // a's last broker expired: a is departed too; b registering again
        // with fewer topics replaces what it left.
        assert_eq!(table.route("t").map(|r| r.queues.len()), Some(2));
        assert_eq!(table.register(reg("b", 0, "127.0.0.2:1", &[("u", 2)]), 4), Ok(true));
        assert_eq!(table.route("t").map(|r| r.broker("b").is_some()), Some(false), "b no longer holds t");
        assert_eq!(table.cluster(Instant::now()).len(), 1, "only b");
    }

    #[test]
    fn of_two_masters_the_higher_epoch_stands() {
        let mut table = RouteTable::default();
        let at = |addr: &str, epoch: u32| {
            let mut r = reg("a", 0, addr, &[("t", 1)]);
            r.replica.epoch = epoch;
            r
        };
        assert_eq!(table.register(at("127.0.0.1:1", 3), 1), Ok(true));
        assert_eq!(table.register(at("127.0.0.2:1", 4), 2), Ok(false), "the new master replaces it");
        assert!(table.register(at("127.0.0.1:1", 3), 1).is_err(), "the old one is refused");
        assert_eq!(
            table.route("t").and_then(|r| r.broker("a").and_then(|b| b.master().map(String::from))),
            Some("127.0.0.2:1".to_string())
        );
    }
}
