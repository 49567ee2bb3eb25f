//! Merkle proofs of presence and absence, bucket diffs, and the frozen genesis.

mod common;

use proptest::prelude::*;
use pyralog_ledger::merkle::{RecordProof, StateTree, bucket_of};
use pyralog_ledger::{Decode, Encode, Engine, Error, Hash, RecordEntry, StateKey, devkit};

fn key(n: &common::Net, k: &[u8]) -> StateKey {
    StateKey::Record(n.alice.address(), k.to_vec())
}

fn filled() -> common::Net {
    let mut n = common::net(Engine::Pbft);
    let txs = (0..20u64)
        .map(|i| {
            n.tx(
                &n.alice,
                i,
                devkit::put(&n.alice, format!("key-{i}").as_bytes(), &[i as u8; 10]),
            )
        })
        .collect();
    n.apply(txs);
    n
}

#[test]
fn presence_and_absence_proofs_verify() {
    let n = filled();
    let root = n.store.state_root();
    for i in 0..20u64 {
        let k = key(&n, format!("key-{i}").as_bytes());
        let proof = n.store.proof(&k).expect("proof");
        let entry = proof.verify(&root, &k).expect("valid").expect("present");
        let entry = RecordEntry::from_bytes(entry).expect("entry");
        assert_eq!(entry.value, Some(vec![i as u8; 10]));
        // The proof survives its wire form.
        let back = RecordProof::from_bytes(&proof.to_bytes()).expect("decode");
        assert_eq!(back, proof);
    }
    let absent = key(&n, b"never-written");
    let proof = n.store.proof(&absent).expect("proof");
    assert_eq!(proof.verify(&root, &absent).expect("valid"), None);
    // Accounts are proven the same way.
    let acc = StateKey::Account(n.alice.address());
    assert!(
        n.store
            .proof(&acc)
            .expect("proof")
            .verify(&root, &acc)
            .expect("valid")
            .is_some()
    );
}

#[test]
fn any_flipped_byte_breaks_a_proof() {
    let n = filled();
    let root = n.store.state_root();
    let k = key(&n, b"key-3");
    let proof = n.store.proof(&k).expect("proof");
    let bytes = proof.to_bytes();
    let mut broken = 0;
    for i in 0..bytes.len() {
        for bit in [0u8, 3, 7] {
            let mut b = bytes.clone();
            b[i] ^= 1 << bit;
            match RecordProof::from_bytes(&b) {
                Err(_) => broken += 1,
                Ok(p) => match p.verify(&root, &k) {
                    Err(_) => broken += 1,
                    Ok(v) => panic!(
                        "flipping bit {bit} of byte {i} still verifies: {:?}",
                        v.map(|_| "present")
                    ),
                },
            }
        }
    }
    assert_eq!(broken, bytes.len() * 3);
}

#[test]
fn a_proof_does_not_serve_another_key_or_root() {
    let n = filled();
    let root = n.store.state_root();
    let k = key(&n, b"key-3");
    let proof = n.store.proof(&k).expect("proof");
    // Another key in another bucket: refused outright.
    let other = (0..)
        .map(|i| key(&n, format!("other-{i}").as_bytes()))
        .find(|o| bucket_of(&o.to_bytes(), proof.bucket_bits) != proof.bucket)
        .expect("some key elsewhere");
    assert!(matches!(
        proof.verify(&root, &other),
        Err(Error::BadProof(_))
    ));
    // Another key in the same bucket: the proof shows that key's own entry (here
    // none), never key-3's.
    if let Some(same) = (0..5000)
        .map(|i| key(&n, format!("same-{i}").as_bytes()))
        .find(|o| bucket_of(&o.to_bytes(), proof.bucket_bits) == proof.bucket)
    {
        assert_eq!(proof.verify(&root, &same).expect("valid"), None);
    }
    // Another root.
    let mut wrong = root;
    wrong.0[0] ^= 1;
    assert!(matches!(proof.verify(&wrong, &k), Err(Error::BadProof(_))));
    assert!(proof.verify(&Hash::ZERO, &k).is_err());
}

#[test]
fn a_stale_proof_fails_against_the_new_root() {
    let mut n = filled();
    let k = key(&n, b"key-3");
    let old = n.store.proof(&k).expect("proof");
    n.apply(vec![n.tx(
        &n.alice,
        20,
        devkit::put(&n.alice, b"key-3", b"new"),
    )]);
    assert!(old.verify(&n.store.state_root(), &k).is_err());
}

#[test]
fn diff_lists_exactly_the_buckets_that_changed() {
    let a = common::net(Engine::Gossip);
    let mut b = common::net(Engine::Gossip);
    assert_eq!(a.store.state_root(), b.store.state_root());
    assert!(a.store.tree().diff(b.store.tree()).is_empty());
    let now = 1_800_000_000_000u64;
    let epoch = b.store.genesis().gossip_epoch(now);
    let keys: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 3]).collect();
    let txs = keys
        .iter()
        .map(|k| {
            devkit::tx(
                &b.chain,
                &b.alice,
                0,
                epoch,
                devkit::put(&b.alice, k, b"v"),
                common::BITS,
            )
        })
        .collect();
    let origin = devkit::key(77);
    let batch = pyralog_ledger::Batch::seal(
        b.chain.clone(),
        &origin,
        1,
        pyralog_ledger::Hlc {
            wall_ms: now,
            logical: 0,
        },
        txs,
    );
    b.store
        .merge_batch(
            &pyralog_ledger::VerifiedBatch::verify(batch).expect("sig"),
            now,
        )
        .expect("merge");
    let bits = b.store.tree().bits();
    let mut expected: Vec<u32> = keys
        .iter()
        .map(|k| {
            bucket_of(
                &StateKey::Record(b.alice.address(), k.clone()).to_bytes(),
                bits,
            )
        })
        .collect();
    expected.sort();
    expected.dedup();
    assert_eq!(a.store.tree().diff(b.store.tree()), expected);
    assert_eq!(b.store.tree().diff(a.store.tree()), expected);
}

#[test]
fn the_genesis_state_is_frozen() {
    let n = common::net(Engine::Pbft);
    let g = n.store.genesis();
    // Same inputs, same genesis, on any machine: a change here is a format break.
    assert_eq!(
        g.hash().to_hex(),
        "b8dbaba04b609d94ca014a7c4f237990b3bee1622e3f3c644725a6f16d564b13"
    );
    assert_eq!(
        n.store.state_root().to_hex(),
        "a157b92b264e7bd2136fb09fb39ebfc453e2a08a1865b0ca5e1c6477b51ca1f1"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Trees built from random bucket contents prove every bucket.
    #[test]
    fn every_bucket_of_a_small_tree_proves(bits in 0u32..7, seed: u64) {
        let leaves: Vec<Hash> = (0..1u64 << bits)
            .map(|i| Hash::of(pyralog_ledger::Domain::Bucket, &(seed ^ i).to_le_bytes()))
            .collect();
        let tree = StateTree::new(bits, leaves.clone()).expect("tree");
        for b in 0..(1u32 << bits) {
            let ok = rs_merkle::MerkleProof::<pyralog_ledger::merkle::NodeHasher>::new(
                tree.path(b).iter().map(|h| h.0).collect(),
            )
            .verify(tree.root().0, &[b as usize], &[leaves[b as usize].0], 1 << bits);
            prop_assert!(ok);
        }
    }
}
