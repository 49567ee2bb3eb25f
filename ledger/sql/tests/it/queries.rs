//! Query answers against answers computed from the ledger API, and pushdown
//! shown by the rows-read counter.

use std::collections::BTreeMap;

use pyralog_ledger::{Account, Address, Decode, RecordEntry, StateKey};
use pyralog_sql::{Answer, Limits, query};
use serde_json::{Value, json};

use crate::fixture::{DELETERS, FIXTURE, USERS, WRITERS};

pub fn run(sql: &str) -> Answer {
    query(FIXTURE.snapshot(), sql, &Limits::default()).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub fn rows(a: &Answer) -> Vec<Vec<Value>> {
    let json = a.to_json().expect("json");
    serde_json::from_value(json["rows"].clone()).expect("rows")
}

fn accounts() -> BTreeMap<Address, Account> {
    FIXTURE.with_store(|s| {
        s.entries()
            .expect("entries")
            .into_iter()
            .filter_map(|(k, v)| match k {
                StateKey::Account(a) => Some((a, Account::from_bytes(&v).expect("account"))),
                _ => None,
            })
            .collect()
    })
}

fn live_records() -> BTreeMap<(Address, Vec<u8>), RecordEntry> {
    FIXTURE.with_store(|s| {
        s.entries()
            .expect("entries")
            .into_iter()
            .filter_map(|(k, v)| match k {
                StateKey::Record(a, key) => {
                    let e = RecordEntry::from_bytes(&v).expect("record");
                    (!e.is_tombstone()).then_some(((a, key), e))
                }
                _ => None,
            })
            .collect()
    })
}

#[test]
fn the_richest_accounts_ordered_and_limited() {
    let a = run("SELECT address, balance FROM accounts ORDER BY balance DESC, address LIMIT 10");
    let mut expected: Vec<(u64, String)> = accounts()
        .iter()
        .map(|(a, acc)| (acc.balance, a.to_human()))
        .collect();
    expected.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    let expected: Vec<Vec<Value>> = expected
        .iter()
        .take(10)
        .map(|(b, a)| vec![json!(a), json!(b)])
        .collect();
    assert_eq!(rows(&a), expected);
    let tip = FIXTURE.with_store(|s| s.tip());
    assert_eq!((a.height, a.state_root), (tip.height, tip.state_root));
}

#[test]
fn a_filtered_aggregate_over_accounts() {
    let a = run(
        "SELECT count(*), sum(balance), min(nonce), max(nonce) FROM accounts WHERE balance > 5000 AND stake = 0",
    );
    let kept: Vec<Account> = accounts()
        .into_values()
        .filter(|a| a.balance > 5000 && a.stake == 0)
        .collect();
    let sum: u64 = kept.iter().map(|a| a.balance).sum();
    let min = kept.iter().map(|a| a.nonce).min();
    let max = kept.iter().map(|a| a.nonce).max();
    assert_eq!(
        rows(&a),
        vec![vec![json!(kept.len()), json!(sum), json!(min), json!(max)]]
    );
    // The whole fixture: the faucet, the users, the four validators.
    let all = run("SELECT count(*) FROM accounts");
    assert_eq!(rows(&all), vec![vec![json!(USERS + 5)]]);
}

#[test]
fn records_grouped_by_owner_with_having() {
    let a = run(
        "SELECT address, count(*) AS n FROM records GROUP BY address HAVING count(*) < 2 ORDER BY address",
    );
    let mut per: BTreeMap<String, u64> = BTreeMap::new();
    for (a, _) in live_records().keys() {
        *per.entry(a.to_human()).or_default() += 1;
    }
    let expected: Vec<Vec<Value>> = per
        .iter()
        .filter(|(_, n)| **n < 2)
        .map(|(a, n)| vec![json!(a), json!(n)])
        .collect();
    assert_eq!(
        expected.len() as u64,
        DELETERS,
        "the deleters kept one record each"
    );
    assert_eq!(rows(&a), expected);
    let total = run("SELECT count(*) FROM records");
    assert_eq!(rows(&total), vec![vec![json!(2 * WRITERS - DELETERS)]]);
}

#[test]
fn a_record_found_by_address_and_key_is_one_read() {
    let u = &FIXTURE.users[7];
    let sql = format!(
        "SELECT value, version, sealed FROM records WHERE address = '{}' AND key = 'k1'",
        u.address().to_human()
    );
    let a = run(&sql);
    let e = FIXTURE
        .with_store(|s| s.record(&u.address(), b"k1"))
        .expect("read")
        .expect("present");
    let value = e.value.expect("live");
    assert_eq!(
        rows(&a),
        vec![vec![
            json!(hex::encode(&value)),
            json!(e.version),
            json!(false)
        ]]
    );
    assert_eq!(a.rows_read, 1, "a point lookup");
}

#[test]
fn transactions_joined_with_blocks() {
    let a = run(
        "SELECT b.height, b.proposer, count(t.hash) AS txs, sum(t.amount) AS moved \
         FROM blocks b JOIN transactions t ON t.height = b.height \
         WHERE b.height BETWEEN 10 AND 20 GROUP BY b.height, b.proposer ORDER BY b.height",
    );
    let expected: Vec<Vec<Value>> = FIXTURE.with_store(|s| {
        (10..=20u64)
            .map(|h| {
                let b = s.block(h).expect("read").expect("block");
                let moved: u64 = b
                    .txs
                    .iter()
                    .map(|t| match t.body.payload {
                        pyralog_ledger::Payload::Transfer { amount, .. } => amount,
                        _ => 0,
                    })
                    .sum();
                vec![
                    json!(h),
                    json!(b.header.proposer.to_human()),
                    json!(b.txs.len()),
                    json!(moved),
                ]
            })
            .collect()
    });
    assert_eq!(rows(&a), expected);
    // Both sides were narrowed to the 11 blocks.
    assert_eq!(a.rows_read, 22);
}

#[test]
fn accounts_joined_with_their_records() {
    let a = run(
        "SELECT a.address, a.balance, r.value FROM accounts a JOIN records r ON r.address = a.address \
         WHERE r.key = 'k1' ORDER BY a.balance DESC LIMIT 3",
    );
    let accs = accounts();
    let mut expected: Vec<(u64, String, String)> = live_records()
        .into_iter()
        .filter(|((_, k), _)| k == b"k1")
        .map(|((a, _), e)| {
            (
                accs[&a].balance,
                a.to_human(),
                hex::encode(e.value.expect("live")),
            )
        })
        .collect();
    expected.sort_by_key(|x| std::cmp::Reverse(x.0));
    let expected: Vec<Vec<Value>> = expected
        .into_iter()
        .take(3)
        .map(|(b, a, v)| vec![json!(a), json!(b), json!(v)])
        .collect();
    assert_eq!(rows(&a), expected);
}

#[test]
fn a_transaction_by_hash_reads_the_index_and_one_block() {
    let (id, height, sender) = FIXTURE.with_store(|s| {
        let b = s.block(600).expect("read").expect("block");
        let t = &b.txs[1];
        (t.id(), b.header.height, t.body.sender.to_human())
    });
    let a = run(&format!(
        "SELECT height, position, sender, kind FROM transactions WHERE hash = '{}'",
        id.to_hex()
    ));
    assert_eq!(
        rows(&a),
        vec![vec![json!(height), json!(1), json!(sender), json!("put")]]
    );
    assert_eq!(a.rows_read, 2, "the index entry and the block");
}

#[test]
fn pushdown_reads_fewer_rows_than_a_full_scan() {
    let addr = FIXTURE.users[3].address().to_human();
    let point = run(&format!(
        "SELECT balance FROM accounts WHERE address = '{addr}'"
    ));
    let scan = run(&format!(
        "SELECT balance FROM accounts WHERE concat(address, '') = '{addr}'"
    ));
    assert_eq!(rows(&point), rows(&scan));
    assert_eq!(point.rows_read, 1);
    let state_rows = FIXTURE.with_store(|s| s.entries().expect("entries").len()) as u64;
    assert_eq!(
        scan.rows_read, state_rows,
        "without pushdown every state row is read"
    );

    let blocks = FIXTURE.with_store(|s| s.tip().height);
    let range = run("SELECT count(*) FROM blocks WHERE height >= 100 AND height < 110");
    assert_eq!(rows(&range), vec![vec![json!(10)]]);
    assert_eq!(range.rows_read, 10);
    let all = run("SELECT count(*) FROM blocks WHERE height % 100 = 0");
    assert_eq!(all.rows_read, blocks);

    let two = run(&format!(
        "SELECT count(*) FROM accounts WHERE address IN ('{addr}', '{}')",
        FIXTURE.users[4].address().to_human()
    ));
    assert_eq!(rows(&two), vec![vec![json!(2)]]);
    assert_eq!(two.rows_read, 2);

    let none = run("SELECT count(*) FROM accounts WHERE address = 'not an address'");
    assert_eq!(rows(&none), vec![vec![json!(0)]]);
    assert_eq!(none.rows_read, 0);
}

#[test]
fn a_snapshot_answers_for_its_own_height_after_the_store_moves_on() {
    let before = FIXTURE.snapshot();
    let old_tip = before.tip();
    // A private copy of the fixture's store, so the shared one stays put.
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("copy.redb");
    let mut store = pyralog_ledger::Store::open(&path, &FIXTURE.file).expect("open");
    let faucet = &FIXTURE.faucet;
    let chain = FIXTURE.file.chain_id.parse().expect("chain");
    let t = pyralog_ledger::devkit::tx(
        &chain,
        faucet,
        0,
        0,
        pyralog_ledger::Payload::Transfer {
            to: FIXTURE.users[0].address(),
            amount: 5,
        },
        crate::fixture::BITS,
    );
    let snap = store.snapshot().expect("snapshot");
    crate::fixture::apply_all(&mut store, vec![t], 1);
    let a = query(
        snap,
        "SELECT height, state_root FROM tip",
        &Limits::default(),
    )
    .expect("query");
    assert_eq!(a.height, 0, "the snapshot was taken at genesis");
    assert_eq!(rows(&a), vec![vec![json!(0), json!(a.state_root.to_hex())]]);
    let now = query(
        store.snapshot().expect("s"),
        "SELECT height FROM tip",
        &Limits::default(),
    )
    .expect("query");
    assert_eq!(now.height, 1);
    assert_eq!(rows(&now), vec![vec![json!(1)]]);
    drop(before);
    assert!(old_tip.height > 1000);
}

#[test]
fn the_answer_as_arrow_ipc_carries_its_snapshot() {
    use pyralog_sql::arrow::ipc::reader::StreamReader;
    let a = run("SELECT height, hash FROM blocks WHERE height <= 3 ORDER BY height");
    let bytes = a.to_arrow_ipc().expect("ipc");
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).expect("reader");
    let meta = reader.schema().metadata().clone();
    assert_eq!(meta[pyralog_sql::META_HEIGHT], a.height.to_string());
    assert_eq!(meta[pyralog_sql::META_STATE_ROOT], a.state_root.to_hex());
    let n: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
    assert_eq!(n, 3);
    let j = a.to_json().expect("json");
    assert_eq!(
        j["columns"],
        json!([{"name": "height", "type": "UInt64"}, {"name": "hash", "type": "Utf8"}])
    );
}

#[test]
fn validators_and_batches_tables() {
    let a = run("SELECT id, stake FROM validators ORDER BY id");
    assert_eq!(
        rows(&a),
        (0..4)
            .map(|i| vec![json!(format!("validator-{i}")), json!(1000)])
            .collect::<Vec<_>>()
    );
    // An ordered chain merges no gossip batches.
    let b = run("SELECT count(*) FROM batches");
    assert_eq!(rows(&b), vec![vec![json!(0)]]);
}

#[test]
fn explain_shows_the_plan_without_reading_the_tables() {
    let a = run("EXPLAIN SELECT balance FROM accounts WHERE address = 'x' ORDER BY balance");
    let text = a.to_json().expect("json").to_string();
    assert!(text.contains("accounts"), "{text}");
    assert_eq!(a.rows_read, 0, "EXPLAIN plans, it does not scan");
}

#[test]
fn show_tables_and_columns_are_read_only_queries() {
    let t = run("SHOW TABLES").to_json().expect("json").to_string();
    for name in pyralog_sql::TABLES {
        assert!(t.contains(&format!("\"{name}\"")), "{name} in {t}");
    }
    let c = run("SHOW COLUMNS FROM blocks")
        .to_json()
        .expect("json")
        .to_string();
    assert!(c.contains("state_root"), "{c}");
}

#[test]
fn explain_analyze_runs_within_the_limits() {
    let a = run("EXPLAIN ANALYZE SELECT count(*) FROM blocks WHERE height < 10");
    assert!(a.num_rows() >= 1);
    assert_eq!(a.rows_read, 9, "ANALYZE runs the query: heights 1 to 9");
}
