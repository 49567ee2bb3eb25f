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

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use pyralog_ledger::Keypair;

pub mod devnet;

/// Writes a secret seed as hex, readable by its owner only; refuses to overwrite.
pub fn write_secret(path: &Path, key: &Keypair) -> Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).with_context(|| {
        format!(
            "cannot create {} (keys are never overwritten)",
            path.display()
        )
    })?;
    writeln!(f, "{}", pyralog_ledger::Hash(key.seed()).to_hex())?;
    Ok(())
}
pub mod bench;
