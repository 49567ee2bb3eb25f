//! The crate's one error type.

use std::time::Duration;

use datafusion::error::DataFusionError;

/// Why a query was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The text is not SQL DataFusion can parse.
    #[error("cannot parse the SQL: {0}")]
    Parse(String),
    /// Not exactly one statement.
    #[error("send exactly one SQL statement (got {0})")]
    StatementCount(usize),
    /// A statement other than a query (`SELECT`, `WITH`, `VALUES`, `EXPLAIN`,
    /// `SHOW TABLES`, `SHOW COLUMNS`).
    #[error(
        "only read-only queries are allowed (SELECT, WITH, VALUES, EXPLAIN, SHOW TABLES, SHOW COLUMNS); refused: {0}"
    )]
    NotAQuery(String),
    /// The SQL text is longer than [`crate::MAX_SQL_BYTES`].
    #[error("the SQL text is {len} bytes; at most {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The query refers to something that does not exist, or mixes types.
    #[error("cannot plan the query: {0}")]
    Plan(String),
    /// The answer has more rows than the limit.
    #[error("the answer has more than {limit} rows (the per-query limit); add a LIMIT or a filter")]
    TooManyRows {
        /// The limit.
        limit: usize,
    },
    /// The query ran longer than the limit.
    #[error("the query ran longer than {} ms (the per-query limit)", .limit.as_millis())]
    Timeout {
        /// The limit.
        limit: Duration,
    },
    /// The query needed more memory than the limit.
    #[error("the query needs more than {limit} bytes of memory (the per-query limit): {detail}")]
    Memory {
        /// The limit in bytes.
        limit: usize,
        /// What DataFusion or the result collector reported.
        detail: String,
    },
    /// Reading the ledger failed.
    #[error("reading the ledger: {0}")]
    Ledger(#[from] pyralog_ledger::Error),
    /// Execution failed for another reason (a division by zero, a bad cast, ...).
    #[error("the query failed: {0}")]
    Execution(String),
    /// Encoding the answer failed.
    #[error("cannot encode the answer: {0}")]
    Encode(String),
}

impl SqlError {
    /// Whether the query (not the node) is at fault: a client error (HTTP 4xx)
    /// rather than a server error.
    pub fn is_user_fault(&self) -> bool {
        !matches!(self, SqlError::Ledger(_) | SqlError::Encode(_))
    }

    /// A short stable code for the error, for the RPC's `{error, code}`.
    pub fn code(&self) -> &'static str {
        match self {
            SqlError::Parse(_) | SqlError::StatementCount(_) | SqlError::TooLong { .. } => {
                "sql_parse"
            }
            SqlError::NotAQuery(_) => "read_only",
            SqlError::Plan(_) => "sql_plan",
            SqlError::TooManyRows { .. } => "row_limit",
            SqlError::Timeout { .. } => "time_limit",
            SqlError::Memory { .. } => "memory_limit",
            SqlError::Ledger(_) => "storage",
            SqlError::Execution(_) => "sql_execution",
            SqlError::Encode(_) => "encode",
        }
    }

    /// Maps a DataFusion error, finding ours inside it when a scan raised it.
    pub(crate) fn from_datafusion(e: DataFusionError, limits: &crate::Limits) -> SqlError {
        let root = e.find_root();
        if let DataFusionError::External(inner) = root
            && let Some(ours) = inner.downcast_ref::<ScanError>()
        {
            return ours.to_sql_error(limits);
        }
        match root {
            DataFusionError::ResourcesExhausted(detail) => SqlError::Memory {
                limit: limits.max_memory_bytes,
                detail: detail.clone(),
            },
            DataFusionError::SQL(..) => SqlError::Parse(root.to_string()),
            DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
                SqlError::Plan(root.to_string())
            }
            _ => SqlError::Execution(root.to_string()),
        }
    }
}

/// What a scan reports through DataFusion (which carries it as an external
/// error); turned back into a [`SqlError`] at the top.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ScanError {
    #[error("the query ran past its deadline")]
    Deadline,
    #[error("reading the ledger: {0}")]
    Ledger(#[from] pyralog_ledger::Error),
}

impl ScanError {
    fn to_sql_error(&self, limits: &crate::Limits) -> SqlError {
        match self {
            ScanError::Deadline => SqlError::Timeout {
                limit: limits.timeout,
            },
            ScanError::Ledger(e) => SqlError::Ledger(e.clone()),
        }
    }
}

impl From<ScanError> for DataFusionError {
    fn from(e: ScanError) -> Self {
        DataFusionError::External(Box::new(e))
    }
}
