//! `Store::snapshot`: one consistent read view (state, blocks, batches, the
//! transaction index and the tip) that later commits do not change.

mod common;

use pyralog_ledger::block::VerifiedBatch;
use pyralog_ledger::store::TxLocation;
use pyralog_ledger::{Batch, Engine, Hlc, Payload, StateKey, Store, devkit};

#[test]
fn a_snapshot_reads_one_commit_and_not_the_ones_after() {
    let mut n = common::net(Engine::Pbft);
    let bob = n.bob.address();
    let put = n.tx(&n.alice, 0, devkit::put(&n.alice, b"k", b"v1"));
    let put_id = put.id();
    n.apply(vec![put]);
    let before = n.store.snapshot().expect("snapshot");
    let tip = n.store.tip();
    assert_eq!(before.tip(), tip);

    let transfer = n.tx(&n.alice, 1, Payload::Transfer { to: bob, amount: 7 });
    n.apply(vec![transfer]);
    assert_ne!(n.store.tip(), tip);

    // The old view still reads the old state, the old tip and the old blocks.
    assert_eq!(before.tip(), tip);
    let bob_then = before.get(&StateKey::Account(bob)).expect("read");
    let bob_now = n.store.snapshot().expect("snapshot");
    assert_ne!(
        bob_then,
        bob_now.get(&StateKey::Account(bob)).expect("read")
    );
    assert!(before.block(2).expect("read").is_none());
    assert_eq!(before.blocks(0, u64::MAX).expect("scan").count(), 1);
    assert_eq!(bob_now.blocks(0, u64::MAX).expect("scan").count(), 2);
    assert_eq!(
        before.tx_location(&put_id).expect("read"),
        Some(TxLocation::Block {
            height: 1,
            index: 0
        })
    );

    // A full state scan hands out exactly the entries the store holds.
    let mut seen = Vec::new();
    let mut scan = bob_now.scan_state().expect("scan");
    loop {
        let got = scan
            .visit(3, &mut |k, v| {
                seen.push((StateKey::from_key_bytes(k)?, v.to_vec()));
                Ok(())
            })
            .expect("visit");
        if got < 3 {
            break;
        }
    }
    seen.sort();
    let mut all = n.store.entries().expect("entries");
    all.sort();
    assert_eq!(seen, all);
}

#[test]
fn block_ranges_are_inclusive_and_an_inverted_range_is_empty() {
    let mut n = common::net(Engine::Pbft);
    for nonce in 0..4 {
        let t = n.tx(&n.alice, nonce, devkit::put(&n.alice, &[nonce as u8], b"x"));
        n.apply(vec![t]);
    }
    let s = n.store.snapshot().expect("snapshot");
    let heights = |a, b| -> Vec<u64> {
        s.blocks(a, b)
            .expect("scan")
            .map(|b| b.expect("block").header.height)
            .collect()
    };
    assert_eq!(heights(2, 3), vec![2, 3]);
    assert_eq!(heights(4, 100), vec![4]);
    assert!(heights(3, 2).is_empty());
}

#[test]
fn a_scan_stops_at_the_visitors_error() {
    let n = common::net(Engine::Pbft);
    let s = n.store.snapshot().expect("snapshot");
    let mut scan = s.scan_state().expect("scan");
    let err = scan
        .visit(10, &mut |_, _| {
            Err(pyralog_ledger::Error::Storage("stop here".into()))
        })
        .expect_err("the visitor's error");
    assert!(err.to_string().contains("stop here"));
}

#[test]
fn batches_by_origin_read_only_that_origins_range() {
    const NOW: u64 = 1_800_000_000_000;
    let n = common::net(Engine::Gossip);
    let dir = tempfile::tempdir().expect("dir");
    let mut store = Store::open(&dir.path().join("g.redb"), &n.file).expect("store");
    let epoch = store.genesis().gossip_epoch(NOW);
    let origins = [devkit::key(50), devkit::key(51)];
    for (i, origin) in origins.iter().enumerate() {
        for seq in 1..=3u64 {
            let t = devkit::tx(
                &n.chain,
                &n.alice,
                0,
                epoch,
                devkit::put(&n.alice, &[i as u8, seq as u8], b"v"),
                common::BITS,
            );
            let hlc = Hlc {
                wall_ms: NOW + seq,
                logical: 0,
            };
            let b = VerifiedBatch::verify(Batch::seal(n.chain.clone(), origin, seq, hlc, vec![t]))
                .expect("signed");
            store.merge_batch(&b, NOW + 10).expect("merge");
        }
    }
    let s = store.snapshot().expect("snapshot");
    assert_eq!(s.batches(None).expect("scan").count(), 6);
    let one: Vec<_> = s
        .batches(Some(&origins[1].address()))
        .expect("scan")
        .map(|b| b.expect("batch"))
        .collect();
    assert_eq!(one.len(), 3);
    assert!(one.iter().all(|b| b.origin == origins[1].address()));
    assert_eq!(one.iter().map(|b| b.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(s.batch(&origins[0].address(), 2).expect("read").is_some());
    assert!(s.batch(&origins[0].address(), 9).expect("read").is_none());
}

/// Every entry of a scan, as (state key bytes, entry bytes).
fn drain(mut scan: pyralog_ledger::store::StateScan) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    while scan
        .visit(64, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(())
        })
        .expect("visit")
        == 64
    {}
    out
}

#[test]
fn segments_cover_the_state_and_only_a_written_segments_hash_moves() {
    use pyralog_ledger::store::SEGMENT_ROWS;
    let mut n = common::net(Engine::Pbft);
    let owner = devkit::key(9).address();
    let entry = |i: u32| pyralog_ledger::RecordEntry {
        value: Some(i.to_be_bytes().to_vec()),
        sealed: false,
        version: 1,
        order: pyralog_ledger::state::WriteOrder {
            hlc: Hlc {
                wall_ms: 1,
                logical: 0,
            },
            origin: owner,
            tx: pyralog_ledger::Hash::default(),
        },
    };
    let rows: Vec<_> = (0..20_000u32)
        .map(|i| {
            let key = StateKey::Record(owner, i.to_be_bytes().to_vec());
            (key, pyralog_ledger::Encode::to_bytes(&entry(i)))
        })
        .collect();
    n.store.import_entries(rows).expect("import");

    // A plain snapshot has no segments; a scan snapshot splits ~20k entries
    // into a power of two of segments of about SEGMENT_ROWS each.
    assert!(n.store.snapshot().expect("snapshot").segments().is_none());
    let before = n.store.scan_snapshot().expect("snapshot");
    let segs = before.segments().expect("segments").clone();
    let count = segs.hashes.len();
    assert!(count.is_power_of_two() && count > 1, "{count} segments");
    let per = 20_000 / count;
    assert!(
        (SEGMENT_ROWS / 2..=SEGMENT_ROWS * 2).contains(&per),
        "{per} rows per segment"
    );
    // The segments, scanned in order, are the whole state scan.
    let whole = drain(before.scan_state().expect("scan"));
    let mut pieces = Vec::new();
    for i in 0..count as u32 {
        pieces.extend(drain(before.scan_segment(i).expect("scan")));
    }
    assert_eq!(pieces, whole);
    assert!(drain(before.scan_segment(count as u32).expect("scan")).is_empty());

    // One changed record moves exactly one segment's hash (and the root).
    let key = StateKey::Record(owner, 77u32.to_be_bytes().to_vec());
    let mut changed = entry(77);
    changed.version = 2;
    n.store
        .import_entries(vec![(key, pyralog_ledger::Encode::to_bytes(&changed))])
        .expect("import");
    let after = n.store.scan_snapshot().expect("snapshot");
    let moved: Vec<usize> = segs
        .hashes
        .iter()
        .zip(&after.segments().expect("segments").hashes)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    let in_moved = drain(after.scan_segment(moved[0] as u32).expect("scan"));
    let key_bytes = StateKey::Record(owner, 77u32.to_be_bytes().to_vec()).to_bytes();
    assert!(in_moved.iter().any(|(k, _)| *k == key_bytes));
    assert_ne!(before.tip().state_root, after.tip().state_root);
}

#[test]
fn deferred_commits_reach_the_disk_with_the_next_sync() {
    let mut n = common::net(Engine::Pbft);
    let live = n.dir.path().join("ledger.redb");
    // What a crash at this moment would leave: a copy of the file as it is
    // on disk, opened (and recovered) as a store of its own.
    let on_disk = |name: &str| -> (u64, u64) {
        let copy = n.dir.path().join(name);
        std::fs::copy(&live, &copy).expect("copy");
        let s = Store::open(&copy, &n.file).expect("open the copy");
        (s.engine_records_len().expect("len"), s.tip().height)
    };
    n.store
        .append_engine_records(&[b"durable".to_vec()])
        .expect("append");
    assert!(n.store.is_synced());
    n.store.defer_fsync(true);
    n.store
        .append_engine_records(&[b"a".to_vec(), b"b".to_vec()])
        .expect("append");
    let pay = n.tx(
        &n.alice,
        0,
        pyralog_ledger::Payload::Transfer {
            to: n.bob.address(),
            amount: 1,
        },
    );
    let block = n.block(vec![pay]);
    n.store.apply_block(&block).expect("apply");
    assert!(!n.store.is_synced());
    // Readers of the live store see it all at once.
    assert_eq!(n.store.engine_records_len().expect("len"), 3);
    assert_eq!(
        n.store.engine_records().expect("records")[1..],
        [b"a".to_vec(), b"b".to_vec()]
    );
    assert_eq!(n.store.tip().height, 1);
    // The disk has only the durable commit until a sync.
    assert_eq!(on_disk("before.redb"), (1, 0));
    // A sync needs only a shared borrow: another thread reads the store
    // while it runs (a member syncs under its ledger's read lock).
    let store = &n.store;
    std::thread::scope(|s| {
        let reader = s.spawn(|| (store.tip().height, store.engine_records_len().expect("len")));
        store.sync().expect("sync");
        assert_eq!(reader.join().expect("reader"), (1, 3));
    });
    assert!(n.store.is_synced());
    assert_eq!(on_disk("after.redb"), (3, 1));
}
