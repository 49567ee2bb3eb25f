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
/// (`{height, state_root, columns, rows, rows_read, rows_cached}`), or as an Arrow IPC
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
    let cache = s.sql_cache.clone();
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
        let a = pyralog_sql::query_cached(snapshot, &sql, &limits, cache)?;
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

/// The node's column cache for queries (`sql.cache_bytes`; none at 0).
#[cfg(feature = "sql")]
pub(crate) type SqlCache = Option<std::sync::Arc<pyralog_sql::ScanCache>>;
/// Without SQL there is nothing to cache.
#[cfg(not(feature = "sql"))]
pub(crate) type SqlCache = ();

#[cfg(feature = "sql")]
pub(crate) fn sql_cache(config: &crate::config::SqlConfig) -> SqlCache {
    (config.cache_bytes > 0)
        .then(|| std::sync::Arc::new(pyralog_sql::ScanCache::new(config.cache_bytes)))
}

#[cfg(not(feature = "sql"))]
pub(crate) fn sql_cache(_: &crate::config::SqlConfig) -> SqlCache {}

/// The column cache's figures in the Prometheus text format.
#[cfg(feature = "sql")]
pub(crate) fn cache_metrics(cache: &SqlCache) -> String {
    let Some(cache) = cache else {
        return String::new();
    };
    let s = cache.stats();
    format!(
        "# TYPE pyralog_sql_cache_bytes gauge\npyralog_sql_cache_bytes {}\n\
         # TYPE pyralog_sql_cache_segments gauge\npyralog_sql_cache_segments {}\n\
         # TYPE pyralog_sql_cache_hits_total counter\npyralog_sql_cache_hits_total {}\n\
         # TYPE pyralog_sql_cache_misses_total counter\npyralog_sql_cache_misses_total {}\n",
        s.bytes, s.segments, s.hits, s.misses
    )
}

#[cfg(not(feature = "sql"))]
pub(crate) fn cache_metrics(_: &SqlCache) -> String {
    String::new()
}

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

/// The handler end to end against a real store, with a stand-in for the
/// driver that serves only snapshots.
#[cfg(all(test, feature = "sql"))]
mod handler_tests {
    use std::sync::{Arc, Mutex};

    use axum::http::{HeaderValue, header};
    use pyralog_ledger::keys::KeyCache;
    use pyralog_ledger::{Engine, Store, devkit};
    use tokio::sync::{Semaphore, mpsc};

    use super::*;
    use crate::config::SqlConfig;

    struct Node {
        state: RpcState,
        _dir: tempfile::TempDir,
    }

    async fn node(sql: SqlConfig, slots: usize) -> Node {
        let dir = tempfile::tempdir().expect("dir");
        let faucet = devkit::key(1);
        let validators: Vec<_> = (100..104).map(devkit::key).collect();
        let vals: Vec<_> = validators
            .iter()
            .map(|k| (k, "/ip4/127.0.0.1/tcp/1".to_owned()))
            .collect();
        let file = devkit::genesis_file(
            "query-test",
            Engine::Pbft,
            devkit::devnet_params(0),
            &[(&faucet, 77)],
            &vals,
        );
        // The member the RPC needs (it is not queried here: the driver
        // stand-in below serves snapshots of its own store).
        let member = pyralog_cluster::Member::start(
            pyralog_cluster::MemberConfig::new(1, dir.path().join("member"), file.clone()),
            pyralog_cluster::MemNet::new().transport(1),
        )
        .await
        .expect("member");
        let store = Store::open(&dir.path().join("db"), &file).expect("store");
        let chain = store.genesis().chain_id.clone();
        let (tx, mut rx) = mpsc::channel::<Request>(8);
        tokio::spawn(async move {
            while let Some(req) = rx.recv().await {
                if let Request::Snapshot(reply) = req {
                    let _ =
                        reply.send(store.scan_snapshot().map_err(|e| ApiError::from_ledger(&e)));
                }
            }
        });
        Node {
            state: RpcState {
                driver: tx,
                member,
                validator: validators[0].address(),
                min_difficulty: 0,
                max_difficulty: 0,
                keys: Arc::new(Mutex::new(KeyCache::new(8))),
                pow: pyralog_ledger::PowKey::for_chain(&chain),
                chain,
                sql_cache: super::sql_cache(&sql),
                sql,
                sql_slots: Arc::new(Semaphore::new(slots)),
                client_txs: Arc::new(Mutex::new(crate::limit::PerSecond::new(0))),
            },
            _dir: dir,
        }
    }

    async fn ask(n: &Node, sql: &str, accept: Option<&str>) -> Result<Response, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(a) = accept {
            headers.insert(header::ACCEPT, HeaderValue::from_str(a).expect("header"));
        }
        let body = serde_json::to_vec(&serde_json::json!({ "sql": sql })).expect("json");
        query(State(n.state.clone()), headers, Bytes::from(body)).await
    }

    async fn body(r: Response) -> Vec<u8> {
        axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .expect("body")
            .to_vec()
    }

    #[tokio::test]
    async fn json_and_arrow_answers_name_their_snapshot() {
        let n = node(SqlConfig::default(), 2).await;
        let r = ask(&n, "SELECT sum(balance) FROM accounts", None)
            .await
            .expect("ok");
        assert_eq!(r.headers()["x-pyralog-height"], "0");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let root = r.headers()["x-pyralog-state-root"]
            .to_str()
            .expect("root")
            .to_owned();
        let j: serde_json::Value = serde_json::from_slice(&body(r).await).expect("json");
        assert_eq!(j["rows"], serde_json::json!([[77]]));
        assert_eq!(j["state_root"], root.as_str());
        assert!(j["rows_read"].as_u64() > Some(0));
        // The same scan again comes from the node's column cache.
        let r = ask(&n, "SELECT sum(balance) FROM accounts", None)
            .await
            .expect("ok");
        let j: serde_json::Value = serde_json::from_slice(&body(r).await).expect("json");
        assert_eq!(j["rows"], serde_json::json!([[77]]));
        assert_eq!(j["rows_read"], 0);
        assert!(j["rows_cached"].as_u64() > Some(0), "{j}");
        let m = super::cache_metrics(&n.state.sql_cache);
        assert!(m.contains("pyralog_sql_cache_hits_total 1\n"), "{m}");
        assert!(m.contains("pyralog_sql_cache_misses_total 1\n"), "{m}");

        let r = ask(&n, "SELECT * FROM tip", Some(ARROW_STREAM))
            .await
            .expect("ok");
        assert_eq!(r.headers()[header::CONTENT_TYPE], ARROW_STREAM);
        let bytes = body(r).await;
        assert_eq!(&bytes[..4], &[0xFF; 4]);
    }

    #[tokio::test]
    async fn each_refusal_has_its_status_and_code() {
        let n = node(
            SqlConfig {
                timeout_ms: 100,
                max_rows: 5,
                max_memory_bytes: 64 * 1024,
                max_concurrent: 1,
                ..SqlConfig::default()
            },
            1,
        )
        .await;
        let cases = [
            ("DROP TABLE accounts", "read_only"),
            ("SELEC 1", "sql_parse"),
            ("SELECT nope FROM accounts", "sql_plan"),
            ("SELECT * FROM range(10)", "row_limit"),
            ("SELECT count(*) FROM range(1000000000000)", "time_limit"),
            (
                "SELECT value % 100000, count(*) FROM range(1000000) GROUP BY 1 ORDER BY 1 LIMIT 1",
                "memory_limit",
            ),
        ];
        for (sql, code) in cases {
            let e = ask(&n, sql, None).await.expect_err(sql);
            assert_eq!((e.status, e.code), (400, code), "{sql}: {}", e.message);
        }
        let e = query(
            State(n.state.clone()),
            HeaderMap::new(),
            Bytes::from_static(b"{}"),
        )
        .await
        .expect_err("no sql");
        assert_eq!((e.status, e.code), (400, "bad_request"));
        // The node still answers after all of that.
        assert!(ask(&n, "SELECT 1", None).await.is_ok());
    }

    #[tokio::test]
    async fn one_query_too_many_is_busy() {
        let n = node(SqlConfig::default(), 0).await;
        let e = ask(&n, "SELECT 1", None).await.expect_err("busy");
        assert_eq!((e.status, e.code), (503, "busy"));
    }
}
