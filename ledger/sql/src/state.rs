//! The tables over the state: `accounts`, `records`, `validators`.
//!
//! State entries are stored under their Merkle bucket (a hash of the key), so
//! the only narrowing the layout allows is a point lookup: `address = ...`
//! (and, for records, `address = ... AND key = ...`), `IN` lists included.
//! Anything else is a scan of the whole state table; a records scan with an
//! address filter still reads every row, but decodes only that address's.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::Expr;
use pyralog_ledger::state::ValidatorInfo;
use pyralog_ledger::store::StateScan;
use pyralog_ledger::{Account, Address, Decode, Error, RecordEntryRef, StateKey};

use crate::cache::ScanCache;
use crate::error::ScanError;
use crate::pushdown::{self, Literal};
use crate::scan::{Cols, Query, Source, Table};

const ACCOUNT: u8 = 0;
const RECORD: u8 = 1;
const VALIDATOR: u8 = 2;

/// How a state table is read.
enum Plan {
    /// Every state row (of every kind), optionally keeping only some addresses.
    Scan {
        scan: Box<StateScan>,
        addresses: Option<BTreeSet<[u8; 32]>>,
    },
    /// Point lookups.
    Points(VecDeque<StateKey>),
    /// Every row, one segment of the state tree at a time, through the
    /// node's column cache.
    Segments {
        cache: Arc<ScanCache>,
        next: u32,
        schema: SchemaRef,
        want: Vec<usize>,
    },
}

/// How a state table turns its entries into rows.
trait Rows: Send + Sync + 'static {
    /// The key kind byte it reads.
    const KIND: u8;
    /// Appends the row of one entry; `false` if the entry gives no row.
    fn push(cols: &mut Cols, addr: &[u8; 32], rest: &[u8], value: &[u8]) -> Result<bool, Error>;
}

struct StateSource<R> {
    plan: Plan,
    _rows: std::marker::PhantomData<fn() -> R>,
}

fn address_of(key: &[u8]) -> Result<([u8; 32], &[u8]), Error> {
    let addr: [u8; 32] = key
        .get(1..33)
        .and_then(|a| a.try_into().ok())
        .ok_or_else(|| Error::Corrupt("a state key shorter than its address".into()))?;
    Ok((addr, &key[33..]))
}

/// Appends the rows of `scan` (to its end) to `cols`; returns how many rows
/// it gave and how many entries it read.
fn scan_rows<R: Rows>(
    scan: &mut StateScan,
    addresses: Option<&BTreeSet<[u8; 32]>>,
    max: usize,
    cols: &mut Cols,
) -> Result<(usize, usize), ScanError> {
    let mut rows = 0;
    let read = scan.visit(max, &mut |k, v| {
        if k.first() != Some(&R::KIND) {
            return Ok(());
        }
        let (addr, rest) = address_of(k)?;
        if let Some(keep) = addresses
            && !keep.contains(&addr)
        {
            return Ok(());
        }
        if R::push(cols, &addr, rest, v)? {
            rows += 1;
        }
        Ok(())
    })?;
    Ok((rows, read))
}

/// The next segment with rows of `R`, from the cache or built from storage
/// (and then cached), handed to `cols` whole; 0 past the last segment.
fn fill_segment<R: Rows>(
    q: &Query,
    cache: &ScanCache,
    next: &mut u32,
    schema: &SchemaRef,
    want: &[usize],
    cols: &mut Cols,
) -> Result<usize, ScanError> {
    let Some(segments) = q.snapshot.segments() else {
        return Ok(0);
    };
    while let Some(hash) = segments.hashes.get(*next as usize) {
        let index = *next;
        *next += 1;
        let also = match cache.get(R::KIND, segments.level, index, hash, want) {
            Ok(hit) => {
                q.rows_cached
                    .fetch_add(hit.rows as u64, std::sync::atomic::Ordering::Relaxed);
                if hit.rows > 0 {
                    cols.set_all(&hit.columns);
                    return Ok(hit.rows);
                }
                continue;
            }
            Err(also) => also,
        };
        // Build the wanted columns and those already cached for this
        // segment, so the copy grows instead of flipping between queries.
        let mut build: Vec<usize> = want.iter().chain(&also).copied().collect();
        build.sort_unstable();
        build.dedup();
        let mut scan = q.snapshot.scan_segment(index)?;
        let mut built = Cols::new(schema, &build, q.batch_rows);
        let mut rows = 0;
        loop {
            let (got, read) = scan_rows::<R>(&mut scan, None, q.batch_rows, &mut built)?;
            rows += got;
            q.count(read as u64);
            if read < q.batch_rows {
                break;
            }
        }
        let mut columns = built.finish_all();
        // The builders had room for a batch; a segment is often half that.
        for a in columns.iter_mut().flatten() {
            a.shrink_to_fit();
        }
        cols.set_all(&columns);
        cache.put(R::KIND, segments.level, index, *hash, rows, columns);
        if rows > 0 {
            return Ok(rows);
        }
    }
    Ok(0)
}

impl<R: Rows> Source for StateSource<R> {
    fn whole_columns(&self) -> bool {
        matches!(self.plan, Plan::Segments { .. })
    }

    fn fill(&mut self, q: &Query, cols: &mut Cols) -> Result<usize, ScanError> {
        let mut rows = 0;
        match &mut self.plan {
            Plan::Segments {
                cache,
                next,
                schema,
                want,
            } => {
                rows = fill_segment::<R>(q, cache, next, schema, want, cols)?;
            }
            Plan::Scan { scan, addresses } => loop {
                let (got, read) = scan_rows::<R>(scan, addresses.as_ref(), q.batch_rows, cols)?;
                rows += got;
                q.count(read as u64);
                if read < q.batch_rows || rows > 0 {
                    break;
                }
            },
            Plan::Points(keys) => {
                while rows < q.batch_rows {
                    let Some(key) = keys.pop_front() else { break };
                    q.count(1);
                    if let Some(v) = q.snapshot.get(&key)? {
                        let kb = key.to_bytes();
                        let (addr, rest) = address_of(&kb)?;
                        if R::push(cols, &addr, rest, &v)? {
                            rows += 1;
                        }
                    }
                }
            }
        }
        Ok(rows)
    }
}

/// The addresses an `address = ...` / `IN` filter names; unparsable ones can
/// match nothing and are dropped.
fn addresses(filters: &[Expr]) -> Option<Vec<Address>> {
    pushdown::equal_to(filters, "address").map(|set| {
        set.iter()
            .filter_map(|l| l.text()?.parse::<Address>().ok())
            .collect()
    })
}

/// A scan of the whole state for a table with `schema`: through the cache,
/// segment by segment, when the query has one and its snapshot has segments;
/// else straight from storage, keeping only `addresses` if given.
fn whole_state(
    q: &Query,
    schema: SchemaRef,
    projection: &[usize],
    addresses: Option<BTreeSet<[u8; 32]>>,
) -> Result<Plan, ScanError> {
    if let (Some(cache), Some(_), None) = (&q.cache, q.snapshot.segments(), &addresses) {
        return Ok(Plan::Segments {
            cache: cache.clone(),
            next: 0,
            schema,
            want: projection.to_vec(),
        });
    }
    Ok(Plan::Scan {
        scan: Box::new(q.snapshot.scan_state()?),
        addresses,
    })
}

/// `accounts`: one row per account the state holds.
#[derive(Debug)]
pub(crate) struct Accounts;

static ACCOUNTS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("address", DataType::Utf8, false),
        Field::new("balance", DataType::UInt64, false),
        Field::new("nonce", DataType::UInt64, false),
        Field::new("stake", DataType::UInt64, false),
    ]))
});

impl Rows for Accounts {
    const KIND: u8 = ACCOUNT;
    fn push(cols: &mut Cols, addr: &[u8; 32], _: &[u8], value: &[u8]) -> Result<bool, Error> {
        let a = Account::from_bytes(value).map_err(|e| Error::Corrupt(format!("account: {e}")))?;
        // Every account is a distinct address: no use remembering its name.
        cols.str_with(0, || Some(Address(*addr).to_human()));
        cols.u64(1, Some(a.balance));
        cols.u64(2, Some(a.nonce));
        cols.u64(3, Some(a.stake));
        Ok(true)
    }
}

/// A state table whose rows are one per address: narrowed only by `address`.
trait ByAddress: Rows + std::fmt::Debug {
    fn columns() -> SchemaRef;
    fn key(a: Address) -> StateKey;
}

impl<R: ByAddress> Table for R {
    fn schema(&self) -> SchemaRef {
        R::columns()
    }
    fn eq_columns(&self) -> &'static [&'static str] {
        &["address"]
    }
    fn open(
        &self,
        q: &Query,
        filters: &[Expr],
        projection: &[usize],
    ) -> Result<Box<dyn Source>, ScanError> {
        let plan = match addresses(filters) {
            Some(addrs) => Plan::Points(addrs.into_iter().map(R::key).collect()),
            None => whole_state(q, R::columns(), projection, None)?,
        };
        Ok(Box::new(StateSource::<R> {
            plan,
            _rows: std::marker::PhantomData,
        }))
    }
}

impl ByAddress for Accounts {
    fn columns() -> SchemaRef {
        ACCOUNTS.clone()
    }
    fn key(a: Address) -> StateKey {
        StateKey::Account(a)
    }
}

/// `validators`: registered validators.
#[derive(Debug)]
pub(crate) struct Validators;

static VALIDATORS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("address", DataType::Utf8, false),
        Field::new("stake", DataType::UInt64, false),
        Field::new("p2p", DataType::Utf8, false),
    ]))
});

impl Rows for Validators {
    const KIND: u8 = VALIDATOR;
    fn push(cols: &mut Cols, addr: &[u8; 32], _: &[u8], value: &[u8]) -> Result<bool, Error> {
        let v = ValidatorInfo::from_bytes(value)
            .map_err(|e| Error::Corrupt(format!("validator: {e}")))?;
        cols.str(0, Some(&v.id));
        cols.address(1, addr);
        cols.u64(2, Some(v.stake));
        cols.str(3, Some(&v.p2p));
        Ok(true)
    }
}

impl ByAddress for Validators {
    fn columns() -> SchemaRef {
        VALIDATORS.clone()
    }
    fn key(a: Address) -> StateKey {
        StateKey::Validator(a)
    }
}

/// `records`: live records (tombstones left by deletes are not rows).
#[derive(Debug)]
pub(crate) struct Records;

static RECORDS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("address", DataType::Utf8, false),
        Field::new("key", DataType::Binary, false),
        Field::new("value", DataType::Binary, false),
        Field::new("version", DataType::UInt64, false),
        Field::new("hlc", DataType::UInt64, false),
        Field::new("hlc_logical", DataType::UInt32, false),
        Field::new("origin", DataType::Utf8, false),
        Field::new("sealed", DataType::Boolean, false),
        Field::new("tx", DataType::Utf8, false),
    ]))
});

impl Rows for Records {
    const KIND: u8 = RECORD;
    fn push(cols: &mut Cols, addr: &[u8; 32], key: &[u8], value: &[u8]) -> Result<bool, Error> {
        let r = RecordEntryRef::from_bytes(value)
            .map_err(|e| Error::Corrupt(format!("record: {e}")))?;
        let Some(v) = r.value else {
            return Ok(false);
        };
        cols.address(0, addr);
        cols.bin(1, Some(key));
        cols.bin(2, Some(v));
        cols.u64(3, Some(r.version));
        cols.u64(4, Some(r.order.hlc.wall_ms));
        cols.u32(5, Some(r.order.hlc.logical));
        cols.address(6, &r.order.origin.0);
        cols.bool(7, Some(r.sealed));
        cols.str_with(8, || Some(r.order.tx.to_hex()));
        Ok(true)
    }
}

impl Table for Records {
    fn schema(&self) -> SchemaRef {
        RECORDS.clone()
    }
    fn eq_columns(&self) -> &'static [&'static str] {
        &["address", "key"]
    }
    fn open(
        &self,
        q: &Query,
        filters: &[Expr],
        projection: &[usize],
    ) -> Result<Box<dyn Source>, ScanError> {
        let addrs = addresses(filters);
        let keys: Option<Vec<Vec<u8>>> = pushdown::equal_to(filters, "key").map(|set| {
            set.iter()
                .filter_map(Literal::bytes)
                .map(<[u8]>::to_vec)
                .collect()
        });
        let plan = match (addrs, keys) {
            (Some(a), Some(k)) if a.len().saturating_mul(k.len()) <= pushdown::MAX_POINTS => {
                Plan::Points(
                    a.iter()
                        .flat_map(|a| k.iter().map(|k| StateKey::Record(*a, k.clone())))
                        .collect(),
                )
            }
            (a, _) => whole_state(
                q,
                self.schema(),
                projection,
                a.map(|a| a.into_iter().map(|a| a.0).collect()),
            )?,
        };
        Ok(Box::new(StateSource::<Records> {
            plan,
            _rows: std::marker::PhantomData,
        }))
    }
}
