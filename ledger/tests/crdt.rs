//! The CRDT laws of gossip merging: any order and any duplication of the same
//! batches gives the same state root (commutative, associative, idempotent).

mod common;

use std::sync::LazyLock;

use proptest::prelude::*;
use pyralog_ledger::block::VerifiedBatch;
use pyralog_ledger::{Batch, Engine, Hlc, Keypair, Payload, Store, Transaction, devkit};

/// The start of a gossip epoch, so every batch below falls in one epoch.
/// (1.8e12 is a multiple of the 50 s gossip epoch of the devnet parameters.)
const NOW: u64 = 1_800_000_000_000;

struct Pool {
    file: pyralog_ledger::GenesisFile,
    /// Signed writes: (owner, key, value-or-delete) over a small key space, so
    /// conflicts are frequent.
    txs: Vec<Transaction>,
    origins: Vec<Keypair>,
}

static POOL: LazyLock<Pool> = LazyLock::new(|| {
    let mut params = common::params();
    params.bucket_bits = 10; // small trees keep the many stores of this test fast
    let n = common::net_with(Engine::Gossip, params, 0, 0);
    let owners = [n.alice.clone(), n.bob.clone()];
    let epoch = n.store.genesis().gossip_epoch(NOW);
    let mut txs = Vec::new();
    for (i, owner) in owners.iter().enumerate() {
        for k in 0..3u8 {
            for v in 0..3u8 {
                let payload = if v == 2 {
                    Payload::Delete {
                        namespace: owner.address(),
                        keys: vec![vec![k]],
                    }
                } else {
                    devkit::put(owner, &[k], &[i as u8, k, v])
                };
                txs.push(devkit::tx(&n.chain, owner, 0, epoch, payload, common::BITS));
            }
        }
    }
    Pool {
        file: n.file.clone(),
        txs,
        origins: (50..53).map(devkit::key).collect(),
    }
});

#[derive(Clone, Debug)]
struct BatchSpec {
    origin: usize,
    seq: u64,
    wall: u64,
    logical: u32,
    txs: Vec<usize>,
}

fn spec() -> impl Strategy<Value = BatchSpec> {
    (
        0..3usize,
        1..4u64,
        0..4u64,
        0..2u32,
        prop::collection::vec(0..18usize, 1..4),
    )
        .prop_map(|(origin, seq, wall, logical, txs)| BatchSpec {
            origin,
            seq,
            wall,
            logical,
            txs,
        })
}

fn build(s: &BatchSpec) -> VerifiedBatch {
    let p = &*POOL;
    let txs = s.txs.iter().map(|i| p.txs[*i].clone()).collect();
    let hlc = Hlc {
        wall_ms: NOW + s.wall,
        logical: s.logical,
    };
    VerifiedBatch::verify(Batch::seal(
        "pyralog-test".parse().expect("chain"),
        &p.origins[s.origin],
        s.seq,
        hlc,
        txs,
    ))
    .expect("signatures")
}

fn root_after(batches: &[&VerifiedBatch]) -> pyralog_ledger::Hash {
    let dir = tempfile::tempdir().expect("dir");
    let mut store = Store::open(&dir.path().join("s.redb"), &POOL.file).expect("store");
    for b in batches {
        store.merge_batch(b, NOW + 10).expect("merge");
    }
    store.state_root()
}

/// The root after merging `batches` in commits of `group` batches each.
fn root_after_groups(batches: &[&VerifiedBatch], group: usize) -> pyralog_ledger::Hash {
    let dir = tempfile::tempdir().expect("dir");
    let mut store = Store::open(&dir.path().join("s.redb"), &POOL.file).expect("store");
    for chunk in batches.chunks(group.max(1)) {
        let owned: Vec<VerifiedBatch> = chunk.iter().map(|b| (*b).clone()).collect();
        for outcome in store.merge_batches(&owned, NOW + 10).expect("storage") {
            outcome.expect("merge");
        }
    }
    store.state_root()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_order_and_duplication_gives_the_same_root(
        specs in prop::collection::vec(spec(), 1..6),
        order in Just(()).prop_perturb(|_, mut rng| rng.random::<u64>()),
        dups in prop::collection::vec(0..6usize, 0..4),
    ) {
        let batches: Vec<VerifiedBatch> = specs.iter().map(build).collect();
        let forward: Vec<&VerifiedBatch> = batches.iter().collect();
        // A shuffled order with duplicates mixed in.
        let mut shuffled: Vec<&VerifiedBatch> = forward.clone();
        for d in &dups {
            shuffled.push(&batches[d % batches.len()]);
        }
        let mut state = order;
        for i in (1..shuffled.len()).rev() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (state >> 33) as usize % (i + 1));
        }
        let reversed: Vec<&VerifiedBatch> = forward.iter().rev().copied().collect();
        let a = root_after(&forward);
        prop_assert_eq!(a, root_after(&shuffled));
        prop_assert_eq!(a, root_after(&reversed));
        // Merged in groups, one commit each: the same state.
        prop_assert_eq!(a, root_after_groups(&shuffled, shuffled.len()));
        prop_assert_eq!(a, root_after_groups(&shuffled, 2));
    }
}

#[test]
fn a_group_judges_each_batch_on_its_own() {
    let spec = |origin, seq, wall, txs| BatchSpec {
        origin,
        seq,
        wall,
        logical: 0,
        txs,
    };
    let a = build(&spec(0, 1, 0, vec![0, 4]));
    let b = build(&spec(1, 1, 1, vec![9]));
    // Stamped an hour ahead of the merging node's clock.
    let future = build(&spec(2, 1, 3_600_000, vec![10]));
    let dir = tempfile::tempdir().expect("dir");
    let mut store = Store::open(&dir.path().join("s.redb"), &POOL.file).expect("store");
    let outcomes = store
        .merge_batches(&[a.clone(), future, b.clone(), a.clone()], NOW + 10)
        .expect("storage");
    let root = store.state_root();
    assert_eq!(
        outcomes[0],
        Ok(pyralog_ledger::MergeOutcome::Merged { state_root: root })
    );
    assert!(
        matches!(
            outcomes[1],
            Err(pyralog_ledger::Error::BatchFromFuture { .. })
        ),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(
        outcomes[2],
        Ok(pyralog_ledger::MergeOutcome::Merged { state_root: root })
    );
    assert_eq!(outcomes[3], Ok(pyralog_ledger::MergeOutcome::AlreadyMerged));
    // What the good two make when merged alone.
    assert_eq!(root, root_after(&[&a, &b]));
    assert_eq!(
        store.batch_heads().expect("heads").len(),
        2,
        "the refused origin has no batch"
    );
}

#[test]
fn merging_a_batch_twice_changes_nothing_the_second_time() {
    let b = build(&BatchSpec {
        origin: 0,
        seq: 1,
        wall: 0,
        logical: 0,
        txs: vec![0, 4, 9],
    });
    let dir = tempfile::tempdir().expect("dir");
    let mut store = Store::open(&dir.path().join("s.redb"), &POOL.file).expect("store");
    store.merge_batch(&b, NOW).expect("merge");
    let once = common::snapshot(&store);
    assert_eq!(
        store.merge_batch(&b, NOW),
        Ok(pyralog_ledger::MergeOutcome::AlreadyMerged)
    );
    assert_eq!(common::snapshot(&store), once);
}

#[test]
fn the_order_of_merging_decides_nothing_even_for_equal_clocks() {
    // Two origins write one key at the same clock: the origin breaks the tie,
    // whichever arrives first.
    let x = build(&BatchSpec {
        origin: 0,
        seq: 1,
        wall: 1,
        logical: 0,
        txs: vec![0],
    });
    let y = build(&BatchSpec {
        origin: 1,
        seq: 1,
        wall: 1,
        logical: 0,
        txs: vec![1],
    });
    assert_eq!(root_after(&[&x, &y]), root_after(&[&y, &x]));
    // The same origin equivocating with two batches under one seq: both merge,
    // and the result is still order-free.
    let z = build(&BatchSpec {
        origin: 0,
        seq: 1,
        wall: 1,
        logical: 0,
        txs: vec![1],
    });
    assert_eq!(root_after(&[&x, &z]), root_after(&[&z, &x]));
}
