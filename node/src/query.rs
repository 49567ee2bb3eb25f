//! `POST /query`: SQL over the node's state (ADR 0008).
//!
//! The driver hands out a read snapshot (cheap: a redb read transaction),
//! and the query runs on a blocking thread of its own with its own small
//! runtime, so a heavy query never stalls the driver or the other handlers.
//! At most `sql.max_concurrent` run at once; one more is a 503.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
#[cfg(feature = "sql")]
use axum::response::IntoResponse;
use axum::response::Response;
use serde::Deserialize;

use crate::driver::ApiError;
use crate::rpc::RpcState;

/// The media type of an Arrow IPC stream.
#[cfg(feature = "sql")]
const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    sql: String,
}

fn parse(body: &Bytes) -> Result<String, ApiError> {
    let b: QueryBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad(
            "bad_request",
            format!("the body must be {{\"sql\": \"SELECT ...\"}}: {e}"),
        )
    })?;
    Ok(b.sql)
}

/// `POST /query` with `{"sql": "..."}`: the rows as JSON
/// (`{height, state_root, columns, rows, rows_read}`), or as an Arrow IPC
/// stream when `Accept` asks for it (height and state root in the schema's
/// metadata and in `x-pyralog-height` / `x-pyralog-state-root`).
#[cfg(feature = "sql")]
pub(crate) async fn query(
    State(s): State<RpcState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    use axum::http::header;
    let sql = parse(&body)?;
    pyralog_sql::check_read_only(&sql).map_err(sql_error)?;
    let permit = s
        .sql_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError {
            status: 503,
            code: "busy",
            message: format!(
                "{} queries are running, the most this node allows at once; retry",
                s.sql.max_concurrent
            ),
        })?;
    let snapshot = crate::rpc::ask(&s, Request::Snapshot).await??;
    let limits = pyralog_sql::Limits {
        timeout: std::time::Duration::from_millis(s.sql.timeout_ms),
        max_rows: s.sql.max_rows,
        max_memory_bytes: s.sql.max_memory_bytes,
    };
    let arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(ARROW_STREAM));
    let answer = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let a = pyralog_sql::query(snapshot, &sql, &limits)?;
        let body = if arrow {
            a.to_arrow_ipc()?
        } else {
            serde_json::to_vec(&a.to_json()?)
                .map_err(|e| pyralog_sql::SqlError::Encode(e.to_string()))?
        };
        Ok::<_, pyralog_sql::SqlError>((a.height, a.state_root, body))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(sql_error)?;
    let (height, root, body) = answer;
    let kind = if arrow {
        ARROW_STREAM
    } else {
        "application/json"
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind.to_owned()),
            (
                header::HeaderName::from_static("x-pyralog-height"),
                height.to_string(),
            ),
            (
                header::HeaderName::from_static("x-pyralog-state-root"),
                root.to_hex(),
            ),
        ],
        body,
    )
        .into_response())
}

#[cfg(feature = "sql")]
use crate::driver::Request;

#[cfg(feature = "sql")]
fn sql_error(e: pyralog_sql::SqlError) -> ApiError {
    ApiError {
        status: if e.is_user_fault() { 400 } else { 500 },
        code: e.code(),
        message: e.to_string(),
    }
}

/// `POST /query` on a node built without the `sql` feature: 501.
#[cfg(not(feature = "sql"))]
pub(crate) async fn query(
    State(_): State<RpcState>,
    _headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    parse(&body)?;
    Err(ApiError {
        status: 501,
        code: "unsupported",
        message: "this node was built without SQL (feature `sql`)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_must_name_the_sql() {
        assert_eq!(
            parse(&Bytes::from_static(br#"{"sql":"SELECT 1"}"#)).ok(),
            Some("SELECT 1".into())
        );
        for bad in [
            &b"SELECT 1"[..],
            br#"{"query":"SELECT 1"}"#,
            br#"{"sql":1}"#,
            b"",
        ] {
            let e = parse(&Bytes::copy_from_slice(bad)).expect_err("refused");
            assert_eq!((e.status, e.code), (400, "bad_request"));
        }
    }
}
