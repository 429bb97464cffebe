//! Members and who holds which queue: average allocation per topic among
//! the members subscribed to it, recomputed when members come and go; a
//! change bumps the generation and tells each affected member.

use crate::actors::consumer_group::ConsumerGroupActor;
use crate::cluster::view::GlobalQueues;
use brook_proto::request::{ConsumeMode, QueueRef};
use brook_proto::{Frame, Request};
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// Average allocation: `queues` (sorted) split into contiguous, near-equal
/// blocks over `members` (sorted); the first `len % n` members get one more.
pub fn allocate_averagely<'a, Q: Clone>(queues: &[Q], members: &[&'a str]) -> Vec<(&'a str, Vec<Q>)> {
    let n = members.len();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let (base, extra) = (queues.len() / n, queues.len() % n);
    let mut at = 0;
    for (i, member) in members.iter().enumerate() {
        let take = base + usize::from(i < extra);
        out.push((*member, queues.get(at..at + take).unwrap_or(&[]).to_vec()));
        at += take;
    }
    out
}

impl ConsumerGroupActor {
    pub(super) fn compute_assignment(&self) -> HashMap<String, Vec<QueueRef>> {
        let mut by_topic: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (id, member) in &self.members {
            for sub in &member.subscriptions {
                by_topic.entry(sub.topic.as_str()).or_default().push(id.as_str());
            }
        }
        let mut out: HashMap<String, Vec<QueueRef>> = self.members.keys().map(|m| (m.clone(), Vec::new())).collect();
        for (topic, mut members) in by_topic {
            members.sort_unstable();
            members.dedup();
            let Some(config) = self.topics.get(topic) else { continue };
            let queues: Vec<QueueRef> =
                (0..config.queues).map(|queue| QueueRef { topic: topic.to_string(), queue }).collect();
            let shares = match (self.state.mode, self.view.global_queues(topic, config.queues)) {
                (ConsumeMode::Broadcasting, _) => members.iter().map(|m| (*m, queues.clone())).collect(),
                (ConsumeMode::Clustering, None) => allocate_averagely(&queues, &members),
                (ConsumeMode::Clustering, Some(global)) => self.own_shares(topic, &global, &members),
            };
            for (member, mut share) in shares {
                out.entry(member.to_string()).or_default().append(&mut share);
            }
        }
        for list in out.values_mut() {
            list.sort();
        }
        out
    }

    /// This broker's part of an allocation over the cluster's queues of
    /// `topic` (every broker computes the same one from the same members,
    /// and hands out its own queues of it).
    fn own_shares<'a>(&self, topic: &str, global: &GlobalQueues, members: &[&'a str]) -> Vec<(&'a str, Vec<QueueRef>)> {
        let all: Vec<(&str, u32)> =
            global.iter().flat_map(|(broker, queues)| (0..*queues).map(move |q| (broker.as_str(), q))).collect();
        let own = self.view.own();
        allocate_averagely(&all, members)
            .into_iter()
            .map(|(member, share)| {
                let mine = share
                    .into_iter()
                    .filter(|(broker, _)| *broker == own)
                    .map(|(_, queue)| QueueRef { topic: topic.to_string(), queue })
                    .collect();
                (member, mine)
            })
            .collect()
    }

    /// Recomputes the assignment; on a change bumps the generation and
    /// tells every member whose queues changed (except `quiet`, who is
    /// being answered directly).
    pub(super) fn rebalance(&mut self, quiet: Option<&str>) {
        let next = self.compute_assignment();
        if next == self.assignment {
            return;
        }
        self.generation += 1;
        for (member, queues) in &next {
            if Some(member.as_str()) == quiet || self.assignment.get(member) == Some(queues) {
                continue;
            }
            if let Some(m) = self.members.get(member) {
                let notice = Frame::Oneway { body: Request::AssignmentChanged { group: self.name.clone() } };
                // A full outbox means the member is busy reading; it will
                // see the new assignment on its next heartbeat anyway.
                let _ = m.client.notify.try_send(notice.into());
            }
        }
        slog::info!(self.logger, "group rebalanced"; "group" => &self.name, "generation" => self.generation,
            "members" => self.members.len());
        self.assignment = next;
    }

    pub(super) fn remove_member(&mut self, member: &str, why: &str) {
        if self.members.remove(member).is_some() {
            self.locks.retain(|_, (holder, _)| holder != member);
            slog::info!(self.logger, "member left"; "group" => &self.name, "member" => member, "why" => why);
            self.rebalance(None);
        }
    }

    pub(super) fn expire_members(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_seen) > m.session_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for member in expired {
            self.remove_member(&member, "heartbeat expired");
        }
    }
}
