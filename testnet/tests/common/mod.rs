//! What the end-to-end tests share: a devnet of real node processes in a
//! temporary directory, on a port range of its own.
#![allow(dead_code, unreachable_pub)]

use pyralog_ledger::Engine;
use pyralog_testnet::devnet::{Devnet, Plan};

/// A devnet and its directory; the devnet (its processes) goes first on drop.
pub struct Running {
    pub net: Devnet,
    _dir: tempfile::TempDir,
}

impl Running {
    /// The devnet's directory, removed with it.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }
}

impl std::ops::Deref for Running {
    type Target = Devnet;
    fn deref(&self) -> &Devnet {
        &self.net
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Devnet {
        &mut self.net
    }
}

/// Starts `clusters` single-node clusters running `engine`, stamps at `floor`
/// bits. Each test in a binary takes its own `slot`, so parallel tests never
/// collide: RPC ports at base.., p2p at base + 1000.., all below Linux's
/// ephemeral range (32768 and up), where outgoing connections could take a
/// port first. Test binaries run one after another.
pub fn up(engine: Engine, clusters: usize, slot: u16, floor: u32) -> Running {
    up_with_epochs(engine, clusters, slot, floor, 0)
}

/// [`up`] with `epoch_length` blocks per epoch (0: the devnet's default).
pub fn up_with_epochs(
    engine: Engine,
    clusters: usize,
    slot: u16,
    floor: u32,
    epoch_length: u64,
) -> Running {
    let tmp = tempfile::tempdir().expect("dir");
    let base = 10_000 + (std::process::id() % 200) as u16 * 100 + slot * 10;
    Devnet::up(
        &Plan {
            clusters,
            engine,
            dir: tmp.path().to_path_buf(),
            base_port: base,
            min_difficulty: floor,
            exe: env!("CARGO_BIN_EXE_pyralog-testnet").into(),
            epoch_length,
        },
        &|_| {},
    )
    .map(|net| Running { net, _dir: tmp })
    .expect("devnet up")
}
