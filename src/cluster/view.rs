//! The cluster's queues of the topics this broker's consumer groups read:
//! for each, every replica set with a master in the topic's route and its
//! read queue count, asked of the name servers every few seconds. A group
//! allocates over that whole list (sorted by replica set, then queue) and
//! hands out its own broker's part, so members that heartbeat to every
//! broker get the same share everywhere and no member holds more than
//! ⌈queues / members⌉. A change wakes the groups to rebalance.

use crate::cluster::namesrv::NameServers;
use brook_proto::route::PERM_READ;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A topic's queues across the cluster: (replica set, read queues), sorted.
pub type GlobalQueues = Vec<(String, u32)>;

/// The cluster-wide queue lists, for the groups.
pub struct ClusterView {
    /// This broker's replica set name.
    own: String,
    names: Option<Arc<NameServers>>,
    routes: DashMap<String, GlobalQueues>,
    changed: watch::Sender<u64>,
}

impl ClusterView {
    /// A view over `names` (none: standalone, where groups allocate over
    /// their own queues).
    pub fn new(own: &str, names: Option<Arc<NameServers>>) -> Arc<Self> {
        let (changed, _) = watch::channel(0);
        Arc::new(Self { own: own.to_string(), names, routes: DashMap::new(), changed })
    }

    /// This broker's replica set name.
    pub fn own(&self) -> &str {
        &self.own
    }

    /// Tells of every change of a list.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// `topic`'s queues across the cluster, this broker's own count
    /// included as it is now; `None` when standalone. The first ask for a
    /// topic starts watching its route.
    pub fn global_queues(&self, topic: &str, own_queues: u32) -> Option<GlobalQueues> {
        self.names.as_ref()?;
        let mut list = self.routes.entry(topic.to_string()).or_default().clone();
        list.retain(|(name, _)| *name != self.own);
        list.push((self.own.clone(), own_queues));
        list.sort();
        Some(list)
    }

    /// Asks for every watched topic's route every `every`, until `stop`.
    pub async fn refresh(self: Arc<Self>, every: Duration, mut stop: watch::Receiver<bool>) {
        let Some(names) = self.names.clone() else { return };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
            let topics: Vec<String> = self.routes.iter().map(|e| e.key().clone()).collect();
            let mut changed = false;
            for topic in topics {
                let fresh = match names.route(&topic).await {
                    Ok(route) => {
                        let mut list: GlobalQueues = route
                            .queues
                            .iter()
                            .filter(|q| q.perm & PERM_READ != 0)
                            .filter(|q| route.broker(&q.broker_name).and_then(|b| b.master()).is_some())
                            .map(|q| (q.broker_name.clone(), q.read_queues))
                            .collect();
                        list.sort();
                        list
                    }
                    // Nowhere else (yet): only this broker's own queues.
                    Err(e) if e.code() == Some(brook_proto::ErrorCode::TopicNotFound) => Vec::new(),
                    // No name server answers: keep the last list.
                    Err(_) => continue,
                };
                if let Some(mut known) = self.routes.get_mut(&topic) {
                    if *known != fresh {
                        *known = fresh;
                        changed = true;
                    }
                }
            }
            if changed {
                self.changed.send_modify(|n| *n += 1);
            }
        }
    }
}
