//! The tables over the chain's history: `blocks`, `transactions`, `batches`,
//! and the one-row `tip`.
//!
//! Blocks are stored by height, so a height range (`=`, `<`, `BETWEEN`, `IN`,
//! ...) reads only those blocks, for `blocks` and for `transactions`; a
//! transaction's `hash` finds it through the transaction index. Batches are
//! stored by (origin, seq), so `origin = ...` reads only that origin's.

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::Expr;
use pyralog_ledger::store::{BatchScan, BlockScan, TxLocation};
use pyralog_ledger::{Address, Batch, Block, Hash, Payload, Transaction};

use crate::error::ScanError;
use crate::pushdown;
use crate::scan::{Cols, Query, Source, Table};

/// `blocks`: one row per stored block.
#[derive(Debug)]
pub(crate) struct Blocks;

static BLOCKS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("height", DataType::UInt64, false),
        Field::new("hash", DataType::Utf8, false),
        Field::new("parent", DataType::Utf8, false),
        Field::new("state_root", DataType::Utf8, false),
        Field::new("tx_root", DataType::Utf8, false),
        Field::new("proposer", DataType::Utf8, false),
        Field::new("timestamp_ms", DataType::UInt64, false),
        Field::new("tx_count", DataType::UInt64, false),
        Field::new("round", DataType::UInt64, false),
        Field::new("votes", DataType::UInt64, false),
    ]))
});

struct BlockSource {
    scan: BlockScan,
}

impl Source for BlockSource {
    fn fill(&mut self, q: &Query, cols: &mut Cols) -> Result<usize, ScanError> {
        let mut rows = 0;
        while rows < q.batch_rows {
            let Some(block) = self.scan.next() else { break };
            let b = block?;
            q.count(1);
            let h = &b.header;
            cols.u64(0, Some(h.height));
            cols.str_with(1, || Some(h.hash().to_hex()));
            cols.str_with(2, || Some(h.parent.to_hex()));
            cols.str_with(3, || Some(h.state_root.to_hex()));
            cols.str_with(4, || Some(h.tx_root.to_hex()));
            cols.str_with(5, || Some(h.proposer.to_human()));
            cols.u64(6, Some(h.timestamp_ms));
            cols.u64(7, Some(b.txs.len() as u64));
            cols.u64(8, Some(b.certificate.round));
            cols.u64(9, Some(b.certificate.votes.len() as u64));
            rows += 1;
        }
        Ok(rows)
    }
}

impl Table for Blocks {
    fn schema(&self) -> SchemaRef {
        BLOCKS.clone()
    }
    fn range_columns(&self) -> &'static [&'static str] {
        &["height"]
    }
    fn open(&self, q: &Query, filters: &[Expr], _: &[usize]) -> Result<Box<dyn Source>, ScanError> {
        let (lo, hi) = pushdown::range(filters, "height");
        Ok(Box::new(BlockSource {
            scan: q.snapshot.blocks(lo, hi)?,
        }))
    }
}

/// `transactions`: every transaction in a stored block or merged batch, with
/// where it is. A transaction merged in batches of two origins is two rows.
/// Under an ordering engine a block keeps transactions that failed their
/// rules (they had no effect); they are rows too.
#[derive(Debug)]
pub(crate) struct Transactions;

static TRANSACTIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("hash", DataType::Utf8, false),
        Field::new("height", DataType::UInt64, true),
        Field::new("position", DataType::UInt32, false),
        Field::new("origin", DataType::Utf8, true),
        Field::new("seq", DataType::UInt64, true),
        Field::new("sender", DataType::Utf8, false),
        Field::new("nonce", DataType::UInt64, false),
        Field::new("epoch", DataType::UInt64, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("recipient", DataType::Utf8, true),
        Field::new("amount", DataType::UInt64, true),
        Field::new("namespace", DataType::Utf8, true),
        Field::new("ops", DataType::UInt32, false),
    ]))
});

/// Where a run of transactions came from.
#[derive(Clone, Copy)]
enum From {
    Block(u64),
    Batch(Address, u64),
}

enum TxPlan {
    /// Blocks in a height range, then (with no height bound) every batch.
    Scan {
        blocks: Box<BlockScan>,
        batches: Option<Box<BatchScan>>,
    },
    /// Transactions found through the index.
    Points(VecDeque<Hash>),
}

struct TxSource {
    plan: TxPlan,
    /// Transactions of the block or batch being emitted, with where from;
    /// with `only`, just the one at that position.
    pending: VecDeque<(From, u32, Transaction)>,
}

fn push_tx(cols: &mut Cols, from: From, position: u32, tx: &Transaction) {
    cols.str_with(0, || Some(tx.id().to_hex()));
    match from {
        From::Block(h) => {
            cols.u64(1, Some(h));
            cols.str(3, None);
            cols.u64(4, None);
        }
        From::Batch(origin, seq) => {
            cols.u64(1, None);
            cols.str_with(3, || Some(origin.to_human()));
            cols.u64(4, Some(seq));
        }
    }
    cols.u32(2, Some(position));
    let b = &tx.body;
    cols.str_with(5, || Some(b.sender.to_human()));
    cols.u64(6, Some(b.nonce));
    cols.u64(7, Some(b.epoch));
    cols.str(8, Some(b.payload.name()));
    let (recipient, amount, namespace, ops) = match &b.payload {
        Payload::Transfer { to, amount } => (Some(*to), Some(*amount), None, 0),
        Payload::Stake { validator, amount } | Payload::Unstake { validator, amount } => {
            (Some(*validator), Some(*amount), None, 0)
        }
        Payload::Put { namespace, ops } => (None, None, Some(*namespace), ops.len()),
        Payload::Delete { namespace, keys } => (None, None, Some(*namespace), keys.len()),
        Payload::TimelockReveal { namespace, .. } => (None, None, Some(*namespace), 1),
        Payload::RegisterValidator { validator_key, .. } => (Some(*validator_key), None, None, 0),
        Payload::Unjail | Payload::Evidence { .. } => (None, None, None, 0),
    };
    cols.str_with(9, || recipient.map(|a| a.to_human()));
    cols.u64(10, amount);
    cols.str_with(11, || namespace.map(|a| a.to_human()));
    cols.u32(12, Some(u32::try_from(ops).unwrap_or(u32::MAX)));
}

fn queue_block(pending: &mut VecDeque<(From, u32, Transaction)>, b: Block) {
    let h = b.header.height;
    pending.extend((0u32..).zip(b.txs).map(|(i, t)| (From::Block(h), i, t)));
}

fn queue_batch(pending: &mut VecDeque<(From, u32, Transaction)>, b: Batch) {
    let from = From::Batch(b.origin, b.seq);
    pending.extend((0u32..).zip(b.txs).map(|(i, t)| (from, i, t)));
}

impl TxSource {
    /// Refills `pending` from the plan; `false` when nothing is left.
    fn refill(&mut self, q: &Query) -> Result<bool, ScanError> {
        match &mut self.plan {
            TxPlan::Scan { blocks, batches } => {
                if let Some(b) = blocks.next() {
                    q.count(1);
                    queue_block(&mut self.pending, b?);
                    return Ok(true);
                }
                if let Some(scan) = batches
                    && let Some(b) = scan.next()
                {
                    q.count(1);
                    queue_batch(&mut self.pending, b?);
                    return Ok(true);
                }
                Ok(false)
            }
            TxPlan::Points(ids) => {
                let Some(id) = ids.pop_front() else {
                    return Ok(false);
                };
                q.count(1);
                let found = match q.snapshot.tx_location(&id)? {
                    Some(TxLocation::Block { height, index }) => {
                        q.count(1);
                        q.snapshot.block(height)?.and_then(|b| {
                            let tx = b.txs.into_iter().nth(index as usize)?;
                            Some((From::Block(height), index, tx))
                        })
                    }
                    Some(TxLocation::Batch { origin, seq, index }) => {
                        q.count(1);
                        q.snapshot.batch(&origin, seq)?.and_then(|b| {
                            let tx = b.txs.into_iter().nth(index as usize)?;
                            Some((From::Batch(origin, seq), index, tx))
                        })
                    }
                    None => None,
                };
                self.pending.extend(found.filter(|(_, _, t)| t.id() == id));
                Ok(true)
            }
        }
    }
}

impl Source for TxSource {
    fn fill(&mut self, q: &Query, cols: &mut Cols) -> Result<usize, ScanError> {
        let mut rows = 0;
        while rows < q.batch_rows {
            match self.pending.pop_front() {
                Some((from, i, tx)) => {
                    push_tx(cols, from, i, &tx);
                    rows += 1;
                }
                None => {
                    if !self.refill(q)? {
                        break;
                    }
                }
            }
        }
        Ok(rows)
    }
}

impl Table for Transactions {
    fn schema(&self) -> SchemaRef {
        TRANSACTIONS.clone()
    }
    fn eq_columns(&self) -> &'static [&'static str] {
        &["hash"]
    }
    fn range_columns(&self) -> &'static [&'static str] {
        &["height"]
    }
    fn open(&self, q: &Query, filters: &[Expr], _: &[usize]) -> Result<Box<dyn Source>, ScanError> {
        let plan = match pushdown::equal_to(filters, "hash") {
            Some(set) => TxPlan::Points(
                set.iter()
                    .filter_map(|l| Hash::from_hex(l.text()?.trim()).ok())
                    .collect(),
            ),
            None => {
                let (lo, hi) = pushdown::range(filters, "height");
                // A bound on height is false for NULL heights, so batches
                // (which have none) can only match when height is unbounded.
                let bounded = (lo, hi) != (0, u64::MAX);
                TxPlan::Scan {
                    blocks: Box::new(q.snapshot.blocks(lo, hi)?),
                    batches: if bounded {
                        None
                    } else {
                        Some(Box::new(q.snapshot.batches(None)?))
                    },
                }
            }
        };
        Ok(Box::new(TxSource {
            plan,
            pending: VecDeque::new(),
        }))
    }
}

/// `batches`: gossip batches merged into this store.
#[derive(Debug)]
pub(crate) struct Batches;

static BATCHES: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("origin", DataType::Utf8, false),
        Field::new("seq", DataType::UInt64, false),
        Field::new("hash", DataType::Utf8, false),
        Field::new("hlc", DataType::UInt64, false),
        Field::new("hlc_logical", DataType::UInt32, false),
        Field::new("tx_count", DataType::UInt64, false),
    ]))
});

struct BatchSource {
    scan: BatchScan,
}

impl Source for BatchSource {
    fn fill(&mut self, q: &Query, cols: &mut Cols) -> Result<usize, ScanError> {
        let mut rows = 0;
        while rows < q.batch_rows {
            let Some(b) = self.scan.next() else { break };
            let b = b?;
            q.count(1);
            cols.str_with(0, || Some(b.origin.to_human()));
            cols.u64(1, Some(b.seq));
            cols.str_with(2, || Some(b.header_hash().to_hex()));
            cols.u64(3, Some(b.hlc.wall_ms));
            cols.u32(4, Some(b.hlc.logical));
            cols.u64(5, Some(b.txs.len() as u64));
            rows += 1;
        }
        Ok(rows)
    }
}

impl Table for Batches {
    fn schema(&self) -> SchemaRef {
        BATCHES.clone()
    }
    fn eq_columns(&self) -> &'static [&'static str] {
        &["origin"]
    }
    fn open(&self, q: &Query, filters: &[Expr], _: &[usize]) -> Result<Box<dyn Source>, ScanError> {
        let origins = pushdown::equal_to(filters, "origin").map(|set| {
            set.iter()
                .filter_map(|l| l.text()?.parse::<Address>().ok())
                .collect::<Vec<_>>()
        });
        // One origin is a key-prefix range; several, or none, a full scan
        // (DataFusion keeps only the rows asked for).
        let scan = match origins.as_deref() {
            Some([one]) => q.snapshot.batches(Some(one))?,
            _ => q.snapshot.batches(None)?,
        };
        Ok(Box::new(BatchSource { scan }))
    }
}

/// `tip`: one row, the snapshot every table of the query reads.
#[derive(Debug)]
pub(crate) struct TipTable;

static TIP: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("chain_id", DataType::Utf8, false),
        Field::new("engine", DataType::Utf8, false),
        Field::new("height", DataType::UInt64, false),
        Field::new("hash", DataType::Utf8, false),
        Field::new("state_root", DataType::Utf8, false),
        Field::new("timestamp_ms", DataType::UInt64, false),
    ]))
});

struct TipSource {
    done: bool,
}

impl Source for TipSource {
    fn fill(&mut self, q: &Query, cols: &mut Cols) -> Result<usize, ScanError> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(0);
        }
        let tip = q.snapshot.tip();
        cols.str(0, Some(q.snapshot.chain_id().as_str()));
        cols.str(1, Some(q.snapshot.engine().name()));
        cols.u64(2, Some(tip.height));
        cols.str_with(3, || Some(tip.hash.to_hex()));
        cols.str_with(4, || Some(tip.state_root.to_hex()));
        cols.u64(5, Some(tip.timestamp_ms));
        Ok(1)
    }
}

impl Table for TipTable {
    fn schema(&self) -> SchemaRef {
        TIP.clone()
    }
    fn open(&self, _: &Query, _: &[Expr], _: &[usize]) -> Result<Box<dyn Source>, ScanError> {
        Ok(Box::new(TipSource { done: false }))
    }
}
