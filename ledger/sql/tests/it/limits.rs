//! Every refusal and every limit, with its error.

use std::time::Duration;

use pyralog_sql::{Limits, SqlError, check_read_only, query};

use crate::fixture::FIXTURE;

fn refuse(sql: &str) -> SqlError {
    query(FIXTURE.snapshot(), sql, &Limits::default()).expect_err(sql)
}

#[test]
fn writes_and_other_statements_are_refused() {
    for sql in [
        "INSERT INTO accounts VALUES ('x', 1, 2, 3)",
        "DELETE FROM records",
        "UPDATE accounts SET balance = 0",
        "CREATE TABLE t (a INT)",
        "CREATE VIEW v AS SELECT 1",
        "DROP TABLE accounts",
        "SET datafusion.execution.batch_size = 1",
        "COPY accounts TO '/tmp/x.csv'",
        "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
        "EXPLAIN INSERT INTO accounts VALUES ('x', 1, 2, 3)",
    ] {
        let e = refuse(sql);
        assert!(matches!(e, SqlError::NotAQuery(_)), "{sql}: {e}");
        assert_eq!(e.code(), "read_only");
        assert!(e.is_user_fault());
    }
}

#[test]
fn malformed_text_is_a_parse_error() {
    assert!(matches!(refuse("SELEC 1"), SqlError::Parse(_)));
    assert!(matches!(
        refuse("SELECT 1; SELECT 2"),
        SqlError::StatementCount(2)
    ));
    assert!(matches!(refuse(""), SqlError::StatementCount(0)));
    let long = format!("SELECT {}1", "1 + ".repeat(pyralog_sql::MAX_SQL_BYTES));
    assert!(matches!(
        check_read_only(&long),
        Err(SqlError::TooLong { .. })
    ));
}

#[test]
fn unknown_tables_and_columns_are_plan_errors() {
    let e = refuse("SELECT * FROM nowhere");
    assert!(matches!(e, SqlError::Plan(_)), "{e}");
    let e = refuse("SELECT colour FROM accounts");
    assert!(matches!(e, SqlError::Plan(_)), "{e}");
}

#[test]
fn too_many_rows_is_an_error() {
    let limits = Limits {
        max_rows: 100,
        ..Limits::default()
    };
    let e = query(FIXTURE.snapshot(), "SELECT address FROM accounts", &limits).expect_err("rows");
    assert!(matches!(e, SqlError::TooManyRows { limit: 100 }), "{e}");
    assert_eq!(e.code(), "row_limit");
    // Exactly at the limit is fine.
    let ok = query(
        FIXTURE.snapshot(),
        "SELECT address FROM accounts LIMIT 100",
        &limits,
    )
    .expect("at the limit");
    assert_eq!(ok.num_rows(), 100);
}

#[test]
fn running_past_the_deadline_is_an_error() {
    let limits = Limits {
        timeout: Duration::from_millis(50),
        ..Limits::default()
    };
    // A cross join of 2,000 x 3,000 rows into an aggregate: seconds of work.
    let e = query(
        FIXTURE.snapshot(),
        "SELECT count(*), sum(a.balance + r.version) FROM accounts a CROSS JOIN records r CROSS JOIN blocks b",
        &limits,
    )
    .expect_err("time");
    assert!(matches!(e, SqlError::Timeout { .. }), "{e}");
    assert_eq!(e.code(), "time_limit");
}

#[test]
fn a_generated_table_cannot_run_past_the_deadline_either() {
    let limits = Limits {
        timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let started = std::time::Instant::now();
    let e = query(
        FIXTURE.snapshot(),
        "SELECT count(*), sum(value) FROM range(1000000000000)",
        &limits,
    )
    .expect_err("time");
    assert!(matches!(e, SqlError::Timeout { .. }), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "ended by the limit"
    );
}

#[test]
fn needing_more_memory_than_the_limit_is_an_error() {
    let limits = Limits {
        max_memory_bytes: 64 * 1024,
        ..Limits::default()
    };
    let e = query(
        FIXTURE.snapshot(),
        "SELECT address, key, count(*) FROM records GROUP BY address, key ORDER BY address",
        &limits,
    )
    .expect_err("memory");
    assert!(matches!(e, SqlError::Memory { .. }), "{e}");
    assert_eq!(e.code(), "memory_limit");
    // An answer that alone exceeds the limit is refused too.
    let e = query(FIXTURE.snapshot(), "SELECT * FROM records", &limits).expect_err("answer");
    assert!(matches!(e, SqlError::Memory { .. }), "{e}");
}

#[test]
fn a_runtime_failure_is_an_execution_error() {
    let e = refuse("SELECT CAST('x' AS INT)");
    assert!(
        matches!(e, SqlError::Execution(_) | SqlError::Plan(_)),
        "{e}"
    );
}
