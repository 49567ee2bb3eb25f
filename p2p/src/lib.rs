//! # pyralog-p2p
//!
//! The wire between clusters: a libp2p swarm over TCP with noise and yamux,
//! identify, ping, Kademlia seeded from bootnodes, gossipsub v1.1 in validation
//! mode with peer scoring, and a request-response protocol for fetching batches.
//! This is the only crate that imports libp2p.
//!
//! # Layout
//!
//! - [`topics`]: topic names, bound to the chain id and genesis hash.
//! - [`fetch`]: the batch-fetch protocol and its size-capped codec.
//! - [`raft`]: the Raft RPC protocol between the members of one cluster
//!   (opaque, size-capped frames).
//! - [`network`]: the swarm, its event loop surface ([`Network::next_event`]),
//!   and the commands a node gives it.
//! - [`task`]: the swarm on a task of its own ([`Network::spawn`]), which is
//!   how the node runs it.
//!
//! Nothing received is trusted here: gossip messages are handed to the node
//! undecided, and the node reports each one back as accepted, rejected (the
//! sender's score drops) or ignored; only accepted messages are forwarded.

pub mod fetch;
pub mod network;
pub mod raft;
pub mod task;
pub mod topics;

pub use libp2p::{Multiaddr, PeerId};

/// A node's libp2p identity.
pub type NodeKey = libp2p::identity::Keypair;

/// The node identity whose ed25519 secret is `seed`.
pub fn node_key_from_seed(seed: [u8; 32]) -> Result<NodeKey, network::NetError> {
    libp2p::identity::Keypair::ed25519_from_bytes(seed)
        .map_err(|e| network::NetError::Setup(e.to_string()))
}
/// The peer id a multiaddr ends with (`.../p2p/<peer id>`), if any.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

pub use network::{Config, Limits, NetCommand, NetEvent, Network, Verdict};
pub use task::{Commander, NetHandle};
pub use topics::{Topic, Topics};
