//! The column cache: cached answers equal answers read from storage, a
//! changed segment is read again and only it, columns are added as queries
//! ask for them, and the byte budget holds.

use std::sync::Arc;

use pyralog_ledger::chain::Hlc;
use pyralog_ledger::state::WriteOrder;
use pyralog_ledger::{Encode, Hash, RecordEntry, StateKey, Store, devkit};
use pyralog_sql::{Answer, Limits, ScanCache, query, query_cached};

use crate::fixture::FIXTURE;
use crate::queries::rows;

const RECORDS: u64 = 40_000;

/// The fixture's genesis with 40,000 imported records over 100 owners.
fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("dir");
    let mut store = Store::open(&dir.path().join("c.redb"), &FIXTURE.file).expect("open");
    let owner = |i: u64| FIXTURE.users[(i % 100) as usize].address();
    let entries = (0..RECORDS)
        .map(|i| {
            let e = RecordEntry {
                value: Some(format!("v{i}").into_bytes()),
                sealed: false,
                version: i % 7,
                order: WriteOrder {
                    hlc: Hlc {
                        wall_ms: 1_000 + i,
                        logical: 0,
                    },
                    origin: owner(i),
                    tx: Hash::default(),
                },
            };
            (
                StateKey::Record(owner(i), i.to_be_bytes().to_vec()),
                e.to_bytes(),
            )
        })
        .collect();
    store.import_entries(entries).expect("import");
    (dir, store)
}

const AGG: &str = "SELECT count(*), sum(version), max(hlc) FROM records";

fn cached(store: &Store, sql: &str, cache: &Arc<ScanCache>) -> Answer {
    let s = store.scan_snapshot().expect("snapshot");
    query_cached(s, sql, &Limits::default(), Some(cache.clone())).expect("query")
}

fn uncached(store: &Store, sql: &str) -> Answer {
    query(store.snapshot().expect("snapshot"), sql, &Limits::default()).expect("query")
}

#[test]
fn a_second_scan_comes_from_the_cache_and_a_change_rereads_only_its_segment() {
    let (_dir, mut store) = store();
    let entries = store.entries().expect("entries").len() as u64;
    let cache = Arc::new(ScanCache::new(64 << 20));

    let first = cached(&store, AGG, &cache);
    assert_eq!(rows(&first), rows(&uncached(&store, AGG)));
    assert_eq!(first.rows_read, entries, "a cold cache reads every entry");
    assert_eq!(first.rows_cached, 0);

    let second = cached(&store, AGG, &cache);
    assert_eq!(rows(&second), rows(&first));
    assert_eq!(second.rows_read, 0, "nothing read from storage");
    assert_eq!(second.rows_cached, RECORDS);
    let segments = store
        .scan_snapshot()
        .expect("snapshot")
        .segments()
        .expect("segments")
        .hashes
        .len() as u64;
    assert!(segments >= 8, "{segments} segments");

    // A real block: the faucet writes one record (and pays its fee).
    let chain = FIXTURE.file.chain_id.parse().expect("chain");
    let t = devkit::tx(
        &chain,
        &FIXTURE.faucet,
        0,
        0,
        devkit::put(&FIXTURE.faucet, b"new", b"value"),
        crate::fixture::BITS,
    );
    crate::fixture::apply_all(&mut store, vec![t], 1);
    let third = cached(&store, AGG, &cache);
    assert_eq!(rows(&third), rows(&uncached(&store, AGG)));
    assert_eq!(
        rows(&third)[0][0],
        serde_json::json!(RECORDS + 1),
        "the new record is counted"
    );
    // Only the segments the block touched (the record, the faucet's and the
    // proposer's accounts) were read again.
    assert!(third.rows_read > 0);
    assert!(
        third.rows_read <= 3 * entries / segments * 2,
        "{} of {entries} entries read",
        third.rows_read
    );
    assert!(third.rows_cached >= RECORDS - 3 * RECORDS / segments * 2);
}

#[test]
fn columns_are_added_to_a_cached_segment_as_queries_ask() {
    let (_dir, store) = store();
    let cache = Arc::new(ScanCache::new(64 << 20));
    let narrow = "SELECT sum(version) FROM records";
    let wide = "SELECT sum(version), sum(length(value)), count(DISTINCT address) FROM records";
    cached(&store, narrow, &cache);
    let bytes_narrow = cache.stats().bytes;
    // One u64 column: about 8 bytes a row, not a batch's worth of room per
    // segment.
    let per_row = bytes_narrow as f64 / RECORDS as f64;
    assert!((8.0..10.0).contains(&per_row), "{per_row} bytes a row");

    // `value` and `address` are not cached yet: a miss that rebuilds.
    let w = cached(&store, wide, &cache);
    assert_eq!(w.rows_cached, 0);
    assert_eq!(rows(&w), rows(&uncached(&store, wide)));
    assert_eq!(rows(&w)[0][2], serde_json::json!(100));
    assert!(cache.stats().bytes > bytes_narrow);

    // Now both the wide and the narrow query are hits.
    assert_eq!(cached(&store, wide, &cache).rows_read, 0);
    let n = cached(&store, narrow, &cache);
    assert_eq!(n.rows_read, 0);
    assert_eq!(rows(&n), rows(&uncached(&store, narrow)));
}

#[test]
fn the_cache_keeps_within_its_budget_and_a_plain_snapshot_bypasses_it() {
    let (_dir, store) = store();
    // Room for about half of the segments.
    let probe = Arc::new(ScanCache::new(64 << 20));
    cached(&store, AGG, &probe);
    let all = probe.stats().bytes;
    let budget = all / 2;
    let cache = Arc::new(ScanCache::new(budget));
    for _ in 0..3 {
        let a = cached(&store, AGG, &cache);
        assert_eq!(rows(&a), rows(&uncached(&store, AGG)));
        let s = cache.stats();
        assert!(s.bytes <= budget, "{s:?} over {budget}");
        assert!(s.segments > 0);
    }

    // A budget of nothing keeps nothing, and still answers.
    let none = Arc::new(ScanCache::new(0));
    cached(&store, AGG, &none);
    let again = cached(&store, AGG, &none);
    assert_eq!(again.rows_cached, 0);
    assert_eq!(none.stats().segments, 0);

    // A snapshot without segments reads storage even with a cache.
    let plain = query_cached(
        store.snapshot().expect("snapshot"),
        AGG,
        &Limits::default(),
        Some(probe.clone()),
    )
    .expect("query");
    assert_eq!(plain.rows_cached, 0);
    assert!(plain.rows_read >= RECORDS);
}

#[test]
fn filtered_and_point_reads_still_narrow_with_a_cache() {
    let (_dir, store) = store();
    let cache = Arc::new(ScanCache::new(64 << 20));
    let who = FIXTURE.users[3].address();
    let sql = format!("SELECT count(*) FROM accounts WHERE address = '{who}'");
    let a = cached(&store, &sql, &cache);
    assert_eq!(a.rows_read, 1, "a point lookup, not a cached scan");
    assert_eq!(a.rows_cached, 0);
}
