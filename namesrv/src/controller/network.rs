//! Traffic between controller voters, on each voter's peer address: Raft's
//! RPCs (append, vote, snapshot) and controller requests forwarded to the
//! leader. One request per round trip on a connection kept per peer;
//! frames are length-prefixed bincode. Outgoing connections leave from the
//! voter's own peer address, so a rule between two addresses cuts exactly
//! one voter from another.

use super::TypeConfig;
use brook_proto::controller::{ControllerRequest, ControllerResponse};
use brook_proto::WireError;
use futures::{SinkExt, StreamExt};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

type NodeId = u64;

/// Largest frame between voters.
const MAX_FRAME: usize = 16 << 20;
/// How long a dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_millis(500);

/// A request from one voter to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Raft: append entries (and heartbeats).
    Append(AppendEntriesRequest<TypeConfig>),
    /// Raft: a vote.
    Vote(VoteRequest<NodeId>),
    /// Raft: a snapshot chunk.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A controller request for the leader.
    Forward(ControllerRequest),
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerReply {
    /// To `Append`.
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To `Vote`.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To `Snapshot`.
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// To `Forward`.
    Forward(Result<ControllerResponse, WireError>),
}

/// Encodes a peer message.
pub fn encode<T: Serialize>(value: &T) -> std::io::Result<bytes::Bytes> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map(bytes::Bytes::from)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Decodes a peer message.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::io::Result<T> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The length-prefixed framing both ends use.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME).new_codec()
}

/// A connection to one peer, dialled on demand and dropped on any error.
pub struct PeerClient {
    addr: String,
    local: Option<IpAddr>,
    conn: tokio::sync::Mutex<Option<Framed<TcpStream, LengthDelimitedCodec>>>,
}

impl PeerClient {
    /// A client of the peer at `addr`, dialling from `local`.
    pub fn new(addr: String, local: Option<IpAddr>) -> Self {
        Self { addr, local, conn: tokio::sync::Mutex::new(None) }
    }

    async fn dial(&self) -> std::io::Result<Framed<TcpStream, LengthDelimitedCodec>> {
        let stream = tokio::time::timeout(DIAL_TIMEOUT, brook_client::connection::dial(&self.addr, self.local))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "dial timed out"))??;
        stream.set_nodelay(true)?;
        Ok(Framed::new(stream, codec()))
    }

    /// One round trip, within `ttl`. Errors say whether the peer was
    /// reached at all (`Unreachable`: the dial failed).
    pub async fn call(&self, request: &PeerRequest, ttl: Duration) -> Result<PeerReply, CallError> {
        let frame = encode(request).map_err(CallError::Failed)?;
        let mut conn = self.conn.lock().await;
        let exchange = async {
            if conn.is_none() {
                *conn = Some(self.dial().await.map_err(CallError::Unreachable)?);
            }
            let Some(framed) = conn.as_mut() else { return Err(CallError::Failed(closed())) };
            framed.send(frame).await.map_err(CallError::Failed)?;
            match framed.next().await {
                Some(Ok(bytes)) => decode(&bytes).map_err(CallError::Failed),
                Some(Err(e)) => Err(CallError::Failed(e)),
                None => Err(CallError::Failed(closed())),
            }
        };
        let outcome = tokio::time::timeout(ttl, exchange)
            .await
            .unwrap_or_else(|_| Err(CallError::Failed(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))));
        if outcome.is_err() {
            *conn = None;
        }
        outcome
    }
}

fn closed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "peer closed the connection")
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The peer could not be dialled.
    #[error("unreachable: {0}")]
    Unreachable(std::io::Error),
    /// The exchange failed after the dial.
    #[error("{0}")]
    Failed(std::io::Error),
}

/// openraft's view of the network: a client per peer.
#[derive(Clone)]
pub struct Network {
    /// This voter's address to dial from.
    pub local: Option<IpAddr>,
}

/// A Raft connection to one peer.
pub struct Peer {
    target: NodeId,
    client: Arc<PeerClient>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer { target, client: Arc::new(PeerClient::new(node.addr.clone(), self.local)) }
    }
}

impl Peer {
    async fn call<E: std::error::Error>(
        &self,
        request: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerReply, RPCError<NodeId, BasicNode, E>> {
        self.client.call(&request, option.hard_ttl()).await.map_err(|e| match e {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Failed(e) => RPCError::Network(NetworkError::new(&e)),
        })
    }

    fn unexpected<E: std::error::Error>(reply: &PeerReply) -> RPCError<NodeId, BasicNode, E> {
        let e = std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unexpected reply {reply:?}"));
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(PeerRequest::Append(rpc), &option).await? {
            PeerReply::Append(Ok(r)) => Ok(r),
            PeerReply::Append(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        match self.call(PeerRequest::Snapshot(rpc), &option).await? {
            PeerReply::Snapshot(Ok(r)) => Ok(r),
            PeerReply::Snapshot(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(Self::unexpected(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(PeerRequest::Vote(rpc), &option).await? {
            PeerReply::Vote(Ok(r)) => Ok(r),
            PeerReply::Vote(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(Self::unexpected(&other)),
        }
    }
}
