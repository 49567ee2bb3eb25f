//! # pyralog-node
//!
//! The daemon: a home directory with its keys and `config.toml`, the driver that
//! connects the engine to the store, the network and the clock, and the HTTP RPC.
//!
//! # Layout
//!
//! - [`admission`]: the stamp difficulty asked of clients, and validators'
//!   announcements of theirs.
//! - [`cli`]: the `pyralog-node` command line (init, start, join, peer-id).
//! - [`home`]: `init`: the home directory, keys on disk, `config.toml`.
//! - [`config`]: the configuration file and its command-line overrides.
//! - [`driver`]: the one task that owns the store, the engine and the swarm.
//! - [`limit`]: per-source budgets per second (relays per peer, RPC
//!   transactions per client address).
//! - [`rpc`]: the HTTP endpoints, which talk to the driver over a bounded channel.
//! - `query`: `POST /query`, SQL over a snapshot the driver hands out, run on
//!   a blocking thread (feature `sql`, on by default; ADR 0008).
//!
//! One cluster is one node until intra-cluster Raft arrives (issue 5): the node
//! is its cluster's leader and signs with the cluster's validator key.

pub mod admission;
pub mod cli;
pub mod config;
pub mod driver;
mod fault;
pub mod home;
pub mod limit;
mod membership;
mod pbft_host;
mod query;
pub mod rpc;
