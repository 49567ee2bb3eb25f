//! A ledger built from real transactions (stamped, signed, proposed and
//! applied as blocks): 2,000 funded accounts, ~3,000 records with some
//! deleted, ~1,100 blocks. Deterministic, so the sqllogictest file can hold
//! exact answers; built once per test binary.

use std::sync::{LazyLock, Mutex};

use pyralog_ledger::{
    Engine, Keypair, Payload, Snapshot, Store, Transaction, block, devkit, genesis::GenesisFile,
};

pub const BITS: u32 = 4;
pub const USERS: u64 = 2_000;
/// Users `0..WRITERS` each put two records, `k0` and `k1`.
pub const WRITERS: u64 = 1_500;
/// Users `0..DELETERS` then delete `k0`.
pub const DELETERS: u64 = 50;

pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub store: Mutex<Store>,
    pub file: GenesisFile,
    pub faucet: Keypair,
    pub users: Vec<Keypair>,
}

impl Fixture {
    pub fn snapshot(&self) -> Snapshot {
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .snapshot()
            .expect("snapshot")
    }

    /// A snapshot with the state tree's segments, for cached scans.
    pub fn scan_snapshot(&self) -> Snapshot {
        self.store
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .scan_snapshot()
            .expect("snapshot")
    }

    pub fn with_store<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&self.store.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

pub fn proposer() -> Keypair {
    devkit::key(100)
}

fn apply(store: &mut Store, txs: Vec<Transaction>) {
    let n = txs.len();
    let verified = block::verify_txs(txs).expect("signatures");
    let ts = store.tip().timestamp_ms + 1000;
    let (b, rejected) = store
        .propose_block(proposer().address(), ts, verified)
        .expect("propose");
    assert!(rejected.is_empty(), "rejected {rejected:?}");
    assert_eq!(b.txs().len(), n);
    store.apply_block(&b).expect("apply");
}

/// Applies `txs` in blocks of `per_block`.
pub fn apply_all(store: &mut Store, txs: Vec<Transaction>, per_block: usize) {
    let mut it = txs.into_iter().peekable();
    while it.peek().is_some() {
        apply(store, it.by_ref().take(per_block).collect());
    }
}

pub static FIXTURE: LazyLock<Fixture> = LazyLock::new(build);

fn build() -> Fixture {
    let faucet = devkit::key(1);
    let validators: Vec<Keypair> = (100..104).map(devkit::key).collect();
    let vals: Vec<(&Keypair, String)> = validators
        .iter()
        .enumerate()
        .map(|(i, k)| (k, format!("/ip4/127.0.0.1/tcp/{}", 26000 + i)))
        .collect();
    let mut params = devkit::devnet_params(BITS);
    params.epoch_length = 1_000_000;
    let file = devkit::genesis_file(
        "pyralog-sql-test",
        Engine::Pbft,
        params,
        &[(&faucet, 1_000_000_000)],
        &vals,
    );
    let chain = "pyralog-sql-test".parse().expect("chain id");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = Store::open(&dir.path().join("ledger.redb"), &file).expect("open");
    let users: Vec<Keypair> = (0..USERS).map(|i| devkit::key(10_000 + i)).collect();
    let tx = |k: &Keypair, nonce: u64, p: Payload| devkit::tx(&chain, k, nonce, 0, p, BITS);

    // 1. The faucet funds every user: amounts 1000 + 7i, four transfers a block.
    let transfers = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let p = Payload::Transfer {
                to: u.address(),
                amount: 1_000 + 7 * i as u64,
            };
            tx(&faucet, i as u64, p)
        })
        .collect();
    apply_all(&mut store, transfers, 4);

    // 2. Writers put k0 and k1 in one transaction each, three a block.
    let puts = users[..WRITERS as usize]
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let ops = ["k0", "k1"]
                .iter()
                .map(|k| pyralog_ledger::PutOp {
                    key: k.as_bytes().to_vec(),
                    value: format!("{k}-of-{i}").into_bytes(),
                    if_version: None,
                    sealed: false,
                })
                .collect();
            tx(
                u,
                0,
                Payload::Put {
                    namespace: u.address(),
                    ops,
                },
            )
        })
        .collect();
    apply_all(&mut store, puts, 3);

    // 3. Some delete k0 again; some pay their neighbour.
    let mut more: Vec<Transaction> = users[..DELETERS as usize]
        .iter()
        .map(|u| {
            tx(
                u,
                1,
                Payload::Delete {
                    namespace: u.address(),
                    keys: vec![b"k0".to_vec()],
                },
            )
        })
        .collect();
    for i in 0..100usize {
        let p = Payload::Transfer {
            to: users[i + 1].address(),
            amount: 10,
        };
        let nonce = if (i as u64) < DELETERS { 2 } else { 1 };
        more.push(tx(&users[i], nonce, p));
    }
    apply_all(&mut store, more, 10);

    Fixture {
        _dir: dir,
        store: Mutex::new(store),
        file,
        faucet,
        users,
    }
}
