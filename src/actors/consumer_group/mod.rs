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
//!
//! Files: [`messages`] (what the mailbox takes), [`assignment`] (members
//! and who holds which queue), [`handlers`] (one per message).

pub mod assignment;
pub mod handlers;
pub mod messages;

pub use assignment::allocate_averagely;
pub use messages::*;

use crate::actors::queue_registry::QueueRegistry;
use crate::cluster::view::ClusterView;
use crate::config::GroupsConfig;
use crate::error::Error;
use crate::store::group_state::{self, GroupState, OffsetKey, StateFile};
use crate::store::topics::TopicTable;
use actix::prelude::*;
use brook_proto::codec::Outbound;
use brook_proto::request::{ConsumeMode, QueueRef, RetryPolicy, Subscription};
use std::collections::{BTreeMap, HashMap};
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

/// A member as the group knows it.
struct Member {
    client: ClientHandle,
    subscriptions: Vec<Subscription>,
    last_seen: Instant,
    session_timeout: Duration,
}

/// One consumer group.
pub struct ConsumerGroupActor {
    name: String,
    file: StateFile,
    /// Bumped for every write of `state`: the file keeps the newest.
    state_version: u64,
    config: GroupsConfig,
    registry: Arc<QueueRegistry>,
    /// The cluster-wide queue lists (standalone: none).
    view: Arc<ClusterView>,
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
    /// Offset flushes failed in a row.
    flush_failures: u64,
    logger: slog::Logger,
}

impl ConsumerGroupActor {
    /// The actor of group `name`, its state loaded from `dir`.
    pub fn new(
        name: String,
        dir: PathBuf,
        config: GroupsConfig,
        (registry, view): (Arc<QueueRegistry>, Arc<ClusterView>),
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
            view,
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
            flush_failures: 0,
            logger,
        }
    }

    fn offset_key(&self, member: &str, queue: &QueueRef) -> OffsetKey {
        let member = (self.state.mode == ConsumeMode::Broadcasting).then(|| member.to_string());
        (member, queue.topic.clone(), queue.queue)
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
            match result {
                Ok(Ok(())) if act.flush_failures > 0 => {
                    slog::info!(act.logger, "group offsets written again"; "group" => &act.name,
                        "failed_flushes" => act.flush_failures);
                    act.flush_failures = 0;
                }
                Ok(Ok(())) => {}
                failed => {
                    act.dirty = true;
                    // Once per streak: on a full disk every flush fails.
                    if act.flush_failures == 0 {
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            Err(e) => e.to_string(),
                            Ok(Ok(())) => String::new(),
                        };
                        slog::error!(act.logger, "cannot write group offsets; retried every flush, logged again \
                            when written"; "group" => &act.name, "error" => error);
                    }
                    act.flush_failures += 1;
                }
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
