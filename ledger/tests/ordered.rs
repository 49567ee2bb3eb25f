//! Blocks ordered before execution (PBFT): every transaction stays in the block,
//! the failing ones have no effect and are reported; engine records persist.

use pyralog_ledger::block::{Certificate, Vote, verify_tx};
use pyralog_ledger::store::TxLocation;
use pyralog_ledger::{Engine, Keypair, Payload, Signature, Store, devkit};

#[test]
fn an_ordered_block_keeps_every_transaction_and_skips_the_failing_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let alice = devkit::key(1);
    let bob = devkit::key(2);
    let validators: Vec<Keypair> = (100..104).map(devkit::key).collect();
    let vals: Vec<(&Keypair, String)> = validators
        .iter()
        .map(|k| (k, "/ip4/127.0.0.1/tcp/1".to_owned()))
        .collect();
    let mut params = devkit::devnet_params(0);
    params.epoch_length = 1_000_000;
    let file = devkit::genesis_file("ordered", Engine::Pbft, params, &[(&alice, 100)], &vals);
    let chain = "ordered".parse().expect("chain");
    let path = dir.path().join("db");
    let mut store = Store::open(&path, &file).expect("open");
    let transfer = |nonce, amount| {
        let t = devkit::tx(
            &chain,
            &alice,
            nonce,
            0,
            Payload::Transfer {
                to: bob.address(),
                amount,
            },
            0,
        );
        verify_tx(t).expect("signed")
    };
    // The second spends more than is left: skipped. The third is fine.
    let txs = vec![transfer(0, 60), transfer(1, 60), transfer(1, 30)];
    let cert = Certificate {
        round: 3,
        votes: vec![Vote {
            validator: validators[0].address(),
            signature: Signature([7; 64]),
        }],
    };
    let genesis_time = store.tip().timestamp_ms;
    let (tip, failed) = store
        .commit_ordered(
            validators[1].address(),
            5,
            txs.clone(),
            vec![1, 2],
            cert.clone(),
            &[b"zero".to_vec()],
        )
        .expect("commit");
    assert_eq!(tip.height, 1);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, txs[1].id());
    assert_eq!(store.account(&alice.address()).expect("alice").balance, 10);
    assert_eq!(store.account(&bob.address()).expect("bob").balance, 90);
    let block = store.block(1).expect("read").expect("stored");
    assert_eq!(
        block.txs.len(),
        3,
        "the failing transaction stays in the block"
    );
    assert_eq!(block.certificate, cert);
    assert_eq!(block.header.engine_data, vec![1, 2]);
    assert_eq!(
        block.header.timestamp_ms, genesis_time,
        "never before the parent"
    );
    assert_eq!(block.header.state_root, store.state_root());
    assert_eq!(block.hash(), tip.hash);

    store
        .append_engine_records(&[b"one".to_vec(), b"two".to_vec()])
        .expect("append");
    store
        .append_engine_records(&[b"three".to_vec()])
        .expect("append");
    drop(store);
    let store = Store::open(&path, &file).expect("reopen");
    assert_eq!(store.tip(), tip);
    assert_eq!(
        store.engine_records().expect("records"),
        vec![
            b"zero".to_vec(),
            b"one".to_vec(),
            b"two".to_vec(),
            b"three".to_vec()
        ]
    );
    assert_eq!(store.engine_records_len().expect("count"), 4);
    // Every transaction of the block is found where it is, the failing one
    // too, after the reopen; an id that was never committed is not.
    for (i, tx) in txs.iter().enumerate() {
        assert_eq!(
            store.tx_location(&tx.id()).expect("lookup"),
            Some(TxLocation::Block {
                height: 1,
                index: i as u32
            })
        );
    }
    let unknown = verify_tx(devkit::tx(
        &chain,
        &bob,
        0,
        0,
        Payload::Transfer {
            to: alice.address(),
            amount: 1,
        },
        0,
    ))
    .expect("signed");
    assert_eq!(store.tx_location(&unknown.id()).expect("lookup"), None);
    // Looked up together, in one read: the block's, not the unknown one.
    let mut ids: Vec<_> = txs.iter().map(|t| t.id()).collect();
    ids.push(unknown.id());
    let found = store.applied_of(&ids).expect("lookup");
    assert_eq!(found.len(), txs.len());
    assert!(txs.iter().all(|t| found.contains(&t.id())));
    assert!(!found.contains(&unknown.id()));
}
