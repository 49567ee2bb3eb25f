//! Raft RPCs over the node's libp2p swarm (`/pyralog/raft/2` in
//! `pyralog_p2p::raft`: one stream per pair of members).
//!
//! A member's address is a multiaddr ending in `/p2p/<peer id>`. Outbound
//! calls go on the member's stream ([`P2pTransport`]); inbound requests come
//! from the inbox the node registers with `NetCommand::RaftServe` and are
//! served by [`serve`], which answers only peers that belong to the cluster
//! (the operator's list of cluster peers, and the members of the current
//! membership) and runs at most [`MAX_HANDLERS`] requests at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use pyralog_p2p::raft::Inbound;
use pyralog_p2p::{Commander, Multiaddr, PeerId, peer_of};
use tokio::sync::{Semaphore, mpsc};

use crate::error::Error;
use crate::member::Member;
use crate::network::{Reply, Transport};
use crate::types::NodeId;

/// Requests served at once; more wait in the inbox (and past its capacity
/// are dropped by the swarm task).
pub const MAX_HANDLERS: usize = 64;

/// Splits a member's address into its peer id and where to dial it.
pub fn parse_addr(addr: &str) -> Result<(PeerId, Multiaddr), Error> {
    let ma: Multiaddr = addr.parse().map_err(|e| Error::Decode {
        what: "member address",
        reason: format!("{addr:?} is not a multiaddr: {e}"),
    })?;
    let peer = peer_of(&ma).ok_or_else(|| Error::Decode {
        what: "member address",
        reason: format!("{addr:?} does not end with /p2p/<peer id>"),
    })?;
    Ok((peer, ma))
}

/// Sends Raft RPCs on the members' streams.
#[derive(Clone, Debug)]
pub struct P2pTransport {
    commander: Commander,
}

impl P2pTransport {
    /// A transport over the swarm behind `commander`.
    pub fn new(commander: Commander) -> P2pTransport {
        P2pTransport { commander }
    }
}

impl Transport for P2pTransport {
    fn call(
        &self,
        to: NodeId,
        addr: &str,
        request: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, Error>> {
        let parsed = parse_addr(addr);
        let commander = self.commander.clone();
        Box::pin(async move {
            let (peer, ma) = parsed?;
            commander
                .raft_call(peer, Some(ma), request)
                .await
                .map_err(|why| Error::Unreachable(to, why))
        })
    }
}

/// Which member a peer is: from the operator's list, else from the current
/// membership's addresses.
pub fn member_of(
    member: &Member,
    peers: &BTreeMap<PeerId, NodeId>,
    peer: &PeerId,
) -> Option<NodeId> {
    if let Some(id) = peers.get(peer) {
        return Some(*id);
    }
    let metrics = member.metrics();
    metrics
        .membership_config
        .membership()
        .nodes()
        .find(|(_, n)| parse_addr(&n.addr).is_ok_and(|(p, _)| p == *peer))
        .map(|(id, _)| *id)
}

/// Serves Raft requests from `inbox` until it closes. `peers` is the
/// operator's list of the cluster's peers.
pub async fn serve(
    member: Arc<Member>,
    peers: BTreeMap<PeerId, NodeId>,
    mut inbox: mpsc::Receiver<Inbound>,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDLERS));
    while let Some(Inbound {
        from,
        request,
        channel,
    }) = inbox.recv().await
    {
        let Some(id) = member_of(&member, &peers, &from) else {
            let refusal = crate::network::encode_reply(&Reply::Failed(format!(
                "peer {from} is not a member of this cluster"
            )));
            channel.respond(refusal);
            continue;
        };
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let member = Arc::clone(&member);
        tokio::spawn(async move {
            let response = member.handle(id, &request).await;
            channel.respond(response);
            drop(permit);
        });
    }
}
