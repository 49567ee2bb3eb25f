//! Fixtures shared by the cluster's tests: a genesis, members' folders.
#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::sync::Arc;

use pyralog_cluster::{Error, Ledger, LedgerMachine, LogStore, open_cluster_db};
use pyralog_ledger::{Engine, GenesisFile, Keypair, devkit};

/// The chain the tests run on.
pub const CHAIN: &str = "pyralog-cluster-test";

/// The cluster's validator key.
pub fn validator() -> Keypair {
    devkit::key(100)
}

/// A gossip genesis with a funded user and the cluster's validator.
pub fn genesis() -> GenesisFile {
    genesis_of(CHAIN)
}

/// The same genesis on another chain id.
pub fn genesis_of(chain: &str) -> GenesisFile {
    let mut params = devkit::devnet_params(2);
    params.epoch_length = 1_000_000;
    devkit::genesis_file(
        chain,
        Engine::Gossip,
        params,
        &[(&devkit::key(1), 1_000_000)],
        &[(&validator(), "/ip4/127.0.0.1/tcp/1".to_owned())],
    )
}

/// The log store and state machine of a member living in `dir`.
pub fn open_member(dir: &Path, genesis: &GenesisFile) -> Result<(LogStore, LedgerMachine), Error> {
    let db = open_cluster_db(&dir.join("raft.redb"))?;
    let ledger = Ledger::open(&dir.join("ledger.redb"), genesis)?;
    let machine = LedgerMachine::open(Arc::clone(&db), ledger, &dir.join("snapshots"))?;
    Ok((LogStore::new(db), machine))
}
