//! Commits a consumer could not make while it read a replica set from a
//! slave (a slave takes no commits): held here, per replica set, until a
//! part joins its master again and makes them first.

use brook_proto::request::QueueRef;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Offsets consumed from a slave, which takes no commits: held per replica
/// set (the newest per queue) and committed to the master once a part
/// joins it again.
#[derive(Default)]
pub(crate) struct HeldCommits(Mutex<BTreeMap<String, BTreeMap<QueueRef, u64>>>);

impl HeldCommits {
    pub(crate) fn hold(&self, broker: &str, queue: &QueueRef, offset: u64) {
        let mut held = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = held.entry(broker.to_string()).or_default().entry(queue.clone()).or_insert(offset);
        *slot = (*slot).max(offset);
    }

    pub(crate) fn take(&self, broker: &str) -> BTreeMap<QueueRef, u64> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(broker).unwrap_or_default()
    }
}
