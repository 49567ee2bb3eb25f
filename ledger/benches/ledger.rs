#![allow(missing_docs)] // criterion_group! generates an undocumented function
//! Ledger benchmarks; figures go to docs/BENCHMARKS.md with the command.
//!
//! Run: `cargo bench -p pyralog-ledger --bench ledger`. Each group puts the
//! ledger's figure next to the raw limit measured in the same run.

use std::cell::RefCell;
use std::hint::black_box;
use std::sync::atomic::AtomicBool;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pyralog_ledger::keys::SigDomain;
use pyralog_ledger::merkle::RecordProof;
use pyralog_ledger::pow::{PowKey, SolveParams, Stamp};
use pyralog_ledger::{
    Address, Decode, Encode, Engine, Hash, Keypair, Payload, RecordEntry, StateKey, Store,
    Transaction, block, devkit,
};

const BITS: u32 = 4;

fn chain() -> pyralog_ledger::ChainId {
    "pyralog-bench".parse().expect("chain")
}

/// Transaction decode + signature check, against raw ed25519 batch verification
/// of the same signatures.
fn verify(c: &mut Criterion) {
    const N: usize = 1024;
    let chain = chain();
    let txs: Vec<Transaction> = (0..N as u64)
        .map(|i| {
            let k = devkit::key(i);
            devkit::tx(
                &chain,
                &k,
                0,
                0,
                Payload::Transfer {
                    to: Address([7; 32]),
                    amount: 1,
                },
                BITS,
            )
        })
        .collect();
    let encoded: Vec<Vec<u8>> = txs.iter().map(Encode::to_bytes).collect();
    let messages: Vec<[u8; 48]> = txs
        .iter()
        .map(|t| SigDomain::Transaction.message(&t.id()))
        .collect();
    let sigs: Vec<ed25519_dalek::Signature> = txs
        .iter()
        .map(|t| ed25519_dalek::Signature::from_bytes(&t.signature.0))
        .collect();
    let keys: Vec<ed25519_dalek::VerifyingKey> = txs
        .iter()
        .map(|t| ed25519_dalek::VerifyingKey::from_bytes(&t.body.sender.0).expect("key"))
        .collect();

    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("raw_ed25519_verify_batch_1024", |b| {
        let refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
        b.iter(|| ed25519_dalek::verify_batch(black_box(&refs), &sigs, &keys).expect("valid"))
    });
    // The same library from wire bytes: keys and signatures parsed each time,
    // as a node must for transactions it has never seen.
    let key_bytes: Vec<[u8; 32]> = txs.iter().map(|t| t.body.sender.0).collect();
    let sig_bytes: Vec<[u8; 64]> = txs.iter().map(|t| t.signature.0).collect();
    g.bench_function("raw_ed25519_verify_batch_from_bytes_1024", |b| {
        let refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
        b.iter(|| {
            let keys: Vec<ed25519_dalek::VerifyingKey> = key_bytes
                .iter()
                .map(|k| ed25519_dalek::VerifyingKey::from_bytes(black_box(k)).expect("key"))
                .collect();
            let sigs: Vec<ed25519_dalek::Signature> = sig_bytes
                .iter()
                .map(ed25519_dalek::Signature::from_bytes)
                .collect();
            ed25519_dalek::verify_batch(&refs, &sigs, &keys).expect("valid")
        })
    });
    g.bench_function("tx_decode_and_verify_1024", |b| {
        b.iter(|| {
            let decoded: Vec<Transaction> = encoded
                .iter()
                .map(|e| Transaction::from_bytes(black_box(e)).expect("decode"))
                .collect();
            block::verify_txs(decoded).expect("valid")
        })
    });
    // Recurring senders: their keys are already in the node's key cache.
    let mut cache = pyralog_ledger::keys::KeyCache::new(4 * N);
    block::verify_txs_with(txs.clone(), Some(&mut cache)).expect("warm the cache");
    g.bench_function("tx_decode_and_verify_1024_warm_key_cache", |b| {
        b.iter(|| {
            let decoded: Vec<Transaction> = encoded
                .iter()
                .map(|e| Transaction::from_bytes(black_box(e)).expect("decode"))
                .collect();
            block::verify_txs_with(decoded, Some(&mut cache)).expect("valid")
        })
    });
    g.finish();
}

/// Stamp solving rate against raw blake3 on the same 40-byte input.
fn stamps(c: &mut Criterion) {
    const ATTEMPTS: u64 = 1 << 20;
    let key = PowKey::for_chain(&chain());
    let id = Hash::of(pyralog_ledger::Domain::TxId, b"bench");
    let raw_key = *blake3::hash(b"raw").as_bytes();
    let mut g = c.benchmark_group("pow");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ATTEMPTS));
    g.bench_function("raw_blake3_keyed_40B_1thread", |b| {
        b.iter(|| {
            let mut input = [0u8; 40];
            input[..32].copy_from_slice(&id.0);
            let mut acc = 0u8;
            for n in 0..ATTEMPTS {
                input[32..].copy_from_slice(&n.to_le_bytes());
                acc ^= blake3::keyed_hash(&raw_key, &input).as_bytes()[0];
            }
            acc
        })
    });
    for threads in [1usize, 2] {
        g.throughput(Throughput::Elements(ATTEMPTS * threads as u64));
        g.bench_function(format!("solve_{threads}thread"), |b| {
            b.iter(|| {
                // 64 bits are never found: the solver tries every nonce it is given.
                let p = SolveParams {
                    threads,
                    max_attempts: ATTEMPTS * threads as u64,
                    ..SolveParams::new(64)
                };
                pyralog_ledger::pow::solve(&key, &id, p, &AtomicBool::new(false), &|_| {})
            })
        });
    }
    // What admission pays per transaction: one keyed hash and a count of
    // leading zeros, against the required difficulty.
    let stamp = Stamp { nonce: 7 };
    g.throughput(Throughput::Elements(1));
    g.bench_function("check_1", |b| {
        b.iter(|| key.check(black_box(&id), black_box(stamp), 0))
    });
    g.finish();
}

/// Applying a block of 10k transfers into redb, signatures already checked.
fn apply(c: &mut Criterion) {
    const N: u64 = 10_000;
    let chain = chain();
    let senders: Vec<Keypair> = (0..N).map(|i| devkit::key(1_000_000 + i)).collect();
    let validators: Vec<Keypair> = (0..4).map(devkit::key).collect();
    let vals: Vec<(&Keypair, String)> = validators
        .iter()
        .map(|k| (k, "/ip4/127.0.0.1/tcp/1".into()))
        .collect();
    let funded: Vec<(&Keypair, u64)> = senders.iter().map(|k| (k, 1_000_000)).collect();
    let mut params = devkit::devnet_params(BITS);
    params.epoch_length = 1_000_000;
    let file = devkit::genesis_file("pyralog-bench", Engine::Pbft, params, &funded, &vals);
    let dir = tempfile::tempdir().expect("dir");
    let store = RefCell::new(Store::open(&dir.path().join("apply.redb"), &file).expect("store"));
    let mut g = c.benchmark_group("apply");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    g.bench_function("block_10k_transfers", |b| {
        b.iter_batched(
            || {
                let s = store.borrow();
                let nonce = s.tip().height;
                let txs = senders
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        let mut to = [0u8; 32];
                        to[..8].copy_from_slice(&(i as u64).to_le_bytes());
                        devkit::tx(
                            &chain,
                            k,
                            nonce,
                            0,
                            Payload::Transfer {
                                to: Address(to),
                                amount: 1,
                            },
                            BITS,
                        )
                    })
                    .collect();
                let v = block::verify_txs(txs).expect("sigs");
                let ts = s.tip().timestamp_ms + 1;
                let (blk, rejected) = s
                    .propose_block(validators[0].address(), ts, v)
                    .expect("propose");
                assert!(rejected.is_empty());
                blk
            },
            |blk| store.borrow_mut().apply_block(&blk).expect("apply"),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// The state-root update for a write touching 10k keys of a 1M-key state, and
/// proofs in that state.
fn state_root(c: &mut Criterion) {
    const STATE: u64 = 1_000_000;
    const TOUCH: u64 = 10_000;
    let dir = tempfile::tempdir().expect("dir");
    let validators: Vec<Keypair> = (0..4).map(devkit::key).collect();
    let vals: Vec<(&Keypair, String)> = validators
        .iter()
        .map(|k| (k, "/ip4/127.0.0.1/tcp/1".into()))
        .collect();
    let file = devkit::genesis_file(
        "pyralog-bench",
        Engine::Pbft,
        devkit::devnet_params(BITS),
        &[],
        &vals,
    );
    let mut store = Store::open(&dir.path().join("root.redb"), &file).expect("store");
    let owner = Address([9; 32]);
    let entry = |i: u64, round: u64| {
        let e = RecordEntry {
            value: Some(format!("value-{i}-{round}").into_bytes()),
            sealed: false,
            version: round,
            order: pyralog_ledger::state::WriteOrder {
                hlc: pyralog_ledger::Hlc {
                    wall_ms: round,
                    logical: 0,
                },
                origin: owner,
                tx: Hash::ZERO,
            },
        };
        (
            StateKey::Record(owner, format!("key-{i:08}").into_bytes()),
            e.to_bytes(),
        )
    };
    for chunk in 0..10 {
        let writes = (chunk * STATE / 10..(chunk + 1) * STATE / 10)
            .map(|i| entry(i, 0))
            .collect();
        store.import_entries(writes).expect("load");
    }
    let mut g = c.benchmark_group("state_root");
    g.sample_size(10);
    let mut round = 0;
    // A fresh set of 10k existing keys with new values, per iteration.
    let mut next_writes = || {
        round += 1;
        (0..TOUCH)
            .map(|j| entry((j * 7919 + round * 104_729) % STATE, round))
            .collect::<Vec<_>>()
    };
    g.bench_function("root_after_10k_keys_of_1M", |b| {
        b.iter_batched(
            &mut next_writes,
            |writes| store.root_after(writes).expect("root"),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("update_10k_keys_of_1M", |b| {
        b.iter_batched(
            &mut next_writes,
            |writes| store.import_entries(writes).expect("update"),
            BatchSize::PerIteration,
        )
    });
    let key = StateKey::Record(owner, b"key-00000042".to_vec());
    let proof = store.proof(&key).expect("proof");
    let root = store.state_root();
    println!(
        "proof in a 1M-key state: {} bytes ({} entries in the bucket, {} path hashes)",
        proof.encoded_len(),
        proof.entries.len(),
        proof.path.len()
    );
    g.bench_function("proof_generate", |b| {
        b.iter(|| store.proof(black_box(&key)).expect("proof"))
    });
    let bytes = proof.to_bytes();
    g.bench_function("proof_decode_and_verify", |b| {
        b.iter(|| {
            let p = RecordProof::from_bytes(black_box(&bytes)).expect("decode");
            assert!(p.verify(&root, &key).expect("valid").is_some());
        })
    });
    g.finish();
}

criterion_group!(benches, verify, stamps, apply, state_root);
criterion_main!(benches);
