//! Pyralog's clusters: each participant of the network is a Raft group of
//! 1..N members (openraft) that replicate one log; the ledger is the state
//! machine.
//!
//! # Layout
//!
//! - [`types`]: the openraft type configuration.
//! - [`command`]: what the log carries ([`Command`]) and what applying it
//!   answers ([`Response`]).
//! - [`log_store`]: the Raft log ([`LogStore`]): entries in segment files
//!   (`wal`), the vote in redb.
//! - [`machine`]: the state machine over the ledger ([`LedgerMachine`]),
//!   snapshots; [`snapshot`] is the snapshot file format.
//! - [`intent`]: signing intents, the no-double-signing rule, and the
//!   signing-history interchange file.
//! - [`network`]: Raft RPCs as messages ([`network::Rpc`], [`network::Reply`]),
//!   the [`network::Transport`] they travel over, the in-process transport
//!   tests use ([`network::mem::MemNet`]) and the libp2p one
//!   ([`network::p2p::P2pTransport`], [`network::p2p::serve`]).
//! - [`member`]: one running member ([`Member`]): writes (forwarded to the
//!   leader), reads at a consistency level, membership, signing.
//! - [`ledger`]: the shared handle on the member's ledger store.
//! - [`linearizability`]: a linearizability checker for registers (read,
//!   write, compare-and-set) and the recorder of the histories it checks.
//! - [`wire`]: the CBOR envelope for openraft's types.
//! - [`error`]: the crate's one error type.
//! - `fault` (feature `fault-injection`, tests only): switches that make a
//!   member misbehave on purpose, to show that the tests would notice.
//!
//! Decisions and their alternatives: `docs/adr/0010-clusters-with-openraft.md`.
#![forbid(unsafe_code)]

pub mod command;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod intent;
pub mod ledger;
pub mod linearizability;
pub mod log_store;
pub mod machine;
pub mod member;
pub mod network;
pub mod snapshot;
pub mod types;
pub(crate) mod wal;
pub mod wire;

pub use command::{BatchOutcome, Command, Ordered, Response};
pub use error::Error;
pub use ledger::Ledger;
pub use log_store::{LogStore, open_cluster_db};
pub use machine::{
    Applied, CLUSTER_SYNC_AFTER, LEDGER_SYNC_AFTER, LedgerMachine, MachineView, PendingLimits,
};
pub use member::{Answers, Consistency, Member, MemberConfig, Status};
pub use network::Transport;
pub use network::mem::MemNet;
pub use types::{Member as MemberAddr, NodeId, TypeConfig};
