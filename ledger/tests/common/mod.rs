//! Helpers shared by the ledger's integration tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use pyralog_ledger::devkit;
use pyralog_ledger::genesis::{GenesisFile, Params};
use pyralog_ledger::{
    ChainId, Engine, Error, Keypair, Payload, Store, Tip, Transaction, VerifiedBlock, block,
};

/// Stamp difficulty of the test chains: low enough to stamp in microseconds,
/// high enough that an unstamped transaction fails.
pub const BITS: u32 = 6;

pub struct Net {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub file: GenesisFile,
    pub chain: ChainId,
    pub alice: Keypair,
    pub bob: Keypair,
    pub proposer: Keypair,
}

pub fn params() -> Params {
    devkit::devnet_params(BITS)
}

pub fn net(engine: Engine) -> Net {
    net_with(engine, params(), 1_000_000, 500)
}

pub fn net_with(engine: Engine, params: Params, alice_balance: u64, bob_balance: u64) -> Net {
    let alice = devkit::key(1);
    let bob = devkit::key(2);
    let validators: Vec<Keypair> = (100..104).map(devkit::key).collect();
    let vals: Vec<(&Keypair, String)> = validators
        .iter()
        .enumerate()
        .map(|(i, k)| (k, format!("/ip4/127.0.0.1/tcp/{}", 26000 + i)))
        .collect();
    let file = devkit::genesis_file(
        "pyralog-test",
        engine,
        params,
        &[(&alice, alice_balance), (&bob, bob_balance)],
        &vals,
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("ledger.redb"), &file).expect("open store");
    Net {
        dir,
        store,
        chain: "pyralog-test".parse().expect("chain id"),
        alice,
        bob,
        proposer: validators[0].clone(),
        file,
    }
}

impl Net {
    pub fn tx(&self, key: &Keypair, nonce: u64, payload: Payload) -> Transaction {
        devkit::tx(&self.chain, key, nonce, 0, payload, BITS)
    }

    /// Proposes a block of `txs`; panics if the proposer drops any.
    pub fn block(&self, txs: Vec<Transaction>) -> VerifiedBlock {
        let n = txs.len();
        let verified = block::verify_txs(txs).expect("signatures");
        let ts = self.store.tip().timestamp_ms + 1000;
        let (b, rejected) = self
            .store
            .propose_block(self.proposer.address(), ts, verified)
            .expect("propose");
        assert!(rejected.is_empty(), "proposal rejected {rejected:?}");
        assert_eq!(b.txs().len(), n);
        b
    }

    /// A block with `txs` exactly as given (no filtering), with a correct tx
    /// root and the current state root (execution fails first if a tx is bad).
    pub fn raw_block(&self, txs: Vec<Transaction>) -> VerifiedBlock {
        let tip = self.store.tip();
        let header = pyralog_ledger::Header {
            chain_id: self.chain.clone(),
            height: tip.height + 1,
            parent: tip.hash,
            state_root: tip.state_root,
            tx_root: block::tx_root(&txs),
            proposer: self.proposer.address(),
            timestamp_ms: tip.timestamp_ms + 1000,
            engine_data: vec![],
        };
        VerifiedBlock::verify(pyralog_ledger::Block {
            header,
            txs,
            certificate: Default::default(),
        })
        .expect("signatures")
    }

    pub fn apply(&mut self, txs: Vec<Transaction>) -> Tip {
        let b = self.block(txs);
        self.store.apply_block(&b).expect("apply")
    }

    /// Applies a raw block that must fail; checks nothing changed; returns the
    /// root cause.
    pub fn reject(&mut self, txs: Vec<Transaction>) -> Error {
        let before = snapshot(&self.store);
        let b = self.raw_block(txs);
        let err = self
            .store
            .apply_block(&b)
            .expect_err("block must be rejected");
        assert_eq!(
            snapshot(&self.store),
            before,
            "a rejected block changed the store"
        );
        err.root_cause().clone()
    }
}

/// Everything observable about a store's state.
pub fn snapshot(store: &Store) -> (Tip, Vec<(pyralog_ledger::StateKey, Vec<u8>)>) {
    (store.tip(), store.entries().expect("entries"))
}
