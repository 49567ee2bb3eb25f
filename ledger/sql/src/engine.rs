//! Running one query: read-only check, a session bound to one snapshot, the
//! limits, and the answer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::Statement as Ast;
use futures::StreamExt;
use pyralog_ledger::{Hash, Snapshot};

use crate::cache::ScanCache;
use crate::error::SqlError;
use crate::scan::{Provider, Query, Table};
use crate::{chain, state};

/// The longest SQL text accepted.
pub const MAX_SQL_BYTES: usize = 64 * 1024;

/// Rows per batch a table scan produces.
pub const BATCH_ROWS: usize = 8192;

/// Per-query limits. Exceeding one ends the query with its error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock time from start to the last row.
    pub timeout: Duration,
    /// Rows in the answer.
    pub max_rows: usize,
    /// Memory for DataFusion's operators (sorts, joins, aggregates), and
    /// separately for the collected answer.
    pub max_memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            max_rows: 100_000,
            max_memory_bytes: 256 * 1024 * 1024,
        }
    }
}

/// A query's answer: its rows and the snapshot they were read from.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The height of the snapshot read.
    pub height: u64,
    /// Its state root: the rows are a function of the state under this root
    /// (and the blocks and batches up to `height`).
    pub state_root: Hash,
    /// The columns.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// Rows read from storage by every scan of the query (for tests and
    /// `EXPLAIN`-style diagnostics: pushdown makes it smaller).
    pub rows_read: u64,
    /// Rows scans took from the node's column cache instead of storage.
    pub rows_cached: u64,
}

impl Answer {
    /// How many rows the answer has.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// The tables every query sees, by name.
pub const TABLES: [&str; 7] = [
    "accounts",
    "records",
    "validators",
    "blocks",
    "transactions",
    "batches",
    "tip",
];

fn tables() -> [(&'static str, Arc<dyn Table>); 7] {
    [
        ("accounts", Arc::new(state::Accounts)),
        ("records", Arc::new(state::Records)),
        ("validators", Arc::new(state::Validators)),
        ("blocks", Arc::new(chain::Blocks)),
        ("transactions", Arc::new(chain::Transactions)),
        ("batches", Arc::new(chain::Batches)),
        ("tip", Arc::new(chain::TipTable)),
    ]
}

/// Refuses anything but one read-only query, before planning.
pub fn check_read_only(sql: &str) -> Result<(), SqlError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(SqlError::TooLong {
            len: sql.len(),
            max: MAX_SQL_BYTES,
        });
    }
    let statements = DFParser::parse_sql(sql).map_err(|e| SqlError::Parse(e.to_string()))?;
    if statements.len() != 1 {
        return Err(SqlError::StatementCount(statements.len()));
    }
    fn query_only(s: &Statement) -> Result<(), SqlError> {
        match s {
            // `SHOW TABLES` and `SHOW COLUMNS` are queries of information_schema.
            Statement::Statement(ast)
                if matches!(
                    **ast,
                    Ast::Query(_) | Ast::ShowTables { .. } | Ast::ShowColumns { .. }
                ) =>
            {
                Ok(())
            }
            Statement::Explain(e) => query_only(&e.statement),
            other => {
                let text = other.to_string();
                let head: String = text.chars().take(60).collect();
                Err(SqlError::NotAQuery(head))
            }
        }
    }
    statements.iter().try_for_each(query_only)
}

/// Runs one read-only query over `snapshot`, within `limits`, on the calling
/// thread (it builds a small single-threaded runtime for DataFusion). Call it
/// off any async executor, e.g. from `spawn_blocking`.
pub fn query(snapshot: Snapshot, sql: &str, limits: &Limits) -> Result<Answer, SqlError> {
    query_cached(snapshot, sql, limits, None)
}

/// [`query`], reading state segments through `cache` where it holds them.
/// The cache is used only with a snapshot from `Store::scan_snapshot` (one
/// that carries segment hashes); with a plain snapshot it is left alone.
pub fn query_cached(
    snapshot: Snapshot,
    sql: &str,
    limits: &Limits,
    cache: Option<Arc<ScanCache>>,
) -> Result<Answer, SqlError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| SqlError::Execution(format!("cannot start the query runtime: {e}")))?;
    rt.block_on(query_async(snapshot, sql, limits, cache))
}

/// [`query`] as a future, for a caller that already runs a Tokio runtime set
/// aside for queries.
pub async fn query_async(
    snapshot: Snapshot,
    sql: &str,
    limits: &Limits,
    cache: Option<Arc<ScanCache>>,
) -> Result<Answer, SqlError> {
    check_read_only(sql)?;
    let start = Instant::now();
    let tip = snapshot.tip();
    let q = Arc::new(Query::new(snapshot, start + limits.timeout, cache));
    let run = run(q.clone(), sql, limits);
    let batches = match tokio::time::timeout(limits.timeout, run).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(SqlError::Timeout {
                limit: limits.timeout,
            });
        }
    };
    Ok(Answer {
        height: tip.height,
        state_root: tip.state_root,
        schema: batches.0,
        batches: batches.1,
        rows_read: q.rows_read.load(Ordering::Relaxed),
        rows_cached: q.rows_cached.load(Ordering::Relaxed),
    })
}

/// Reads a whole table's `columns` (all of them if empty) from `snapshot`
/// into Arrow, without DataFusion's planner: the raw cost of storage to
/// Arrow. Returns the batches and the rows read from storage.
pub fn read_table(
    snapshot: Snapshot,
    table: &str,
    columns: &[&str],
) -> Result<(Vec<RecordBatch>, u64), SqlError> {
    let limits = Limits::default();
    let (_, t) = tables()
        .into_iter()
        .find(|(n, _)| *n == table)
        .ok_or_else(|| {
            SqlError::Plan(format!("no table {table}; tables: {}", TABLES.join(", ")))
        })?;
    let schema = t.schema();
    let projection = if columns.is_empty() {
        (0..schema.fields().len()).collect()
    } else {
        columns
            .iter()
            .map(|c| {
                schema
                    .index_of(c)
                    .map_err(|_| SqlError::Plan(format!("no column {c} in {table}")))
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let q = Arc::new(Query::new(
        snapshot,
        Instant::now() + Duration::from_secs(365 * 24 * 3600),
        None,
    ));
    let batches = crate::scan::read_all(t, q.clone(), projection)
        .map_err(|e| SqlError::from_datafusion(e, &limits))?;
    Ok((batches, q.rows_read.load(Ordering::Relaxed)))
}

/// Runs `sql` over in-memory tables (`MemTable`s of `tables`' batches) with
/// the same session settings as [`query`]: the baseline that benchmarks
/// compare the ledger tables against.
pub async fn query_memory(
    tables: Vec<(&str, SchemaRef, Vec<RecordBatch>)>,
    sql: &str,
) -> Result<Vec<RecordBatch>, SqlError> {
    let limits = Limits::default();
    let df_err = |e| SqlError::from_datafusion(e, &limits);
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(BATCH_ROWS);
    let ctx = SessionContext::new_with_config(config);
    for (name, schema, batches) in tables {
        let t = datafusion::datasource::MemTable::try_new(schema, vec![batches]).map_err(df_err)?;
        ctx.register_table(name, Arc::new(t)).map_err(df_err)?;
    }
    ctx.sql(sql)
        .await
        .map_err(df_err)?
        .collect()
        .await
        .map_err(df_err)
}

fn session(q: &Arc<Query>, limits: &Limits) -> Result<SessionContext, SqlError> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(GreedyMemoryPool::new(limits.max_memory_bytes)))
        // Over the memory limit is an error, never a spill to disk.
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()
        .map_err(|e| SqlError::Execution(e.to_string()))?;
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(BATCH_ROWS)
        .with_information_schema(true);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    for (name, table) in tables() {
        let provider = Provider {
            table,
            query: q.clone(),
        };
        ctx.register_table(name, Arc::new(provider))
            .map_err(|e| SqlError::Execution(e.to_string()))?;
    }
    Ok(ctx)
}

async fn run(
    q: Arc<Query>,
    sql: &str,
    limits: &Limits,
) -> Result<(SchemaRef, Vec<RecordBatch>), SqlError> {
    let df_err = |e| SqlError::from_datafusion(e, limits);
    let ctx = session(&q, limits)?;
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let df = ctx.sql_with_options(sql, options).await.map_err(df_err)?;
    // One row past the limit is enough to know it is exceeded; a sort under
    // it becomes a top-k.
    // (EXPLAIN must stay the root of its plan; its answer is a few rows.)
    let explain = matches!(
        df.logical_plan(),
        datafusion::logical_expr::LogicalPlan::Explain(_)
            | datafusion::logical_expr::LogicalPlan::Analyze(_)
    );
    let df = if explain {
        df
    } else {
        df.limit(0, Some(limits.max_rows.saturating_add(1)))
            .map_err(df_err)?
    };
    let mut stream = df.execute_stream().await.map_err(df_err)?;
    let schema = stream.schema();
    let mut out = Vec::new();
    let (mut rows, mut bytes) = (0usize, 0usize);
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(df_err)?;
        rows += batch.num_rows();
        bytes += batch.get_array_memory_size();
        if rows > limits.max_rows {
            return Err(SqlError::TooManyRows {
                limit: limits.max_rows,
            });
        }
        if bytes > limits.max_memory_bytes {
            return Err(SqlError::Memory {
                limit: limits.max_memory_bytes,
                detail: format!("the answer alone holds {bytes} bytes"),
            });
        }
        if Instant::now() >= q.deadline {
            return Err(SqlError::Timeout {
                limit: limits.timeout,
            });
        }
        out.push(batch);
    }
    Ok((schema, out))
}
