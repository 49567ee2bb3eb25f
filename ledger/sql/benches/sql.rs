//! Storage to Arrow, and a full-table aggregate against DataFusion over the
//! same rows already in memory (measured in the same run).
//!
//! `cargo bench -p pyralog-sql --bench sql`

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pyralog_ledger::chain::Hlc;
use pyralog_ledger::state::WriteOrder;
use pyralog_ledger::{Account, Encode, Engine, Hash, RecordEntry, StateKey, Store, devkit};
use pyralog_sql::{Limits, ScanCache, query, query_cached, query_memory, read_table};

const ROWS: u64 = 1_000_000;

fn store_with(entries: impl Fn(u64) -> (StateKey, Vec<u8>)) -> (tempfile::TempDir, Store) {
    let faucet = devkit::key(1);
    let validators: Vec<_> = (100..104).map(devkit::key).collect();
    let file = devkit::genesis_file(
        "pyralog-sql-bench",
        Engine::Pbft,
        devkit::devnet_params(0),
        &[(&faucet, 1)],
        &validators
            .iter()
            .map(|k| (k, "/ip4/127.0.0.1/tcp/1".to_owned()))
            .collect::<Vec<_>>(),
    );
    let dir = tempfile::tempdir().expect("dir");
    let mut store = Store::open(&dir.path().join("bench.redb"), &file).expect("open");
    // In slices, so the import's memory stays modest.
    for start in (0..ROWS).step_by(100_000) {
        let chunk = (start..(start + 100_000).min(ROWS)).map(&entries).collect();
        store.import_entries(chunk).expect("import");
    }
    (dir, store)
}

fn address(i: u64) -> pyralog_ledger::Address {
    let mut a = [0u8; 32];
    a[..8].copy_from_slice(&i.to_be_bytes());
    a[8] = 0xAA;
    pyralog_ledger::Address(a)
}

fn benches(c: &mut Criterion) {
    let (_a, accounts) = store_with(|i| {
        let acc = Account {
            balance: i * 3,
            nonce: i % 17,
            stake: 0,
        };
        (StateKey::Account(address(i)), acc.to_bytes())
    });
    let (_r, mut records) = store_with(record);

    let mut g = c.benchmark_group("scan");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ROWS));
    // The floor: redb hands out every state row, nothing decoded or built.
    g.bench_function("raw_state_rows", |b| {
        b.iter(|| {
            let snapshot = records.snapshot().expect("snapshot");
            let mut scan = snapshot.scan_state().expect("scan");
            let mut bytes = 0usize;
            while scan
                .visit(8192, &mut |k, v| {
                    bytes += k.len() + v.len();
                    Ok(())
                })
                .expect("visit")
                == 8192
            {}
            black_box(bytes)
        })
    });
    for (name, store, table, cols) in [
        (
            "accounts_numbers",
            &accounts,
            "accounts",
            &["balance", "nonce", "stake"][..],
        ),
        ("accounts_all", &accounts, "accounts", &[][..]),
        (
            "records_key_value_version_hlc",
            &records,
            "records",
            &["key", "value", "version", "hlc"][..],
        ),
        ("records_all", &records, "records", &[][..]),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let (batches, read) =
                    read_table(store.snapshot().expect("snapshot"), table, cols).expect("read");
                // The genesis adds a handful of entries (faucet, validators).
                assert!((ROWS..ROWS + 16).contains(&read));
                black_box(batches)
            })
        });
    }
    g.finish();

    let sql = "SELECT count(*), sum(version), max(hlc), sum(length(value)) FROM records";
    let (batches, _) = read_table(
        records.snapshot().expect("snapshot"),
        "records",
        &[
            "address",
            "key",
            "value",
            "version",
            "hlc",
            "hlc_logical",
            "origin",
            "sealed",
            "tx",
        ],
    )
    .expect("read");
    let schema = batches[0].schema();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let limits = Limits {
        timeout: std::time::Duration::from_secs(600),
        ..Limits::default()
    };
    let mut g = c.benchmark_group("aggregate_1M_records");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ROWS));
    g.bench_function("ledger_tables", |b| {
        b.iter(|| {
            black_box(query(records.snapshot().expect("snapshot"), sql, &limits).expect("query"))
        })
    });
    // Through the node's column cache, warmed by one query first: every
    // segment's hash matches, so nothing is read from redb.
    let cache = std::sync::Arc::new(ScanCache::new(1 << 30));
    let cached = |store: &Store| {
        let snapshot = store.scan_snapshot().expect("snapshot");
        query_cached(snapshot, sql, &limits, Some(cache.clone())).expect("query")
    };
    assert_eq!(cached(&records).rows_cached, 0);
    eprintln!("the column cache after one query: {:?}", cache.stats());
    g.bench_function("ledger_tables_cached", |b| {
        b.iter(|| {
            let a = cached(&records);
            assert_eq!(a.rows_read, 0);
            black_box(a)
        })
    });
    g.bench_function("datafusion_memtable", |b| {
        b.iter(|| {
            let t = vec![("records", schema.clone(), batches.clone())];
            black_box(rt.block_on(query_memory(t, sql)).expect("query"))
        })
    });
    g.finish();

    // The cache after writes: before each timed query, 16 records at
    // random places are rewritten (untimed), so about 16 of the segments
    // have new hashes and are read from redb again.
    let mut g = c.benchmark_group("aggregate_1M_records_after_writes");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ROWS));
    let mut round = 0u64;
    g.bench_function("ledger_tables_cached_16_records_rewritten", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let rewrites = (0..16)
                    .map(|j| record_at((round * 7919 + j * 62_501) % ROWS, 1000 + round))
                    .collect();
                records.import_entries(rewrites).expect("import");
                let start = std::time::Instant::now();
                let a = cached(&records);
                total += start.elapsed();
                assert!(a.rows_read > 0 && a.rows_cached > 0);
                black_box(a);
            }
            total
        })
    });
    g.finish();
}

/// Record `i`: owner `i % 10_000`, an 8-byte key, a 30-byte value.
fn record(i: u64) -> (StateKey, Vec<u8>) {
    record_at(i, i % 1000)
}

fn record_at(i: u64, version: u64) -> (StateKey, Vec<u8>) {
    let e = RecordEntry {
        value: Some(format!("value-{i:024}").into_bytes()),
        sealed: false,
        version,
        order: WriteOrder {
            hlc: Hlc {
                wall_ms: 1_800_000_000_000 + i,
                logical: 0,
            },
            origin: address(7),
            tx: Hash::of(pyralog_ledger::Domain::TxId, &i.to_le_bytes()),
        },
    };
    (
        StateKey::Record(address(i % 10_000), i.to_be_bytes().to_vec()),
        e.to_bytes(),
    )
}

criterion_group!(sql, benches);
criterion_main!(sql);
