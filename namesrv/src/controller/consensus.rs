//! The one place openraft is used. Its API changes before 1.0, so the
//! controller sees only [`Consensus`]: propose a command and get its
//! outcome once a majority holds it, ask who leads, read the applied state.
//! [`RaftConsensus`] is that trait over openraft 0.9.25 with our storage
//! (`store`) and network (`network`).

use super::network::{self, Network, PeerReply, PeerRequest};
use super::state::{Command, ControllerState, Outcome};
use super::store::{Applied, LogStore, StateMachine};
use super::TypeConfig;
use brook_proto::controller::ControllerMember;
use futures::{SinkExt, StreamExt};
use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, Raft, ServerState};
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

/// Why a proposal did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// This voter does not lead; the leader, if known.
    #[error("not the controller leader (leader: {0:?})")]
    NotLeader(Option<u64>),
    /// No majority could be reached, or the engine stopped.
    #[error("controller unavailable: {0}")]
    Unavailable(String),
}

/// What the controller needs of a consensus engine.
pub trait Consensus: Send + Sync + 'static {
    /// Appends `command` to the replicated log; its outcome once applied.
    fn propose(&self, command: Command) -> impl Future<Output = Result<Outcome, ConsensusError>> + Send;
    /// The current leader, if known.
    fn leader(&self) -> Option<u64>;
    /// This voter's id.
    fn id(&self) -> u64;
    /// The voters.
    fn members(&self) -> Vec<ControllerMember>;
    /// The state as applied here.
    fn state(&self) -> ControllerState;
}

/// The controller's consensus on openraft.
pub struct RaftConsensus {
    id: u64,
    raft: Raft<TypeConfig>,
    applied: Arc<RwLock<Applied>>,
    peers: BTreeMap<u64, String>,
}

impl RaftConsensus {
    /// Opens this voter's storage under `dir` and starts Raft among
    /// `peers` (id → peer address). A voter with no state proposes the
    /// membership; the others' identical proposals are no-ops.
    pub async fn start(id: u64, peers: BTreeMap<u64, String>, dir: &Path) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        let log = LogStore::open(dir)?;
        let machine = StateMachine::open(dir)?;
        let applied = machine.applied.clone();
        let config = openraft::Config {
            cluster_name: "brook-controller".into(),
            heartbeat_interval: 150,
            election_timeout_min: 600,
            election_timeout_max: 1200,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(200),
            max_in_snapshot_log_to_keep: 50,
            ..Default::default()
        };
        let config = Arc::new(config.validate().map_err(|e| std::io::Error::other(e.to_string()))?);
        let local = peers.get(&id).and_then(|a| a.parse::<SocketAddr>().ok()).map(|a| a.ip());
        let raft = Raft::new(id, config, Network { local }, log, machine)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let nodes: BTreeMap<u64, BasicNode> = peers.iter().map(|(id, addr)| (*id, BasicNode::new(addr))).collect();
        match raft.initialize(nodes).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        }
        Ok(Arc::new(Self { id, raft, applied, peers }))
    }

    /// This voter's peer address.
    pub fn peer_addr(&self) -> Option<&str> {
        self.peers.get(&self.id).map(String::as_str)
    }

    /// The leader's peer address, if a leader is known and is not this
    /// voter.
    pub fn leader_addr(&self) -> Option<(u64, String)> {
        self.leader().filter(|l| *l != self.id).and_then(|l| self.peers.get(&l).map(|a| (l, a.clone())))
    }

    /// Whether this voter leads now.
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.state == ServerState::Leader
    }

    /// Serves the peers' Raft RPCs on `listener`; forwarded controller
    /// requests go to `forward`.
    pub async fn serve_peers<F, Fut>(self: Arc<Self>, listener: TcpListener, forward: F, logger: slog::Logger)
    where
        F: Fn(brook_proto::controller::ControllerRequest) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<brook_proto::controller::ControllerResponse, brook_proto::WireError>> + Send,
    {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    slog::warn!(logger, "peer accept failed"; "error" => %e);
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (me, forward, logger) = (self.clone(), forward.clone(), logger.clone());
            tokio::spawn(async move {
                let mut framed = Framed::new(stream, network::codec());
                while let Some(Ok(frame)) = framed.next().await {
                    let request: PeerRequest = match network::decode(&frame) {
                        Ok(r) => r,
                        Err(e) => {
                            slog::info!(logger, "closing a peer connection after a bad frame"; "peer" => %peer, "error" => %e);
                            return;
                        }
                    };
                    let reply = match request {
                        PeerRequest::Append(rpc) => PeerReply::Append(me.raft.append_entries(rpc).await),
                        PeerRequest::Vote(rpc) => PeerReply::Vote(me.raft.vote(rpc).await),
                        PeerRequest::Snapshot(rpc) => PeerReply::Snapshot(me.raft.install_snapshot(rpc).await),
                        PeerRequest::Forward(request) => PeerReply::Forward(forward(request).await),
                    };
                    let Ok(bytes) = network::encode(&reply) else { return };
                    if framed.send(bytes).await.is_err() {
                        return;
                    }
                }
            });
        }
    }

    /// Stops Raft.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

impl Consensus for RaftConsensus {
    async fn propose(&self, command: Command) -> Result<Outcome, ConsensusError> {
        match self.raft.client_write(command).await {
            Ok(written) => Ok(written.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ConsensusError::NotLeader(f.leader_id))
            }
            Err(e) => Err(ConsensusError::Unavailable(e.to_string())),
        }
    }

    fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    fn id(&self) -> u64 {
        self.id
    }

    fn members(&self) -> Vec<ControllerMember> {
        self.peers.iter().map(|(id, addr)| ControllerMember { id: *id, peer_addr: addr.clone() }).collect()
    }

    fn state(&self) -> ControllerState {
        self.applied.read().state.clone()
    }
}

/// The address a voter dials from (its peer address's IP).
pub fn local_ip(addr: &str) -> Option<IpAddr> {
    addr.parse::<SocketAddr>().ok().map(|a| a.ip())
}
