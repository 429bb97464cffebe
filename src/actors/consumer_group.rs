//! The ConsumerGroupActor: one per consumer group, the only mutator of the
//! group's state — members, queue assignment, orderly-consumption locks and
//! committed offsets. Everything goes through its mailbox, so there are no
//! locks around that state; its periodic jobs (member expiry, offset flush)
//! enqueue work on the same actor.
//!
//! Members join and stay by heartbeat and leave explicitly, by expiry
//! (`session_timeout_ms`) or when their connection closes. Queues are divided
//! per topic among the members subscribed to it by average allocation
//! (sorted members get contiguous, near-equal blocks of sorted queues), so
//! every member computes the same answer; broadcasting gives every member
//! every queue. When the assignment changes the generation bumps and each
//! affected member is told over its own connection.

use crate::actors::queue::{OffsetAtTime, Range};
use crate::actors::queue_registry::QueueRegistry;
use crate::config::GroupsConfig;
use crate::error::{Error, Result};
use crate::store::group_state::{self, GroupState, OffsetKey, StateFile};
use crate::store::topics::TopicTable;
use actix::prelude::*;
use brook_proto::codec::Outbound;
use brook_proto::names::validate_name;
use brook_proto::request::{
    ConsumeMode, GroupInfo, Heartbeat, MemberInfo, QueueLag, QueueOffset, QueueRef, RetryPolicy, StartFrom,
    Subscription,
};
use brook_proto::{Frame, Request};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How the broker reaches a client: its connection's outgoing frames.
#[derive(Debug, Clone)]
pub struct ClientHandle {
    /// Unique per connection.
    pub conn_id: u64,
    /// The client's id from its hello.
    pub client_id: String,
    /// Frames sent here go out on the client's connection.
    pub notify: mpsc::Sender<Outbound>,
}

struct Member {
    client: ClientHandle,
    subscriptions: Vec<Subscription>,
    last_seen: Instant,
    session_timeout: Duration,
}

/// A member's heartbeat, with the connection it came on.
#[derive(Message)]
#[rtype(result = "Result<(u64, Vec<QueueRef>)>")]
pub struct Beat {
    /// The heartbeat.
    pub heartbeat: Heartbeat,
    /// Its connection.
    pub client: ClientHandle,
}

/// A member leaves.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    /// Member id.
    pub member: String,
}

/// A connection closed: its members are gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConnectionClosed {
    /// The connection.
    pub conn_id: u64,
}

/// Commit offsets.
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct Commit {
    /// Committing member.
    pub member: String,
    /// The offsets.
    pub offsets: Vec<QueueOffset>,
    /// The generation the member consumed under (0: not tracked).
    pub generation: u64,
}

/// Where a member should start on a queue.
#[derive(Message)]
#[rtype(result = "Result<u64>")]
pub struct Fetch {
    /// Asking member.
    pub member: String,
    /// The queue.
    pub queue: QueueRef,
}

/// Take or renew an orderly lock.
#[derive(Message)]
#[rtype(result = "Result<u64>")]
pub struct Lock {
    /// Asking member.
    pub member: String,
    /// The queue.
    pub queue: QueueRef,
}

/// Release an orderly lock.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unlock {
    /// Releasing member.
    pub member: String,
    /// The queue.
    pub queue: QueueRef,
}

/// Describe the group.
#[derive(Message)]
#[rtype(result = "Result<GroupInfo>")]
pub struct Describe;

/// Sets committed offsets regardless of where they are (backtrack or skip),
/// and tells every member to restart those queues.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reset {
    /// Topic.
    pub topic: String,
    /// New offsets.
    pub offsets: Vec<QueueOffset>,
}

/// The group's retry policy (from its latest heartbeat).
#[derive(Message)]
#[rtype(result = "RetryPolicy")]
pub struct GetRetryPolicy;

/// Write committed offsets now (shutdown).
#[derive(Message)]
#[rtype(result = "Result<()>")]
pub struct FlushOffsets;

/// One consumer group.
pub struct ConsumerGroupActor {
    name: String,
    file: StateFile,
    /// Bumped for every write of `state`: the file keeps the newest.
    state_version: u64,
    config: GroupsConfig,
    registry: Arc<QueueRegistry>,
    topics: Arc<TopicTable>,
    state: GroupState,
    members: BTreeMap<String, Member>,
    assignment: HashMap<String, Vec<QueueRef>>,
    generation: u64,
    locks: HashMap<QueueRef, (String, Instant)>,
    retry: RetryPolicy,
    /// Commits made under an earlier generation than this are from before
    /// the last reset, and ignored.
    reset_generation: u64,
    dirty: bool,
    flushing: bool,
    logger: slog::Logger,
}

/// Average allocation: `queues` (sorted) split into contiguous, near-equal
/// blocks over `members` (sorted); the first `len % n` members get one more.
pub fn allocate_averagely<'a>(queues: &[QueueRef], members: &[&'a str]) -> Vec<(&'a str, Vec<QueueRef>)> {
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
    /// The actor of group `name`, its state loaded from `dir`.
    pub fn new(
        name: String,
        dir: PathBuf,
        config: GroupsConfig,
        registry: Arc<QueueRegistry>,
        topics: Arc<TopicTable>,
        logger: slog::Logger,
    ) -> Self {
        let path = group_state::path(&dir, &name);
        let state = match GroupState::load(&path) {
            Ok(state) => state.unwrap_or_default(),
            Err(e) => {
                slog::error!(logger, "cannot read group state; starting empty"; "group" => &name, "error" => %e);
                GroupState::default()
            }
        };
        Self {
            name,
            file: StateFile::new(path),
            state_version: 0,
            config,
            registry,
            topics,
            state,
            members: BTreeMap::new(),
            assignment: HashMap::new(),
            generation: 0,
            locks: HashMap::new(),
            retry: RetryPolicy::default(),
            reset_generation: 0,
            dirty: false,
            flushing: false,
            logger,
        }
    }

    fn offset_key(&self, member: &str, queue: &QueueRef) -> OffsetKey {
        let member = (self.state.mode == ConsumeMode::Broadcasting).then(|| member.to_string());
        (member, queue.topic.clone(), queue.queue)
    }

    fn compute_assignment(&self) -> HashMap<String, Vec<QueueRef>> {
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
            let shares = match self.state.mode {
                ConsumeMode::Broadcasting => members.iter().map(|m| (*m, queues.clone())).collect(),
                ConsumeMode::Clustering => allocate_averagely(&queues, &members),
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

    /// Recomputes the assignment; on a change bumps the generation and
    /// tells every member whose queues changed (except `quiet`, who is
    /// being answered directly).
    fn rebalance(&mut self, quiet: Option<&str>) {
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

    fn remove_member(&mut self, member: &str, why: &str) {
        if self.members.remove(member).is_some() {
            self.locks.retain(|_, (holder, _)| holder != member);
            slog::info!(self.logger, "member left"; "group" => &self.name, "member" => member, "why" => why);
            self.rebalance(None);
        }
    }

    fn expire_members(&mut self) {
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

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if !self.dirty || self.flushing {
            return;
        }
        self.dirty = false;
        self.flushing = true;
        self.state_version += 1;
        let (state, file, version) = (self.state.clone(), self.file.clone(), self.state_version);
        let work = async move { tokio::task::spawn_blocking(move || file.store(&state, version)).await };
        ctx.spawn(work.into_actor(self).map(|result, act, _| {
            act.flushing = false;
            if !matches!(result, Ok(Ok(()))) {
                act.dirty = true;
                slog::error!(act.logger, "cannot write group offsets"; "group" => &act.name);
            }
        }));
    }
}

impl Actor for ConsumerGroupActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(4096);
        let tick = Duration::from_millis((self.config.session_timeout_ms / 10).clamp(10, 1000));
        ctx.run_interval(tick, |act, _| act.expire_members());
        ctx.run_interval(Duration::from_millis(self.config.offset_flush_interval_ms), |act, ctx| act.flush(ctx));
    }
}

fn invalid(msg: String) -> Error {
    Error::InvalidArgument(msg)
}

impl Handler<Beat> for ConsumerGroupActor {
    type Result = Result<(u64, Vec<QueueRef>)>;

    fn handle(&mut self, beat: Beat, _: &mut Context<Self>) -> Self::Result {
        let Beat { heartbeat: hb, client } = beat;
        if hb.member.is_empty() || hb.member.len() > 255 {
            return Err(invalid("member id must be 1..=255 bytes".into()));
        }
        for sub in &hb.subscriptions {
            validate_name("topic", &sub.topic).map_err(Error::InvalidName)?;
            crate::filter::TagFilter::parse(sub.tags.as_deref()).map_err(invalid)?;
            if let Some(sql) = &sub.sql {
                crate::filter::sql::parse(sql).map_err(|e| invalid(format!("subscription to {}: {e}", sub.topic)))?;
            }
        }
        if !self.members.is_empty() && hb.mode != self.state.mode {
            return Err(invalid(format!(
                "group {} consumes in {:?} mode; a member cannot join in {:?} mode",
                self.name, self.state.mode, hb.mode
            )));
        }
        if self.state.mode != hb.mode || self.state.start != hb.start {
            self.state.mode = hb.mode;
            self.state.start = hb.start;
            self.dirty = true;
        }
        let session = match hb.session_timeout_ms {
            0 => self.config.session_timeout_ms,
            ms => ms.max(10),
        };
        self.retry = hb.retry;
        let joined = !self.members.contains_key(&hb.member);
        self.members.insert(
            hb.member.clone(),
            Member {
                client,
                subscriptions: hb.subscriptions,
                last_seen: Instant::now(),
                session_timeout: Duration::from_millis(session),
            },
        );
        if joined {
            slog::info!(self.logger, "member joined"; "group" => &self.name, "member" => &hb.member);
        }
        self.rebalance(Some(&hb.member));
        Ok((self.generation, self.assignment.get(&hb.member).cloned().unwrap_or_default()))
    }
}

impl Handler<Leave> for ConsumerGroupActor {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        self.remove_member(&msg.member, "left");
    }
}

impl Handler<ConnectionClosed> for ConsumerGroupActor {
    type Result = ();

    fn handle(&mut self, msg: ConnectionClosed, _: &mut Context<Self>) {
        let gone: Vec<String> =
            self.members.iter().filter(|(_, m)| m.client.conn_id == msg.conn_id).map(|(id, _)| id.clone()).collect();
        for member in gone {
            self.remove_member(&member, "connection closed");
        }
    }
}

impl Handler<Commit> for ConsumerGroupActor {
    type Result = Result<()>;

    fn handle(&mut self, msg: Commit, _: &mut Context<Self>) -> Self::Result {
        if msg.generation != 0 && msg.generation < self.reset_generation {
            return Ok(());
        }
        for offset in msg.offsets {
            let queue = QueueRef { topic: offset.topic, queue: offset.queue };
            let key = self.offset_key(&msg.member, &queue);
            let slot = self.state.offsets.entry(key).or_insert(0);
            // A late commit from a previous owner never moves an offset back.
            if offset.offset > *slot {
                *slot = offset.offset;
                self.dirty = true;
            }
        }
        Ok(())
    }
}

impl Handler<Fetch> for ConsumerGroupActor {
    type Result = ResponseActFuture<Self, Result<u64>>;

    fn handle(&mut self, msg: Fetch, _: &mut Context<Self>) -> Self::Result {
        let key = self.offset_key(&msg.member, &msg.queue);
        if let Some(offset) = self.state.offsets.get(&key) {
            let offset = *offset;
            return Box::pin(async move { Ok(offset) }.into_actor(self));
        }
        let Some(topic) = self.topics.get(&msg.queue.topic) else {
            let err = Error::TopicNotFound(msg.queue.topic.clone());
            return Box::pin(async move { Err(err) }.into_actor(self));
        };
        if msg.queue.queue >= topic.queues {
            let err =
                Error::QueueOutOfRange { topic: msg.queue.topic.clone(), queue: msg.queue.queue, queues: topic.queues };
            return Box::pin(async move { Err(err) }.into_actor(self));
        }
        let addr = self.registry.queue(&msg.queue.topic, msg.queue.queue);
        let start = self.state.start;
        let work = async move {
            match start {
                StartFrom::Latest => addr.send(Range).await?.map(|(_, max)| max),
                StartFrom::Earliest => addr.send(Range).await?.map(|(min, _)| min),
                StartFrom::Timestamp(ts) => addr.send(OffsetAtTime { ts }).await?,
            }
        };
        Box::pin(work.into_actor(self).map(move |result, act, _| {
            let offset = result?;
            // Fixing the start point makes it stable: a member that crashes
            // before committing resumes here, not at a new "latest".
            let slot = act.state.offsets.entry(key).or_insert(offset);
            act.dirty = true;
            Ok(*slot)
        }))
    }
}

impl Handler<Lock> for ConsumerGroupActor {
    type Result = Result<u64>;

    fn handle(&mut self, msg: Lock, _: &mut Context<Self>) -> Self::Result {
        let owns = self.assignment.get(&msg.member).is_some_and(|qs| qs.contains(&msg.queue));
        if !owns {
            return Err(Error::NotOwner(format!(
                "{}/{} is not assigned to {}",
                msg.queue.topic, msg.queue.queue, msg.member
            )));
        }
        let now = Instant::now();
        if let Some((holder, expires)) = self.locks.get(&msg.queue) {
            if *holder != msg.member && *expires > now {
                return Err(Error::NotOwner(format!(
                    "{}/{} is still locked by {holder}",
                    msg.queue.topic, msg.queue.queue
                )));
            }
        }
        let ttl = Duration::from_millis(self.config.lock_ttl_ms);
        self.locks.insert(msg.queue, (msg.member, now + ttl));
        Ok(self.config.lock_ttl_ms)
    }
}

impl Handler<Unlock> for ConsumerGroupActor {
    type Result = ();

    fn handle(&mut self, msg: Unlock, _: &mut Context<Self>) {
        if self.locks.get(&msg.queue).is_some_and(|(holder, _)| *holder == msg.member) {
            self.locks.remove(&msg.queue);
        }
    }
}

impl Handler<Describe> for ConsumerGroupActor {
    type Result = ResponseFuture<Result<GroupInfo>>;

    fn handle(&mut self, _: Describe, _: &mut Context<Self>) -> Self::Result {
        let now = Instant::now();
        let members: Vec<MemberInfo> = self
            .members
            .iter()
            .map(|(id, m)| MemberInfo {
                member: id.clone(),
                client: m.client.client_id.clone(),
                idle_ms: now.duration_since(m.last_seen).as_millis() as u64,
                queues: self.assignment.get(id).cloned().unwrap_or_default(),
            })
            .collect();
        // Every queue with an offset or an owner.
        let mut rows: BTreeSet<OffsetKey> = self.state.offsets.keys().cloned().collect();
        for (member, queues) in &self.assignment {
            for q in queues {
                rows.insert(self.offset_key(member, q));
            }
        }
        let offsets = self.state.offsets.clone();
        let registry = self.registry.clone();
        let topics = self.topics.clone();
        let (group, mode, generation) = (self.name.clone(), self.state.mode, self.generation);
        Box::pin(async move {
            let mut lag = Vec::with_capacity(rows.len());
            for key in rows {
                let (member, topic, queue) = key.clone();
                let max_offset = match topics.get(&topic) {
                    Some(t) if queue < t.queues => {
                        registry.queue(&topic, queue).send(Range).await?.map(|(_, max)| max)?
                    }
                    _ => 0,
                };
                let committed = offsets.get(&key).copied().unwrap_or(0);
                lag.push(QueueLag {
                    topic,
                    queue,
                    member,
                    committed,
                    max_offset,
                    lag: max_offset.saturating_sub(committed),
                });
            }
            let dlq = brook_proto::system::dlq_topic(&group);
            let dlq_messages = match topics.get(&dlq) {
                Some(_) => registry.queue(&dlq, 0).send(Range).await?.map(|(min, max)| max - min)?,
                None => 0,
            };
            Ok(GroupInfo { group, mode, generation, members, offsets: lag, dlq_messages })
        })
    }
}

impl Handler<Reset> for ConsumerGroupActor {
    type Result = ();

    fn handle(&mut self, msg: Reset, _: &mut Context<Self>) {
        let members: Vec<String> = self.members.keys().cloned().collect();
        for offset in &msg.offsets {
            let queue = QueueRef { topic: offset.topic.clone(), queue: offset.queue };
            match self.state.mode {
                ConsumeMode::Clustering => {
                    self.state.offsets.insert(self.offset_key("", &queue), offset.offset);
                }
                ConsumeMode::Broadcasting => {
                    // Every member that has an offset there, and every live one.
                    let mut keys: Vec<OffsetKey> = self
                        .state
                        .offsets
                        .keys()
                        .filter(|(_, t, q)| *t == queue.topic && *q == queue.queue)
                        .cloned()
                        .collect();
                    keys.extend(members.iter().map(|m| self.offset_key(m, &queue)));
                    for key in keys {
                        self.state.offsets.insert(key, offset.offset);
                    }
                }
            }
        }
        self.dirty = true;
        self.generation += 1;
        self.reset_generation = self.generation;
        let notice = Frame::Oneway { body: Request::OffsetsReset { group: self.name.clone(), topic: msg.topic } };
        for member in self.members.values() {
            let _ = member.client.notify.try_send(notice.clone().into());
        }
    }
}

impl Handler<GetRetryPolicy> for ConsumerGroupActor {
    type Result = MessageResult<GetRetryPolicy>;

    fn handle(&mut self, _: GetRetryPolicy, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.retry.clone())
    }
}

impl Handler<FlushOffsets> for ConsumerGroupActor {
    type Result = Result<()>;

    fn handle(&mut self, _: FlushOffsets, _: &mut Context<Self>) -> Self::Result {
        // Shutdown: write synchronously so the caller knows it is on disk
        // (after a periodic flush still writing, if one is).
        self.state_version += 1;
        self.file
            .store(&self.state, self.state_version)
            .map_err(|e| Error::io(format!("write {}", self.file.path().display()), e))?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(n: u32) -> Vec<QueueRef> {
        (0..n).map(|queue| QueueRef { topic: "t".into(), queue }).collect()
    }

    #[test]
    fn average_allocation_is_contiguous_and_near_equal() {
        let shares = allocate_averagely(&queues(10), &["a", "b", "c"]);
        let sizes: Vec<usize> = shares.iter().map(|(_, q)| q.len()).collect();
        assert_eq!(sizes, vec![4, 3, 3]);
        assert_eq!(shares[1].1.first().map(|q| q.queue), Some(4));
        let shares = allocate_averagely(&queues(2), &["a", "b", "c"]);
        assert_eq!(shares[2].1.len(), 0, "more members than queues leaves some idle");
        assert!(allocate_averagely(&queues(3), &[]).is_empty());
    }
}
