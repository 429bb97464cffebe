//! The consumer group's handlers, one per message.

use crate::actors::consumer_group::messages::*;
use crate::actors::consumer_group::{invalid, ConsumerGroupActor, Member};
use crate::actors::queue::{OffsetAtTime, Range};
use crate::error::{Error, Result};
use crate::store::group_state::OffsetKey;
use actix::prelude::*;
use brook_proto::names::validate_name;
use brook_proto::request::{ConsumeMode, GroupInfo, MemberInfo, QueueLag, QueueOffset, QueueRef, StartFrom};
use brook_proto::{Frame, Request};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

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
    type Result = ResponseActFuture<Self, Result<Vec<QueueOffset>>>;

    fn handle(&mut self, msg: Commit, _: &mut Context<Self>) -> Self::Result {
        if msg.generation != 0 && msg.generation < self.reset_generation {
            return Box::pin(fut::ready(Ok(Vec::new())));
        }
        let mut moved = Vec::new();
        let mut lower = Vec::new();
        for offset in msg.offsets {
            let queue = QueueRef { topic: offset.topic.clone(), queue: offset.queue };
            let slot = self.state.offsets.entry(self.offset_key(&msg.member, &queue)).or_insert(0);
            if offset.offset > *slot {
                *slot = offset.offset;
                self.dirty = true;
                moved.push(offset);
            } else if offset.offset < *slot {
                lower.push(offset);
            }
        }
        if lower.is_empty() {
            return Box::pin(fut::ready(Ok(moved)));
        }
        // A late commit from a previous owner never moves an offset back;
        // but an offset past its queue's end (a log that lost its tail, a
        // promoted replica that was behind) is no place to keep: a commit
        // within the queue replaces it, as a consumer that went back to
        // the end makes. Otherwise a restarted consumer would start past
        // every message stored up to there.
        let ends: Vec<_> = lower.iter().map(|o| self.registry.queue(&o.topic, o.queue).send(Range)).collect();
        let work = async move { futures::future::join_all(ends).await };
        Box::pin(work.into_actor(self).map(move |ends, act, _| {
            for (offset, end) in lower.into_iter().zip(ends) {
                let Ok(Ok((_, end))) = end else { continue };
                let key = act.offset_key(&msg.member, &QueueRef { topic: offset.topic.clone(), queue: offset.queue });
                let Some(slot) = act.state.offsets.get_mut(&key) else { continue };
                if *slot > end && offset.offset <= end && offset.offset < *slot {
                    slog::info!(act.logger, "group offset past its queue's end taken back";
                        "group" => &act.name, "topic" => &offset.topic, "queue" => offset.queue,
                        "from" => *slot, "to" => offset.offset, "queue_end" => end);
                    *slot = offset.offset;
                    act.dirty = true;
                    moved.push(offset);
                }
            }
            Ok(moved)
        }))
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
        let skipped = self.state.skipped.clone();
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
                    skipped_by_retention: skipped.lost(&key),
                });
            }
            let dlq = brook_proto::system::dlq_topic(&group);
            let dlq_messages = match topics.get(&dlq) {
                Some(_) => registry.queue(&dlq, 0).send(Range).await?.map(|(min, max)| max - min)?,
                None => 0,
            };
            Ok(GroupInfo {
                group,
                mode,
                generation,
                members,
                offsets: lag,
                dlq_messages,
                skipped_by_retention: skipped.total(),
                skipped_since_ms: skipped.since_ms,
            })
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

impl Handler<RetentionDeleted> for ConsumerGroupActor {
    type Result = u64;

    fn handle(&mut self, msg: RetentionDeleted, _: &mut Context<Self>) -> u64 {
        let mut lost = Vec::new();
        for (key, committed) in &self.state.offsets {
            let (_, topic, queue) = key;
            let Some(min) = msg.mins.get(&(topic.clone(), *queue)) else { continue };
            let n = self.state.skipped.count(key, *committed, *min, msg.at_ms);
            if n > 0 {
                lost.push((key.clone(), n));
            }
        }
        if lost.is_empty() {
            return 0;
        }
        self.dirty = true;
        let total: u64 = lost.iter().map(|(_, n)| n).sum();
        let queues: Vec<String> = lost
            .iter()
            .map(|((member, topic, queue), n)| match member {
                Some(member) => format!("{topic}:{queue}@{member}={n}"),
                None => format!("{topic}:{queue}={n}"),
            })
            .collect();
        slog::warn!(self.logger, "retention deleted messages the group had not consumed";
            "group" => &self.name, "lost" => total, "queues" => queues.join(" "),
            "lost_in_all" => self.state.skipped.total());
        total
    }
}

impl Handler<NeededOffsets> for ConsumerGroupActor {
    type Result = Vec<(String, u32, u64)>;

    fn handle(&mut self, _: NeededOffsets, _: &mut Context<Self>) -> Self::Result {
        if self.members.is_empty() {
            return Vec::new();
        }
        self.state.offsets.iter().map(|((_, topic, queue), offset)| (topic.clone(), *queue, *offset)).collect()
    }
}

impl Handler<RoutesChanged> for ConsumerGroupActor {
    type Result = ();

    fn handle(&mut self, _: RoutesChanged, _: &mut Context<Self>) {
        self.rebalance(None);
    }
}
