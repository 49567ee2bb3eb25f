//! Columnar copies of the state, kept between queries.
//!
//! A whole-state scan from redb costs about as much as the aggregate over it
//! many times over (docs/BENCHMARKS.md). So a node keeps the Arrow columns
//! it built for a stretch of the state and hands them to the next query that
//! reads the same stretch, instead of reading redb again.
//!
//! The stretches are the state tree's segments ([`pyralog_ledger::Segments`]):
//! contiguous runs of buckets, each with the tree's hash over it. That hash
//! commits to every entry in the run, and a table's rows in a run are a
//! function of those entries alone, so a copy made under one hash is exactly
//! the rows of any later snapshot whose segment has the same hash. Nothing is
//! invalidated by hand and no write path is involved: a segment a block
//! touched has a new hash and is read from redb again (and cached anew).
//!
//! The cache is bounded by bytes ([`ScanCache::new`]); past its budget the
//! segments used longest ago are dropped. Columns are cached as queries ask
//! for them: a segment built for `SELECT sum(version)` holds `version` only,
//! and a later query wanting `value` too rebuilds it with both.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::array::{Array, ArrayRef};
use pyralog_ledger::Hash;

/// Which segment of which table, at which segment size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Slot {
    /// The table's state key kind.
    kind: u8,
    /// The segments' level (their size).
    level: u32,
    index: u32,
}

#[derive(Debug)]
struct Cached {
    /// The segment's tree hash when the columns were built.
    hash: Hash,
    rows: usize,
    /// By table column; `None` where no query wanted that column.
    columns: Vec<Option<ArrayRef>>,
    bytes: usize,
    /// When it was last used (the cache's clock).
    used: u64,
}

#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<Slot, Cached>,
    /// `used` → slot, oldest first.
    by_age: BTreeMap<u64, Slot>,
    bytes: usize,
    clock: u64,
}

impl Inner {
    fn remove(&mut self, slot: &Slot) {
        if let Some(old) = self.slots.remove(slot) {
            self.by_age.remove(&old.used);
            self.bytes -= old.bytes;
        }
    }

    fn touch(&mut self, slot: Slot) {
        self.clock += 1;
        let now = self.clock;
        if let Some(c) = self.slots.get_mut(&slot) {
            self.by_age.remove(&c.used);
            c.used = now;
            self.by_age.insert(now, slot);
        }
    }
}

/// A segment's columns as the cache hands them out.
#[derive(Debug)]
pub(crate) struct Hit {
    pub(crate) rows: usize,
    /// By table column, as cached.
    pub(crate) columns: Vec<Option<ArrayRef>>,
}

/// Columnar copies of state segments, shared by every query of a node.
#[derive(Debug)]
pub struct ScanCache {
    budget: usize,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// What a [`ScanCache`] holds and has done, for metrics and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheStats {
    /// Segments held.
    pub segments: usize,
    /// Bytes their columns take.
    pub bytes: usize,
    /// Segment reads answered from the cache.
    pub hits: u64,
    /// Segment reads that went to storage.
    pub misses: u64,
}

impl ScanCache {
    /// A cache holding at most `budget_bytes` of columns (0 holds nothing).
    pub fn new(budget_bytes: usize) -> ScanCache {
        ScanCache {
            budget: budget_bytes,
            inner: Mutex::new(Inner::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Its counters.
    pub fn stats(&self) -> CacheStats {
        let (segments, bytes) = self
            .inner
            .lock()
            .map(|i| (i.slots.len(), i.bytes))
            .unwrap_or((0, 0));
        CacheStats {
            segments,
            bytes,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }

    /// The cached columns of a segment if they were built under `hash` and
    /// include every column of `want`; otherwise the columns that are cached
    /// under `hash` (worth building again beside the wanted ones), as a miss.
    pub(crate) fn get(
        &self,
        kind: u8,
        level: u32,
        index: u32,
        hash: &Hash,
        want: &[usize],
    ) -> Result<Hit, Vec<usize>> {
        let slot = Slot { kind, level, index };
        // A poisoned lock only means another query panicked mid-update of
        // plain counters and maps; reading past it is a miss at worst.
        let Ok(mut inner) = self.inner.lock() else {
            return Err(Vec::new());
        };
        let found = match inner.slots.get(&slot) {
            Some(c) if c.hash == *hash => {
                if want
                    .iter()
                    .all(|&i| c.columns.get(i).is_some_and(Option::is_some))
                {
                    Ok(Hit {
                        rows: c.rows,
                        columns: c.columns.clone(),
                    })
                } else {
                    Err(c
                        .columns
                        .iter()
                        .enumerate()
                        .filter_map(|(i, c)| c.as_ref().map(|_| i))
                        .collect())
                }
            }
            _ => Err(Vec::new()),
        };
        if found.is_ok() {
            inner.touch(slot);
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// Keeps a segment's columns, built under `hash`, dropping the segments
    /// used longest ago to stay within the budget. A segment larger than the
    /// whole budget is not kept.
    pub(crate) fn put(
        &self,
        kind: u8,
        level: u32,
        index: u32,
        hash: Hash,
        rows: usize,
        columns: Vec<Option<ArrayRef>>,
    ) {
        let bytes: usize = columns
            .iter()
            .flatten()
            .map(|a| a.get_array_memory_size())
            .sum();
        let slot = Slot { kind, level, index };
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.remove(&slot);
        if bytes > self.budget {
            return;
        }
        while inner.bytes + bytes > self.budget {
            let Some((_, oldest)) = inner.by_age.pop_first() else {
                break;
            };
            inner.remove(&oldest);
        }
        inner.clock += 1;
        let used = inner.clock;
        inner.by_age.insert(used, slot);
        inner.bytes += bytes;
        inner.slots.insert(
            slot,
            Cached {
                hash,
                rows,
                columns,
                bytes,
                used,
            },
        );
    }
}
