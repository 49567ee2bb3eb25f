//! Raft RPCs between the members of one cluster.
//!
//! Every message is one request ([`Rpc`]) and one reply ([`Reply`]), encoded
//! with [`crate::wire`] and capped at [`MAX_RPC_BYTES`]. A [`Transport`]
//! carries the bytes: [`mem::MemNet`] in-process (tests), libp2p
//! request-response in the node. The openraft side is [`Network`], a
//! `RaftNetworkFactory` over any transport.
//!
//! Besides openraft's own RPCs (append entries, vote, pre-vote, snapshot in
//! chunks), members forward client writes, membership changes and read-index
//! requests to the leader (see [`crate::member`]).

pub mod mem;
pub mod p2p;
pub mod stream;

use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use openraft::entry::RaftEntry;
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendError, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::command::{Command, Response};
use crate::error::Error;
use crate::snapshot::SnapshotFile;
use crate::types::{LogId, Member, NodeId, SnapshotMeta, TypeConfig, Vote};

/// The largest request or reply.
pub const MAX_RPC_BYTES: usize = 48 << 20;
/// Bytes of snapshot per chunk.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;

/// Bytes that serialise as one CBOR byte string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(crate::wire::ByteString { arrays: false })
            .map(Bytes)
    }
}

/// A membership change, as a follower forwards it to the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Manage {
    /// Add a learner (it receives the log, does not vote).
    AddLearner(NodeId, Member),
    /// Make learners voters.
    Promote(Vec<NodeId>),
    /// Remove members (voters or learners).
    Remove(Vec<NodeId>),
}

/// A request from one member to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Rpc {
    /// Raft: append entries (and heartbeats).
    Append(AppendEntriesRequest<TypeConfig>),
    /// Raft: request a vote.
    Vote(VoteRequest<TypeConfig>),
    /// Raft: a pre-vote (would you vote for me?).
    PreVote(VoteRequest<TypeConfig>),
    /// Raft: a piece of a snapshot; the last one carries the leader's vote
    /// and the snapshot's metadata, and the receiver installs it.
    SnapshotChunk {
        /// Which transfer (a fresh one restarts the receiver's).
        transfer: u64,
        /// Where the piece goes.
        offset: u64,
        /// The piece, at most [`SNAPSHOT_CHUNK`] bytes.
        data: Bytes,
        /// On the last piece: the vote and the metadata.
        done: Option<(Vote, SnapshotMeta)>,
    },
    /// A client write sent to a member that is not the leader.
    Forward(Command),
    /// A membership change sent to a member that is not the leader.
    Manage(Manage),
    /// A follower asks the leader for a read index.
    ReadIndex,
}

/// The answer to an [`Rpc`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    /// To [`Rpc::Append`].
    Append(AppendEntriesResponse<TypeConfig>),
    /// To [`Rpc::Vote`] and [`Rpc::PreVote`].
    Vote(VoteResponse<TypeConfig>),
    /// A snapshot piece was stored.
    ChunkStored,
    /// The snapshot was installed.
    Installed(SnapshotResponse<TypeConfig>),
    /// To [`Rpc::Forward`]: the command's log id index and its response.
    Written(u64, Response),
    /// To [`Rpc::Manage`].
    Managed,
    /// To [`Rpc::ReadIndex`]: the leader's id and the log id a read must
    /// wait for.
    ReadIndex(
        NodeId,
        openraft::raft::linearizable_read::ReadLogId<TypeConfig>,
    ),
    /// The receiver is not the leader; the leader it knows, if any.
    NotLeader(Option<NodeId>),
    /// The request failed; why.
    Failed(String),
}

/// Encodes a reply (a refusal that cannot be encoded becomes an empty
/// frame, which the caller refuses as undecodable).
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    crate::wire::encode("rpc reply", reply, MAX_RPC_BYTES).unwrap_or_default()
}

/// Carries encoded RPCs to other members. `addr` is the target's
/// [`Member::addr`].
pub trait Transport: Send + Sync + 'static {
    /// Sends `request` to member `to` and returns its reply's bytes.
    fn call(
        &self,
        to: NodeId,
        addr: &str,
        request: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, Error>>;
}

/// Sends one RPC over `transport` and decodes the reply, within `timeout`.
pub async fn call(
    transport: &dyn Transport,
    to: NodeId,
    addr: &str,
    rpc: &Rpc,
    timeout: Duration,
) -> Result<Reply, Error> {
    let bytes = crate::wire::encode("rpc", rpc, MAX_RPC_BYTES)?;
    call_encoded(transport, to, addr, bytes, timeout).await
}

/// [`call`] with the request already encoded.
pub async fn call_encoded(
    transport: &dyn Transport,
    to: NodeId,
    addr: &str,
    request: Vec<u8>,
    timeout: Duration,
) -> Result<Reply, Error> {
    let reply = tokio::time::timeout(timeout, transport.call(to, addr, request))
        .await
        .map_err(|_| Error::Timeout("rpc"))??;
    crate::wire::decode("rpc reply", &reply, MAX_RPC_BYTES)
}

/// The openraft network over a [`Transport`].
#[derive(Clone)]
pub struct Network {
    id: NodeId,
    transport: Arc<dyn Transport>,
}

impl Network {
    /// Member `id`'s network over `transport`.
    pub fn new(id: NodeId, transport: Arc<dyn Transport>) -> Network {
        Network { id, transport }
    }
}

/// A connection to one member.
pub struct Client {
    transport: Arc<dyn Transport>,
    id: NodeId,
    target: NodeId,
    addr: String,
    transfer: u64,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Client;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Client {
        Client {
            transport: self.transport.clone(),
            id: self.id,
            target,
            addr: node.addr.clone(),
            transfer: 0,
        }
    }
}

fn unreachable(e: impl std::fmt::Display) -> Unreachable<TypeConfig> {
    Unreachable::from_string(e)
}

/// How a failed append from `from` to `to` reaches openraft: a timeout as a
/// timeout (a short backoff before the next try: the follower may only have
/// been slow to flush), anything else as unreachable (a long one).
pub fn append_error(e: Error, from: NodeId, to: NodeId, timeout: Duration) -> RPCError<TypeConfig> {
    match e {
        Error::Timeout(_) => RPCError::Timeout(openraft::errors::Timeout {
            action: openraft::network::RPCTypes::AppendEntries,
            id: from,
            target: to,
            timeout,
        }),
        other => RPCError::Unreachable(unreachable(other)),
    }
}

impl Client {
    async fn rpc(&self, rpc: &Rpc, timeout: Duration) -> Result<Reply, Unreachable<TypeConfig>> {
        call(&*self.transport, self.target, &self.addr, rpc, timeout)
            .await
            .map_err(unreachable)
    }
}

/// Trims `req`'s entries so it encodes within `max` bytes (keeping at least
/// one); returns the last kept entry's id if it had to drop any.
pub fn fit(req: &mut AppendEntriesRequest<TypeConfig>, max: usize) -> Result<Option<LogId>, Error> {
    let mut rpc = Rpc::Append(req.clone());
    let (_, kept) = encode_fitted(&mut rpc, max)?;
    if let Rpc::Append(trimmed) = rpc {
        *req = trimmed;
    }
    Ok(kept)
}

/// Encodes `rpc`; an append that does not fit in `max` bytes loses entries
/// from its end until it does (keeping at least one, however large: the
/// sender refuses it then), and the last kept entry's id is returned if any
/// were dropped. An append that fits, the usual case, is encoded once.
pub fn encode_fitted(rpc: &mut Rpc, max: usize) -> Result<(Vec<u8>, Option<LogId>), Error> {
    let mut dropped = false;
    loop {
        let bytes = crate::wire::encode("rpc", rpc, usize::MAX)?;
        let Rpc::Append(req) = rpc else {
            return Ok((bytes, None));
        };
        if bytes.len() <= max || req.entries.len() <= 1 {
            let kept = if dropped {
                req.entries.last().map(|e| e.log_id())
            } else {
                None
            };
            return Ok((bytes, kept));
        }
        let keep = req.entries.len() / 2;
        req.entries.truncate(keep.max(1));
        dropped = true;
    }
}

/// `bytes` if they are at most `max`.
fn checked(bytes: Vec<u8>, max: usize) -> Result<Vec<u8>, Error> {
    if bytes.len() > max {
        return Err(Error::TooLarge {
            what: "rpc",
            size: bytes.len(),
            max,
        });
    }
    Ok(bytes)
}

/// The results of a streamed append, in the order of the requests.
type AppendStream<'s> = futures::stream::BoxStream<
    's,
    Result<openraft::raft::StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>,
>;

impl RaftNetworkV2<TypeConfig> for Client {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // One request through the same path as a stream's (trimmed to the
        // message cap, its answer checked against what was sent).
        let last = rpc.entries.last().map(|e| e.log_id()).or(rpc.prev_log_id);
        let mut out = stream::send(
            Arc::clone(&self.transport),
            self.id,
            self.target,
            self.addr.clone(),
            futures::stream::iter([rpc]),
            option.hard_ttl(),
        );
        match out.next().await {
            Some(Ok(Ok(matching))) if matching == last => Ok(AppendEntriesResponse::Success),
            Some(Ok(Ok(matching))) => Ok(AppendEntriesResponse::PartialSuccess(matching)),
            Some(Ok(Err(StreamAppendError::Conflict(_)))) => Ok(AppendEntriesResponse::Conflict),
            Some(Ok(Err(StreamAppendError::HigherVote(v)))) => {
                Ok(AppendEntriesResponse::HigherVote(v))
            }
            Some(Err(e)) => Err(e),
            None => Err(RPCError::Unreachable(unreachable(
                "no answer to append entries",
            ))),
        }
    }

    /// Pipelined: up to [`stream::IN_FLIGHT`] appends on the wire at once,
    /// under the rule in [`stream`].
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<AppendStream<'s>, RPCError<TypeConfig>>>
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>>
            + openraft::OptionalSend
            + Unpin
            + 'static,
    {
        let out = stream::send(
            Arc::clone(&self.transport),
            self.id,
            self.target,
            self.addr.clone(),
            input,
            option.hard_ttl(),
        );
        Box::pin(async move { Ok(out) })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.rpc(&Rpc::Vote(rpc), option.hard_ttl()).await? {
            Reply::Vote(r) => Ok(r),
            other => Err(RPCError::Unreachable(unreachable(format!(
                "unexpected reply to vote: {other:?}"
            )))),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.rpc(&Rpc::PreVote(rpc), option.hard_ttl()).await? {
            Reply::Vote(r) => Ok(r),
            other => Err(RPCError::Unreachable(unreachable(format!(
                "unexpected reply to pre-vote: {other:?}"
            )))),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        self.send_file(vote, snapshot, cancel, option).await
    }
}

impl Client {
    async fn send_file(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        self.transfer = self.transfer.wrapping_add(1);
        let transfer = self.transfer ^ (u64::from(std::process::id()) << 32);
        let mut cancel = Box::pin(cancel);
        let mut file = std::fs::File::open(&snapshot.snapshot.path).map_err(unreachable)?;
        let len = file.metadata().map_err(unreachable)?.len();
        let mut offset = 0u64;
        loop {
            if let Some(closed) = (&mut cancel).now_or_never() {
                return Err(StreamingError::Closed(closed));
            }
            let n = (len - offset).min(SNAPSHOT_CHUNK as u64) as usize;
            let mut data = vec![0u8; n];
            file.seek(SeekFrom::Start(offset)).map_err(unreachable)?;
            file.read_exact(&mut data).map_err(unreachable)?;
            let last = offset + n as u64 == len;
            let rpc = Rpc::SnapshotChunk {
                transfer,
                offset,
                data: Bytes(data),
                done: last.then(|| (vote, snapshot.meta.clone())),
            };
            let reply = self
                .rpc(&rpc, option.hard_ttl().max(Duration::from_secs(10)))
                .await;
            match reply? {
                Reply::ChunkStored if !last => offset += n as u64,
                Reply::Installed(r) if last => return Ok(r),
                other => {
                    return Err(unreachable(format!(
                        "unexpected reply to a snapshot piece: {other:?}"
                    ))
                    .into());
                }
            }
        }
    }
}
