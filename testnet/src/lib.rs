//! # pyralog-testnet
//!
//! Local devnets, genesis files, load and benchmarks. The binary is a thin
//! command line over this library; the end-to-end tests use [`devnet`] directly.
//!
//! # Layout
//!
//! - [`bench`]: a load against a devnet and its figures.
//! - [`devnet`]: lays out and runs a devnet of node processes on loopback; also
//!   the small RPC helpers tests and load generators use.

use std::path::Path;

use anyhow::Result;
use pyralog_ledger::Keypair;

pub mod devnet;

/// Writes a key's secret seed as hex, readable by its owner only; refuses to
/// overwrite (the node's key-file format, see `pyralog_node::home`).
pub fn write_secret(path: &Path, key: &Keypair) -> Result<()> {
    pyralog_node::home::write_secret(path, &key.seed())
}
pub mod bench;
