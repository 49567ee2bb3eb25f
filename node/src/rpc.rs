//! The HTTP RPC (JSON). Every handler checks its input, then asks the driver
//! over a bounded channel; a full channel is a 503, never a stuck node.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use pyralog_ledger::block::verify_txs_memo;
use pyralog_ledger::codec::Decode;
use pyralog_ledger::{Address, Hash, Transaction};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::driver::{ApiError, Request};
use crate::limit::PerSecond;

/// The most bytes a request body may have.
pub const MAX_BODY: usize = 256 * 1024;
/// How long `?wait=commit` waits.
pub const WAIT: Duration = Duration::from_secs(30);

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct RpcState {
    /// The driver's request queue.
    pub driver: mpsc::Sender<Request>,
    /// This node's cluster member (reads at a consistency level, membership).
    pub member: std::sync::Arc<pyralog_cluster::Member>,
    /// The cluster's validator key's address (its signing history).
    pub validator: pyralog_ledger::Address,
    /// The chain's stamp difficulty bounds.
    pub min_difficulty: u32,
    /// The most a node may require.
    pub max_difficulty: u32,
    /// Decompressed keys of recent senders, shared by the handlers.
    pub keys: std::sync::Arc<std::sync::Mutex<pyralog_ledger::keys::KeyCache>>,
    /// The chain's stamp key: a stamp below the floor is refused here, before
    /// its signature costs anything.
    pub pow: pyralog_ledger::PowKey,
    /// The chain, whose transactions the stamp key can judge.
    pub chain: pyralog_ledger::ChainId,
    /// Limits on SQL queries.
    pub sql: crate::config::SqlConfig,
    /// One permit per query allowed to run at once (`sql.max_concurrent`).
    pub sql_slots: std::sync::Arc<tokio::sync::Semaphore>,
    /// Columns of state segments kept between queries.
    pub sql_cache: crate::query::SqlCache,
    /// Transactions each client address has posted this second.
    pub client_txs: std::sync::Arc<std::sync::Mutex<PerSecond<Option<IpAddr>>>>,
}

impl RpcState {
    /// Counts `n` transactions against the budget of the client at `from`
    /// (`None`: a caller without a socket address, such as an in-process
    /// test, shares one budget); refuses them past it.
    fn charge(&self, from: Option<IpAddr>, n: usize) -> Result<(), ApiError> {
        let mut budget = self.client_txs.lock().unwrap_or_else(|p| p.into_inner());
        if budget.allow(from, n, crate::driver::now_ms()) {
            return Ok(());
        }
        Err(ApiError {
            status: 429,
            code: "rate_limited",
            message: format!(
                "this client posted more than {} transactions this second; retry in a second",
                budget.per_sec()
            ),
        })
    }
}

/// The address of the client a request came from, when the server knows it.
type ClientAddr = Option<Extension<ConnectInfo<SocketAddr>>>;

fn client_ip(addr: ClientAddr) -> Option<IpAddr> {
    addr.map(|Extension(ConnectInfo(a))| a.ip())
}

/// The RPC's routes.
pub fn router(state: RpcState) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/tx", post(submit))
        .route("/tx/{hash}", get(tx))
        .route("/account/{address}", get(account))
        .route("/block/{height}", get(block))
        .route("/validators", get(validators))
        .route("/kv/{address}/{key}", get(kv))
        .route("/pow/difficulty", get(difficulty))
        .route("/metrics", get(metrics))
        .route("/cluster", get(crate::membership::status))
        .route("/cluster/learners", post(crate::membership::add_learner))
        .route("/cluster/voters", post(crate::membership::promote))
        .route("/cluster/remove", post(crate::membership::remove))
        .route("/cluster/history", get(crate::membership::export_history))
        .route("/cluster/history", post(crate::membership::import_history))
        .route("/query", post(crate::query::query))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(serde_json::json!({"error": self.message, "code": self.code})),
        )
            .into_response()
    }
}

pub(crate) async fn ask<T>(
    s: &RpcState,
    make: impl FnOnce(oneshot::Sender<T>) -> Request,
) -> Result<T, ApiError> {
    let (tx, rx) = oneshot::channel();
    s.driver.try_send(make(tx)).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => ApiError {
            status: 503,
            code: "busy",
            message: "the node is busy; retry".into(),
        },
        mpsc::error::TrySendError::Closed(_) => ApiError {
            status: 503,
            code: "stopping",
            message: "the node is shutting down".into(),
        },
    })?;
    rx.await.map_err(|_| ApiError {
        status: 503,
        code: "stopping",
        message: "the node is shutting down".into(),
    })
}

async fn status(State(s): State<RpcState>) -> Result<Json<serde_json::Value>, ApiError> {
    ask(&s, Request::Status).await.map(Json)
}

#[derive(Deserialize)]
struct SubmitQuery {
    wait: Option<String>,
}

/// Whether `?wait=` asks to wait for the commit (`commit` and `final` are
/// the same here; `none` or no `wait` does not).
fn waits(q: &SubmitQuery) -> Result<bool, ApiError> {
    match q.wait.as_deref() {
        None | Some("none") => Ok(false),
        Some("commit") | Some("final") => Ok(true),
        Some(other) => Err(ApiError::bad(
            "bad_request",
            format!("wait={other:?}: use commit or final"),
        )),
    }
}

#[derive(Deserialize)]
struct SubmitBody {
    tx: Option<String>,
    txs: Option<Vec<String>>,
}

/// The most transactions one bulk `POST /tx` may carry.
pub const MAX_BULK: usize = 1000;

/// Decodes a posted transaction and checks its stamp against the chain's
/// floor: the cheap checks before the signature (the driver then checks the
/// difficulty it asks for now, and the rest).
fn decode_tx(s: &RpcState, hex_tx: &str) -> Result<Transaction, ApiError> {
    let bytes = hex::decode(hex_tx.trim()).map_err(|_| {
        ApiError::bad(
            "decode",
            "tx is not hex: send the canonical bytes of a signed, stamped transaction as hex",
        )
    })?;
    let tx = Transaction::from_bytes(&bytes)
        .map_err(|e| ApiError::bad("decode", format!("the bytes are not a transaction: {e}")))?;
    // Another chain's transaction is the driver's to name as such.
    if tx.body.chain_id == s.chain {
        s.pow
            .check(&tx.id(), tx.stamp, s.min_difficulty)
            .map_err(|e| ApiError::from_ledger(&e))?;
    }
    Ok(tx)
}

/// `{"txs": [...]}`: many transactions in one request, each checked and
/// answered on its own; signatures are checked in one batch.
async fn submit_many(
    s: &RpcState,
    hexes: Vec<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if hexes.len() > MAX_BULK {
        return Err(ApiError::bad(
            "too_large",
            format!(
                "{} transactions in one request; at most {MAX_BULK}",
                hexes.len()
            ),
        ));
    }
    let mut results: Vec<serde_json::Value> = vec![serde_json::Value::Null; hexes.len()];
    let mut decoded = Vec::with_capacity(hexes.len());
    for (i, h) in hexes.iter().enumerate() {
        match decode_tx(s, h) {
            Ok(tx) => decoded.push((i, tx)),
            Err(e) => results[i] = serde_json::json!({"error": e.message, "code": e.code}),
        }
    }
    let mut verified = Vec::with_capacity(decoded.len());
    {
        let mut cache = s.keys.lock().unwrap_or_else(|p| p.into_inner());
        let txs: Vec<Transaction> = decoded.iter().map(|(_, t)| t.clone()).collect();
        match verify_txs_memo(txs, Some(&mut cache)) {
            Ok(v) => verified.extend(decoded.iter().map(|(i, _)| *i).zip(v)),
            // Someone's signature is bad: find out whose, one at a time.
            Err(_) => {
                for (i, tx) in decoded {
                    match verify_txs_memo(vec![tx], Some(&mut cache)) {
                        Ok(mut v) => verified.extend(v.pop().map(|t| (i, t))),
                        Err(e) => {
                            let e = ApiError::from_ledger(&e);
                            results[i] = serde_json::json!({"error": e.message, "code": e.code});
                        }
                    }
                }
            }
        }
    }
    let (slots, txs): (Vec<usize>, Vec<_>) = verified.into_iter().unzip();
    let ids: Vec<String> = txs
        .iter()
        .map(|t: &pyralog_ledger::VerifiedTx| t.id().to_hex())
        .collect();
    let answers = ask(s, |reply| Request::SubmitMany { txs, reply }).await?;
    for ((slot, id), answer) in slots.into_iter().zip(ids).zip(answers) {
        results[slot] = match answer {
            Ok(status) => serde_json::json!({"hash": id, "status": status}),
            Err(e) => serde_json::json!({"hash": id, "error": e.message, "code": e.code}),
        };
    }
    Ok(Json(serde_json::json!({ "results": results })))
}

async fn submit(
    State(s): State<RpcState>,
    from: ClientAddr,
    Query(q): Query<SubmitQuery>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let from = client_ip(from);
    let wait = waits(&q)?;
    let body: SubmitBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(
            "bad_request",
            format!("the body must be JSON {{\"tx\": \"<hex>\"}} or {{\"txs\": [...]}}: {e}"),
        )
    })?;
    let tx = match (body.tx, body.txs) {
        (Some(tx), None) => {
            s.charge(from, 1)?;
            decode_tx(&s, &tx)?
        }
        (None, Some(txs)) if !wait => {
            s.charge(from, txs.len())?;
            return submit_many(&s, txs).await;
        }
        (None, Some(_)) => {
            return Err(ApiError::bad(
                "bad_request",
                "wait is for one transaction at a time; post {\"tx\": ...}",
            ));
        }
        _ => {
            return Err(ApiError::bad(
                "bad_request",
                "give either \"tx\" or \"txs\"",
            ));
        }
    };
    let id = tx.id();
    let tx = {
        let mut cache = s.keys.lock().unwrap_or_else(|p| p.into_inner());
        verify_txs_memo(vec![tx], Some(&mut cache))
            .map_err(|e| ApiError::from_ledger(&e))?
            .pop()
            .ok_or_else(|| ApiError::internal("verification returned nothing"))?
    };
    let answer = ask(&s, |reply| Request::Submit {
        tx: Box::new(tx),
        wait,
        reply,
    });
    let status = tokio::time::timeout(WAIT, answer)
        .await
        .map_err(|_| ApiError {
            status: 504,
            code: "timeout",
            message: format!(
                "not committed within {}s; check GET /tx/{id}",
                WAIT.as_secs()
            ),
        })???;
    Ok(Json(
        serde_json::json!({"hash": id.to_hex(), "status": status}),
    ))
}

async fn block(
    State(s): State<RpcState>,
    Path(height): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let height = match height.as_str() {
        "latest" => None,
        h => Some(h.parse::<u64>().map_err(|_| {
            ApiError::bad(
                "bad_request",
                format!("{h:?} is neither a height nor \"latest\""),
            )
        })?),
    };
    match ask(&s, |r| Request::Block(height, r)).await?? {
        Some(v) => Ok(Json(v)),
        None => Err(ApiError {
            status: 404,
            code: "not_found",
            message: match height {
                Some(h) => format!("no block at height {h}"),
                None => "no block yet".into(),
            },
        }),
    }
}

async fn validators(State(s): State<RpcState>) -> Result<Json<serde_json::Value>, ApiError> {
    ask(&s, Request::Validators).await?.map(Json)
}

fn parse_address(s: &str) -> Result<Address, ApiError> {
    s.parse()
        .map_err(|e: pyralog_ledger::Error| ApiError::bad("bad_address", e.to_string()))
}

/// `GET /tx/{hash}`, with `?wait=commit` (or `final`, the same) to answer
/// only once the transaction is in a committed batch or block on this node
/// (at most [`WAIT`]): how a client learns a write posted in bulk, or by
/// someone else, is final.
async fn tx(
    State(s): State<RpcState>,
    Path(hash): Path<String>,
    Query(q): Query<SubmitQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = Hash::from_hex(&hash).map_err(|e| ApiError::bad("bad_hash", e.to_string()))?;
    if waits(&q)? {
        let watched = ask(&s, |r| Request::TxWatch(id, r));
        tokio::time::timeout(WAIT, watched)
            .await
            .map_err(|_| ApiError {
                status: 504,
                code: "timeout",
                message: format!("{id} was not committed within {}s", WAIT.as_secs()),
            })???;
    }
    match ask(&s, |r| Request::Tx(id, r)).await?? {
        Some(v) => Ok(Json(v)),
        None => Err(ApiError {
            status: 404,
            code: "not_found",
            message: format!("no transaction {id}"),
        }),
    }
}

async fn account(
    State(s): State<RpcState>,
    Path(address): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let a = parse_address(&address)?;
    consistent(&s, q.consistency.as_deref()).await?;
    ask(&s, |r| Request::Account(a, r)).await?.map(Json)
}

#[derive(Deserialize)]
struct KvQuery {
    proof: Option<bool>,
    consistency: Option<String>,
}

#[derive(Deserialize)]
struct ReadQuery {
    consistency: Option<String>,
}

/// Makes a read wait as its `?consistency=` level asks (as rqlite does):
/// `none` (the default) reads this member's state as it is; `leader` only
/// on the member that believes it leads; `linearizable` after this member
/// has applied everything the cluster committed before the call (Raft's
/// read index, never a lease or a clock).
async fn consistent(s: &RpcState, level: Option<&str>) -> Result<(), ApiError> {
    use pyralog_cluster::Error as E;
    let level = match level {
        None | Some("none") => return Ok(()),
        Some("leader") => pyralog_cluster::Consistency::Leader,
        Some("linearizable") => pyralog_cluster::Consistency::Linearizable,
        Some(other) => {
            return Err(ApiError::bad(
                "bad_request",
                format!("consistency={other:?}: use none, leader or linearizable"),
            ));
        }
    };
    match s.member.read(level, |_| ()).await {
        Ok(()) => Ok(()),
        Err(E::NotLeader { leader, .. }) => Err(ApiError {
            status: 409,
            code: "not_leader",
            message: match leader {
                Some(l) => format!("this member does not lead its cluster; member {l} does"),
                None => "this member does not lead its cluster, and no leader is known".into(),
            },
        }),
        Err(e) => Err(ApiError {
            status: 503,
            code: "no_leader",
            message: format!("cannot read at that level now: {e}"),
        }),
    }
}

async fn kv(
    State(s): State<RpcState>,
    Path((address, key)): Path<(String, String)>,
    Query(q): Query<KvQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let a = parse_address(&address)?;
    let key = key.into_bytes();
    let proof = q.proof.unwrap_or(false);
    consistent(&s, q.consistency.as_deref()).await?;
    match ask(&s, |reply| Request::Record {
        address: a,
        key,
        proof,
        reply,
    })
    .await??
    {
        Some(v) => Ok(Json(v)),
        None => Err(ApiError {
            status: 404,
            code: "not_found",
            message: "no such record".into(),
        }),
    }
}

/// The difficulty this node requires now (it rises with the load of its pool,
/// and with what loaded validators announce), its own level, and the chain's
/// bounds on it.
async fn difficulty(State(s): State<RpcState>) -> Result<Json<serde_json::Value>, ApiError> {
    let now = ask(&s, Request::Difficulty).await?;
    Ok(Json(serde_json::json!({
        "difficulty": now.required,
        "local": now.local,
        "min": s.min_difficulty,
        "max": s.max_difficulty,
    })))
}

async fn metrics(State(s): State<RpcState>) -> Result<Response, ApiError> {
    let mut text = ask(&s, Request::Metrics).await?;
    text.push_str(&crate::query::cache_metrics(&s.sql_cache));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
