//! # pyralog-sql
//!
//! SQL over a node's verified state: DataFusion table providers that read one
//! consistent redb snapshot of the ledger into Arrow record batches.
//!
//! This is the only crate in the workspace that depends on DataFusion, and it
//! depends on `pyralog-ledger` alone, so a change to consensus, p2p or the
//! node never rebuilds DataFusion (ADR 0008).
//!
//! # Tables
//!
//! `accounts`, `records` (live records; tombstones are not rows),
//! `validators`, `blocks`, `transactions`, `batches` and `tip` (one row: the
//! snapshot every table of the query reads). Each scan narrows itself where
//! the storage layout allows: point lookups by `address` (and `key` for
//! records), block and transaction `height` ranges, a transaction's `hash`, a
//! batch `origin`.
//!
//! # Contract
//!
//! - Read-only: anything but one query is refused before planning
//!   ([`SqlError::NotAQuery`]).
//! - Bounded: [`Limits`] on time, answer rows and memory; exceeding one is
//!   its own error ([`SqlError::Timeout`], [`SqlError::TooManyRows`],
//!   [`SqlError::Memory`]), never a spill to disk or an unbounded answer.
//! - One snapshot: every table reads the same [`pyralog_ledger::Snapshot`],
//!   and the [`Answer`] names its height and state root.
//!
//! # Layout
//!
//! - `cache`: columnar copies of state segments kept between queries.
//! - `engine`: the read-only check, the session, the limits, [`query`].
//! - `scan`: the per-query context, column builders, the `TableProvider`.
//! - `pushdown`: scan bounds from filters.
//! - `state`, `chain`: the tables.
//! - `output`: JSON and Arrow IPC.

mod cache;
mod chain;
mod engine;
mod error;
mod output;
mod pushdown;
mod scan;
mod state;

pub use cache::{CacheStats, ScanCache};
pub use datafusion::arrow;
pub use engine::{
    Answer, BATCH_ROWS, Limits, MAX_SQL_BYTES, TABLES, check_read_only, query, query_async,
    query_cached, query_memory, read_table,
};
pub use error::SqlError;
pub use output::{META_HEIGHT, META_STATE_ROOT};
