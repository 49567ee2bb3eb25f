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
//! - [`timelock`]: Rivest–Shamir–Wagner time-lock puzzles: seal with the
//!   factors' shortcut, solve by sequential squaring with checkpoints.
//!
//! PBFT (issue 4) and proof of stake (issue 6) come next to it.

pub mod engine;
pub mod gossip;
pub mod timelock;

pub use engine::Engine;
