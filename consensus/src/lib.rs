//! # pyralog-consensus
//!
//! How the network agrees, as pure state machines: an engine takes an input (a
//! client's transaction, a message from a peer, a timer) and the current time, and
//! returns the effects its host must carry out (merge into the store, publish,
//! fetch, set a timer). Nothing here opens a socket, reads a clock or spawns a
//! task, so the node and the simulator drive the very same code.
//!
//! # Layout
//!
//! - [`engine`]: the [`Engine`] trait every engine implements.
//! - [`gossip`]: the `gossip` engine: signed batches, CRDT merge, anti-entropy.
//! - [`admission`]: the stamp difficulty a node asks for, from its pool's load.
//! - [`announce`]: validators' signed word on the difficulty they ask, and
//!   the network's difficulty it adds up to.
//! - [`bft`]: what every voting engine shares: validator sets with power,
//!   signed statements, quorums, vote bookkeeping and equivocation evidence.
//! - [`pbft`]: the `pbft` engine (Castro and Liskov): three phases, checkpoints,
//!   view changes, state transfer.
//! - [`pos`]: the `pos` engine: the PBFT machinery with stake-weighted
//!   proposers per height, one validator set per epoch, and evidence.
//! - [`intent`]: signing intents: the history of what a validator key
//!   intended to sign, and the rule that refuses a conflicting statement.
//! - [`timelock`]: Rivest–Shamir–Wagner time-lock puzzles: seal with the
//!   factors' shortcut, solve by sequential squaring with checkpoints.
//!

pub mod admission;
pub mod announce;
pub mod bft;
pub mod engine;
pub mod gossip;
pub mod intent;
pub mod pbft;
pub mod pos;
pub mod timelock;

pub use engine::Engine;
