//! The Raft type configuration: what openraft is instantiated with.

use crate::command::{Command, Response};

openraft::declare_raft_types!(
    /// Pyralog's Raft types. A member is named by a `u64` (its place in the
    /// cluster's configuration, chosen by the operator) and addressed by a
    /// [`openraft::impls::BasicNode`] whose `addr` the transport understands
    /// (for libp2p: a multiaddr ending in `/p2p/<peer id>`).
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = openraft::impls::BasicNode,
);

/// A member's id inside its cluster.
pub type NodeId = u64;
/// How a member is reached.
pub type Member = openraft::impls::BasicNode;
/// The openraft instance a member runs.
pub type Raft = openraft::Raft<TypeConfig, crate::machine::LedgerMachine>;
/// A Raft log entry.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// A log id (leader id and index).
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A vote.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// A membership as the state machine stores it.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// A snapshot's metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
