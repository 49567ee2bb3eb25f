//! The machinery every table shares: the per-query context (snapshot,
//! deadline, rows-read counter), column builders that build only the
//! projected columns, and the DataFusion `TableProvider` that streams a
//! table's batches.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, RecordBatch, RecordBatchOptions, StringBuilder,
    UInt32Builder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use pyralog_ledger::Snapshot;

use crate::cache::ScanCache;
use crate::error::ScanError;
use crate::pushdown;

/// What every scan of one query shares.
#[derive(Debug)]
pub(crate) struct Query {
    /// The one read view every table reads.
    pub(crate) snapshot: Snapshot,
    /// Rows read from storage by every scan of the query.
    pub(crate) rows_read: AtomicU64,
    /// When the query's time is up.
    pub(crate) deadline: Instant,
    /// Rows per batch a scan produces.
    pub(crate) batch_rows: usize,
    /// Columnar copies of state segments kept between queries, if any.
    pub(crate) cache: Option<Arc<ScanCache>>,
    /// Rows handed out from `cache` instead of read from storage.
    pub(crate) rows_cached: AtomicU64,
}

impl Query {
    /// A query's context over `snapshot`.
    pub(crate) fn new(
        snapshot: Snapshot,
        deadline: Instant,
        cache: Option<Arc<ScanCache>>,
    ) -> Query {
        Query {
            snapshot,
            rows_read: AtomicU64::new(0),
            deadline,
            batch_rows: crate::engine::BATCH_ROWS,
            cache,
            rows_cached: AtomicU64::new(0),
        }
    }

    pub(crate) fn count(&self, rows: u64) {
        self.rows_read.fetch_add(rows, Ordering::Relaxed);
    }
}

/// One table: its schema, which filters it can use, and how to read it.
pub(crate) trait Table: Debug + Send + Sync + 'static {
    /// Its columns.
    fn schema(&self) -> SchemaRef;
    /// Columns an equality or `IN` filter on narrows the scan.
    fn eq_columns(&self) -> &'static [&'static str] {
        &[]
    }
    /// `u64` columns a range filter on narrows the scan.
    fn range_columns(&self) -> &'static [&'static str] {
        &[]
    }
    /// Starts reading the `projection` columns, narrowed by `filters` where
    /// the layout allows.
    fn open(
        &self,
        q: &Query,
        filters: &[Expr],
        projection: &[usize],
    ) -> Result<Box<dyn Source>, ScanError>;
}

/// A table being read: batches of rows into `cols`.
pub(crate) trait Source: Send {
    /// Appends up to about `q.batch_rows` rows; returns how many, `0` when done.
    fn fill(&mut self, q: &Query, cols: &mut Cols) -> Result<usize, ScanError>;
    /// Whether it hands over whole columns ([`Cols::set_all`]) rather than
    /// appending rows, so the builders it is given need no room.
    fn whole_columns(&self) -> bool {
        false
    }
}

/// Column builders for the projected columns only; writes to the others are
/// dropped, so a table writes every column and pays only for those wanted.
pub(crate) struct Cols {
    cols: Vec<Option<Col>>,
    /// Human forms of addresses seen in this batch (an address's base58 form
    /// costs about a microsecond; a scan of records meets one owner many times).
    names: std::collections::HashMap<[u8; 32], String>,
}

/// The most distinct addresses [`Cols`] remembers per batch.
const ADDRESS_CACHE: usize = 4096;

enum Col {
    Str(StringBuilder),
    U64(UInt64Builder),
    U32(UInt32Builder),
    Bin(BinaryBuilder),
    Bool(BooleanBuilder),
    /// A column handed over whole (from the cache).
    Done(ArrayRef),
}

impl Cols {
    pub(crate) fn new(schema: &SchemaRef, projection: &[usize], cap: usize) -> Cols {
        let mut cols: Vec<Option<Col>> = (0..schema.fields().len()).map(|_| None).collect();
        for &i in projection {
            cols[i] = Some(match schema.field(i).data_type() {
                DataType::UInt64 => Col::U64(UInt64Builder::with_capacity(cap)),
                DataType::UInt32 => Col::U32(UInt32Builder::with_capacity(cap)),
                DataType::Binary => Col::Bin(BinaryBuilder::with_capacity(cap, cap * 16)),
                DataType::Boolean => Col::Bool(BooleanBuilder::with_capacity(cap)),
                _ => Col::Str(StringBuilder::with_capacity(cap, cap * 48)),
            });
        }
        Cols {
            cols,
            names: std::collections::HashMap::new(),
        }
    }

    /// An address column, in its human form (`pyr…`), computed once per
    /// distinct address in a batch and only if the column is wanted.
    pub(crate) fn address(&mut self, i: usize, addr: &[u8; 32]) {
        let Some(Some(Col::Str(b))) = self.cols.get_mut(i) else {
            return;
        };
        match self.names.get(addr) {
            Some(name) => b.append_value(name),
            None => {
                let name = pyralog_ledger::Address(*addr).to_human();
                b.append_value(&name);
                if self.names.len() < ADDRESS_CACHE {
                    self.names.insert(*addr, name);
                }
            }
        }
    }

    pub(crate) fn str(&mut self, i: usize, v: Option<&str>) {
        if let Some(Some(Col::Str(b))) = self.cols.get_mut(i) {
            b.append_option(v);
        }
    }

    /// A string computed only if the column is wanted.
    pub(crate) fn str_with(&mut self, i: usize, v: impl FnOnce() -> Option<String>) {
        if let Some(Some(Col::Str(b))) = self.cols.get_mut(i) {
            b.append_option(v());
        }
    }

    pub(crate) fn u64(&mut self, i: usize, v: Option<u64>) {
        if let Some(Some(Col::U64(b))) = self.cols.get_mut(i) {
            b.append_option(v);
        }
    }

    pub(crate) fn u32(&mut self, i: usize, v: Option<u32>) {
        if let Some(Some(Col::U32(b))) = self.cols.get_mut(i) {
            b.append_option(v);
        }
    }

    pub(crate) fn bin(&mut self, i: usize, v: Option<&[u8]>) {
        if let Some(Some(Col::Bin(b))) = self.cols.get_mut(i) {
            b.append_option(v);
        }
    }

    pub(crate) fn bool(&mut self, i: usize, v: Option<bool>) {
        if let Some(Some(Col::Bool(b))) = self.cols.get_mut(i) {
            b.append_option(v);
        }
    }

    /// Puts whole columns in place of the builders of the wanted ones
    /// (`columns` by table column; a source that does this appends no rows).
    pub(crate) fn set_all(&mut self, columns: &[Option<ArrayRef>]) {
        for (slot, a) in self.cols.iter_mut().zip(columns) {
            if let (Some(col), Some(a)) = (slot.as_mut(), a) {
                *col = Col::Done(a.clone());
            }
        }
    }

    fn array(col: &mut Col) -> ArrayRef {
        match col {
            Col::Str(b) => Arc::new(b.finish()),
            Col::U64(b) => Arc::new(b.finish()),
            Col::U32(b) => Arc::new(b.finish()),
            Col::Bin(b) => Arc::new(b.finish()),
            Col::Bool(b) => Arc::new(b.finish()),
            Col::Done(a) => a.clone(),
        }
    }

    /// Every built column, by table column (`None` for those not built).
    pub(crate) fn finish_all(mut self) -> Vec<Option<ArrayRef>> {
        self.cols
            .iter_mut()
            .map(|c| c.as_mut().map(Cols::array))
            .collect()
    }

    fn finish(
        mut self,
        schema: &SchemaRef,
        projection: &[usize],
        rows: usize,
    ) -> DfResult<RecordBatch> {
        let arrays: Vec<ArrayRef> = projection
            .iter()
            .filter_map(|&i| Some(Cols::array(self.cols.get_mut(i)?.as_mut()?)))
            .collect();
        Ok(RecordBatch::try_new_with_options(
            schema.clone(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}

/// A table as DataFusion sees it, bound to one query.
#[derive(Debug)]
pub(crate) struct Provider {
    pub(crate) table: Arc<dyn Table>,
    pub(crate) query: Arc<Query>,
}

#[async_trait]
impl TableProvider for Provider {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        let (eq, range) = (self.table.eq_columns(), self.table.range_columns());
        Ok(filters
            .iter()
            .map(|f| {
                if pushdown::understood(f, eq, range) {
                    // The scan narrows by it; DataFusion still checks every row.
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let full = self.table.schema();
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..full.fields().len()).collect(),
        };
        let schema = Arc::new(full.project(&projection)?);
        let partition = Partition {
            table: self.table.clone(),
            query: self.query.clone(),
            filters: filters.to_vec(),
            projection,
            schema: schema.clone(),
            limit,
        };
        Ok(Arc::new(StreamingTableExec::try_new(
            schema,
            vec![Arc::new(partition)],
            None,
            [],
            false,
            limit,
        )?))
    }
}

/// One scan of one table.
#[derive(Debug)]
struct Partition {
    table: Arc<dyn Table>,
    query: Arc<Query>,
    filters: Vec<Expr>,
    projection: Vec<usize>,
    schema: SchemaRef,
    limit: Option<usize>,
}

impl PartitionStream for Partition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = Batches {
            source: self
                .table
                .open(&self.query, &self.filters, &self.projection),
            table_schema: self.table.schema(),
            schema: self.schema.clone(),
            projection: self.projection.clone(),
            query: self.query.clone(),
            left: self.limit.unwrap_or(usize::MAX),
            done: false,
        };
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(batches),
        ))
    }
}

/// The batches of one scan, with the deadline checked before each.
struct Batches {
    source: Result<Box<dyn Source>, ScanError>,
    table_schema: SchemaRef,
    schema: SchemaRef,
    projection: Vec<usize>,
    query: Arc<Query>,
    left: usize,
    done: bool,
}

impl Batches {
    fn step(&mut self) -> Result<Option<RecordBatch>, datafusion::error::DataFusionError> {
        if Instant::now() >= self.query.deadline {
            return Err(ScanError::Deadline.into());
        }
        let source = match &mut self.source {
            Ok(s) => s,
            // Opening failed: report it once (the iterator is done after an
            // error, so the placeholder left behind is never seen).
            Err(e) => return Err(std::mem::replace(e, ScanError::Deadline).into()),
        };
        let cap = if source.whole_columns() {
            0
        } else {
            self.query.batch_rows
        };
        let mut cols = Cols::new(&self.table_schema, &self.projection, cap);
        let rows = source.fill(&self.query, &mut cols)?;
        if rows == 0 {
            return Ok(None);
        }
        let batch = cols.finish(&self.schema, &self.projection, rows)?;
        let keep = rows.min(self.left);
        self.left -= keep;
        Ok(Some(if keep < rows {
            batch.slice(0, keep)
        } else {
            batch
        }))
    }
}

impl Iterator for Batches {
    type Item = DfResult<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.left == 0 {
            return None;
        }
        let out = self.step().transpose();
        if !matches!(out, Some(Ok(_))) {
            self.done = true;
        }
        out
    }
}

/// Reads every row of `table` (the `projection` columns) into batches, with
/// no filters; for export and benchmarks.
pub(crate) fn read_all(
    table: Arc<dyn Table>,
    query: Arc<Query>,
    projection: Vec<usize>,
) -> DfResult<Vec<RecordBatch>> {
    let table_schema = table.schema();
    let schema = Arc::new(table_schema.project(&projection)?);
    let batches = Batches {
        source: table.open(&query, &[], &projection),
        table_schema,
        schema,
        projection,
        query,
        left: usize::MAX,
        done: false,
    };
    batches.collect()
}
