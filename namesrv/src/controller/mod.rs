//! The controller: a Raft group of name servers (`--controller`) that
//! elects each replica set's master, gives brokers their persistent ids and
//! fences stale masters with epochs (RocketMQ 5's controller mode).
//!
//! - [`state`]: the replicated state and its commands.
//! - [`consensus`]: the small trait the controller uses, over openraft.
//! - [`store`], [`network`]: openraft's storage and transport.
//!
//! Liveness is not replicated: brokers heartbeat to the leader, which keeps
//! when it last heard from each in memory and, when a master has been
//! silent for `controller_broker_expiry_ms`, elects the live in-sync member
//! with the highest (epoch, end offset). A new leader gives every broker
//! one expiry to be heard from before it counts anyone gone.

pub mod consensus;
pub mod network;
pub mod state;
pub mod store;

use brook_proto::controller::{BrokerBeat, ControllerInfo, ControllerRequest, ControllerResponse, ReplicaSetView};
use brook_proto::{ErrorCode, WireError};
use consensus::{Consensus, ConsensusError, RaftConsensus};
use network::{PeerClient, PeerReply, PeerRequest};
use parking_lot::Mutex;
use state::{Command, ControllerState, Outcome};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

openraft::declare_raft_types!(
    /// The controller's Raft types: commands in, outcomes out.
    pub TypeConfig:
        D = state::Command,
        R = state::Outcome,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// How often the leader looks for silent masters.
const SCAN: Duration = Duration::from_millis(200);
/// How long a proposal may wait for a majority.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(4);

/// What the leader last heard from a broker.
#[derive(Debug, Clone)]
struct Live {
    at: Instant,
    epoch: u32,
    end: u64,
    ha_addr: String,
}

/// The controller's settings.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// A broker silent this long is gone.
    pub broker_expiry: Duration,
    /// Whether a master may be elected from outside the in-sync set.
    pub unclean_election: bool,
}

/// The controller on one voter.
pub struct Controller {
    consensus: Arc<RaftConsensus>,
    settings: ControllerSettings,
    live: Mutex<HashMap<(String, u64), Live>>,
    /// Since when this voter leads (none: it does not).
    leading_since: Mutex<Option<Instant>>,
    leader_client: Mutex<Option<(u64, Arc<PeerClient>)>>,
    logger: slog::Logger,
}

fn wire(code: ErrorCode, message: impl Into<String>) -> WireError {
    WireError::new(code, message.into())
}

impl Controller {
    /// A controller over a started consensus.
    pub fn new(consensus: Arc<RaftConsensus>, settings: ControllerSettings, logger: slog::Logger) -> Arc<Self> {
        Arc::new(Self {
            consensus,
            settings,
            live: Mutex::new(HashMap::new()),
            leading_since: Mutex::new(None),
            leader_client: Mutex::new(None),
            logger: logger.new(slog::o!("part" => "controller")),
        })
    }

    /// The consensus under it.
    pub fn consensus(&self) -> &Arc<RaftConsensus> {
        &self.consensus
    }

    /// Answers a request: here if this voter leads, else by the leader.
    pub async fn handle(self: &Arc<Self>, request: ControllerRequest) -> Result<ControllerResponse, WireError> {
        if self.consensus.is_leader() {
            return self.handle_here(request).await;
        }
        match self.consensus.leader_addr() {
            Some((leader, addr)) => self.forward(leader, addr, request).await,
            None if matches!(request, ControllerRequest::Info) => Ok(ControllerResponse::Info(self.info())),
            None => Err(wire(ErrorCode::ControllerUnavailable, "the controller has no leader (no quorum of voters)")),
        }
    }

    async fn forward(
        &self,
        leader: u64,
        addr: String,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, WireError> {
        let info = matches!(request, ControllerRequest::Info);
        let client = {
            let mut cached = self.leader_client.lock();
            match &*cached {
                Some((id, client)) if *id == leader => client.clone(),
                _ => {
                    let local = self.consensus.peer_addr().and_then(consensus::local_ip);
                    let client = Arc::new(PeerClient::new(addr, local));
                    *cached = Some((leader, client.clone()));
                    client
                }
            }
        };
        match client.call(&PeerRequest::Forward(request), FORWARD_TIMEOUT).await {
            Ok(PeerReply::Forward(answer)) => answer,
            Ok(other) => Err(wire(ErrorCode::Internal, format!("unexpected reply from the leader: {other:?}"))),
            // The leader is out of reach from here: what this voter has
            // applied still describes the cluster.
            Err(_) if info => Ok(ControllerResponse::Info(self.info())),
            Err(e) => Err(wire(ErrorCode::ControllerUnavailable, format!("controller leader {leader}: {e}"))),
        }
    }

    /// Answers a request on the leader (forwarded ones too: never
    /// forwarded again).
    pub async fn handle_here(self: &Arc<Self>, request: ControllerRequest) -> Result<ControllerResponse, WireError> {
        if !self.consensus.is_leader() && !matches!(request, ControllerRequest::Info) {
            return Err(wire(ErrorCode::ControllerUnavailable, "this voter no longer leads the controller"));
        }
        match request {
            ControllerRequest::Register(beat) => self.register(beat).await,
            ControllerRequest::Heartbeat(beat) => self.heartbeat(&beat).await.map(ControllerResponse::Set),
            ControllerRequest::AlterInSync { broker_name, master_id, master_epoch, in_sync_epoch, in_sync } => {
                let command = Command::AlterInSync {
                    broker_name: broker_name.clone(),
                    master_id,
                    master_epoch,
                    in_sync_epoch,
                    in_sync: in_sync.into_iter().collect(),
                };
                let outcome = self.propose(command).await?;
                if let Some(why) = outcome.refused {
                    return Err(wire(ErrorCode::Fenced, why));
                }
                slog::info!(self.logger, "in-sync set changed"; "broker_name" => &broker_name, "master" => master_id);
                self.view(&broker_name).map(ControllerResponse::Set)
            }
            ControllerRequest::Elect { broker_name, broker_id } => {
                self.elect(&broker_name, Election::Asked(broker_id)).await?;
                self.view(&broker_name).map(ControllerResponse::Set)
            }
            ControllerRequest::Info => Ok(ControllerResponse::Info(self.info())),
        }
    }

    async fn propose(&self, command: Command) -> Result<Outcome, WireError> {
        match tokio::time::timeout(PROPOSE_TIMEOUT, self.consensus.propose(command)).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(ConsensusError::NotLeader(leader))) => {
                Err(wire(ErrorCode::ControllerUnavailable, format!("leadership moved to {leader:?}")))
            }
            Ok(Err(e)) => Err(wire(ErrorCode::ControllerUnavailable, e.to_string())),
            Err(_) => Err(wire(ErrorCode::ControllerUnavailable, "no majority of controller voters answered in time")),
        }
    }

    async fn register(self: &Arc<Self>, beat: BrokerBeat) -> Result<ControllerResponse, WireError> {
        check_beat(&beat)?;
        let name = beat.broker_name.clone();
        let known = self.consensus.state().sets.get(&name).cloned();
        let id = match beat.broker_id {
            Some(id) if known.as_ref().is_some_and(|s| s.members.contains_key(&id)) => {
                if known.as_ref().and_then(|s| s.members.get(&id)) != Some(&beat.addr) {
                    let update =
                        Command::UpdateAddr { broker_name: name.clone(), broker_id: id, addr: beat.addr.clone() };
                    self.propose(update).await?;
                }
                id
            }
            wanted => {
                let add = Command::AddBroker {
                    cluster: beat.cluster.clone(),
                    broker_name: name.clone(),
                    addr: beat.addr.clone(),
                    wanted,
                };
                let outcome = self.propose(add).await?;
                let id = outcome.broker_id.ok_or_else(|| {
                    wire(ErrorCode::InvalidArgument, outcome.refused.unwrap_or_else(|| "no id given".into()))
                })?;
                slog::info!(self.logger, "broker joined"; "broker_name" => &name, "broker_id" => id, "addr" => &beat.addr);
                id
            }
        };
        self.record(&name, id, &beat);
        let set = self.consensus.state().sets.get(&name).cloned().unwrap_or_default();
        // A master starting again may have lost what it had not synced:
        // the set elects again (it too, if it is still the best). One
        // elected and starting to take its epoch has not begun it yet.
        if set.master.is_none() || (set.master == Some(id) && beat.epoch >= set.master_epoch) {
            let reason = if set.master.is_none() { "no master" } else { "the master restarted" };
            if let Err(e) = self.elect(&name, Election::Needed(reason)).await {
                slog::warn!(self.logger, "no master elected"; "broker_name" => &name, "why" => &e.message);
            }
        }
        Ok(ControllerResponse::Assigned { broker_id: id, set: self.view(&name)? })
    }

    async fn heartbeat(&self, beat: &BrokerBeat) -> Result<ReplicaSetView, WireError> {
        check_beat(beat)?;
        let id =
            beat.broker_id.ok_or_else(|| wire(ErrorCode::InvalidArgument, "a heartbeat carries the broker's id"))?;
        let state = self.consensus.state();
        let Some(known) = state.sets.get(&beat.broker_name).and_then(|s| s.members.get(&id)) else {
            return Err(wire(
                ErrorCode::InvalidArgument,
                format!("{}/{id} is not a member; register first", beat.broker_name),
            ));
        };
        if *known != beat.addr {
            let update =
                Command::UpdateAddr { broker_name: beat.broker_name.clone(), broker_id: id, addr: beat.addr.clone() };
            self.propose(update).await?;
        }
        self.record(&beat.broker_name, id, beat);
        self.view(&beat.broker_name)
    }

    fn record(&self, name: &str, id: u64, beat: &BrokerBeat) {
        let live = Live { at: Instant::now(), epoch: beat.epoch, end: beat.end, ha_addr: beat.ha_addr.clone() };
        self.live.lock().insert((name.to_string(), id), live);
    }

    /// Whether `id` of `name` counts as alive now.
    fn alive(&self, name: &str, id: u64, now: Instant) -> bool {
        let expiry = self.settings.broker_expiry;
        match self.live.lock().get(&(name.to_string(), id)) {
            Some(live) => now.saturating_duration_since(live.at) <= expiry,
            // Not heard from since this voter began to lead: given one
            // expiry to show up.
            None => self.leading_since.lock().is_some_and(|since| now.saturating_duration_since(since) <= expiry),
        }
    }

    fn view(&self, name: &str) -> Result<ReplicaSetView, WireError> {
        let state = self.consensus.state();
        let set =
            state.sets.get(name).ok_or_else(|| wire(ErrorCode::InvalidArgument, format!("no replica set {name:?}")))?;
        Ok(self.view_of(name, set))
    }

    fn view_of(&self, name: &str, set: &state::SetState) -> ReplicaSetView {
        let now = Instant::now();
        let mut view = set.view(name);
        view.alive = set.members.keys().copied().filter(|id| self.heard_within(name, *id, now)).collect();
        if let Some(master) = set.master {
            view.master_ha_addr =
                self.live.lock().get(&(name.to_string(), master)).map(|l| l.ha_addr.clone()).unwrap_or_default();
        }
        view
    }

    fn heard_within(&self, name: &str, id: u64, now: Instant) -> bool {
        self.live
            .lock()
            .get(&(name.to_string(), id))
            .is_some_and(|l| now.saturating_duration_since(l.at) <= self.settings.broker_expiry)
    }

    fn info(&self) -> ControllerInfo {
        let state = self.consensus.state();
        ControllerInfo {
            answered_by: self.consensus.id(),
            leader: self.consensus.leader(),
            members: self.consensus.members(),
            sets: state.sets.iter().map(|(name, set)| self.view_of(name, set)).collect(),
        }
    }

    /// Elects a master of `name`: the one asked for, or the best live
    /// in-sync member.
    async fn elect(&self, name: &str, election: Election) -> Result<(), WireError> {
        let state = self.consensus.state();
        let set =
            state.sets.get(name).ok_or_else(|| wire(ErrorCode::InvalidArgument, format!("no replica set {name:?}")))?;
        let now = Instant::now();
        let live = self.live.lock().clone();
        // Candidates must have been heard from: the grace a new leader
        // gives the silent only keeps it from declaring a master gone.
        let alive: Vec<u64> = set.members.keys().copied().filter(|id| self.heard_within(name, *id, now)).collect();
        let report = |id: &u64| live.get(&(name.to_string(), *id)).map_or((0, 0), |l| (l.epoch, l.end));
        let first_time = set.master_epoch == 0;
        let clean = |id: &u64| first_time || set.in_sync.contains(id);
        let candidates: Vec<u64> = match election {
            Election::Asked(Some(id)) => {
                if !alive.contains(&id) {
                    return Err(wire(ErrorCode::InvalidArgument, format!("{name}/{id} is not alive")));
                }
                if !clean(&id) && !self.settings.unclean_election {
                    return Err(wire(ErrorCode::InvalidArgument, format!("{name}/{id} is not in the in-sync set")));
                }
                vec![id]
            }
            Election::Asked(None) => alive.iter().copied().filter(|id| Some(*id) != set.master && clean(id)).collect(),
            Election::Needed(_) => {
                let clean_ones: Vec<u64> = alive.iter().copied().filter(clean).collect();
                if clean_ones.is_empty() && self.settings.unclean_election {
                    alive.clone()
                } else {
                    clean_ones
                }
            }
        };
        let Some(best) = candidates.iter().copied().max_by_key(|id| (report(id), std::cmp::Reverse(*id))) else {
            return Err(wire(
                ErrorCode::ControllerUnavailable,
                format!("no live in-sync member of {name} to elect (in-sync {:?}, alive {alive:?})", set.in_sync),
            ));
        };
        let min_epoch = set.members.keys().map(|id| report(id).0).max().unwrap_or(0).saturating_add(1);
        let command = Command::Elect {
            broker_name: name.to_string(),
            new_master: best,
            expected_epoch: set.master_epoch,
            min_epoch,
        };
        let outcome = self.propose(command).await?;
        if let Some(why) = outcome.refused {
            return Err(wire(ErrorCode::Fenced, why));
        }
        let epoch = self.consensus.state().sets.get(name).map_or(0, |s| s.master_epoch);
        slog::warn!(self.logger, "master elected"; "broker_name" => name, "master" => best, "epoch" => epoch,
            "old_master" => ?set.master, "why" => election.why(), "end" => report(&best).1);
        Ok(())
    }

    /// While leading: elects a master for every set whose master is gone.
    pub async fn scan_loop(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(SCAN);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let leading = self.consensus.is_leader();
            {
                let mut since = self.leading_since.lock();
                match (leading, since.is_some()) {
                    (true, false) => {
                        slog::info!(self.logger, "leading the controller");
                        *since = Some(Instant::now());
                        self.live.lock().clear();
                    }
                    (false, true) => *since = None,
                    _ => {}
                }
            }
            if !leading {
                continue;
            }
            let now = Instant::now();
            let state: ControllerState = self.consensus.state();
            for (name, set) in &state.sets {
                let needed = match set.master {
                    Some(master) => !self.alive(name, master, now),
                    None => set.members.keys().any(|id| self.heard_within(name, *id, now)),
                };
                if needed {
                    let reason = if set.master.is_some() { "the master is silent" } else { "no master" };
                    if let Err(e) = self.elect(name, Election::Needed(reason)).await {
                        slog::debug!(self.logger, "no master elected"; "broker_name" => name, "why" => &e.message);
                    }
                }
            }
        }
    }
}

/// Why an election runs.
#[derive(Debug, Clone, Copy)]
enum Election {
    /// The master is gone or restarted.
    Needed(&'static str),
    /// An operator asked (for this member, or the best other one).
    Asked(Option<u64>),
}

impl Election {
    fn why(&self) -> &'static str {
        match self {
            Election::Needed(why) => why,
            Election::Asked(_) => "asked",
        }
    }
}

fn check_beat(beat: &BrokerBeat) -> Result<(), WireError> {
    let invalid = |e: String| wire(ErrorCode::InvalidArgument, e);
    brook_proto::names::validate_name("cluster", &beat.cluster).map_err(invalid)?;
    brook_proto::names::validate_name("broker", &beat.broker_name).map_err(invalid)?;
    beat.addr
        .parse::<std::net::SocketAddr>()
        .map_err(|e| invalid(format!("broker address {:?} is not host:port: {e}", beat.addr)))?;
    if beat.broker_id == Some(0) {
        return Err(invalid("persistent broker ids start at 1".into()));
    }
    Ok(())
}
