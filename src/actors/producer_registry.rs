//! The producer registry: the live connections of each producer group, so
//! the transaction checker can ask one of them about an overdue half.

use crate::actors::consumer_group::ClientHandle;
use dashmap::DashMap;

/// The connections of each producer group.
#[derive(Debug, Default)]
pub struct ProducerRegistry {
    groups: DashMap<String, Vec<ClientHandle>>,
}

impl ProducerRegistry {
    /// Adds a connection to a producer group.
    pub fn register(&self, group: &str, client: ClientHandle) {
        let mut members = self.groups.entry(group.to_string()).or_default();
        members.retain(|c| !c.notify.is_closed() && c.conn_id != client.conn_id);
        members.push(client);
    }

    /// A live connection of `group`, the one with client id `prefer` if it
    /// is there.
    pub fn pick(&self, group: &str, prefer: &str) -> Option<ClientHandle> {
        let mut members = self.groups.get_mut(group)?;
        members.retain(|c| !c.notify.is_closed());
        members.iter().find(|c| c.client_id == prefer).or_else(|| members.first()).cloned()
    }
}
