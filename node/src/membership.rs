//! The cluster's membership and signing history over the RPC, and the
//! `pyralog-node cluster ...` commands that call it.
//!
//! - `GET /cluster`: this member's view (role, term, leader, voters,
//!   learners, applied, committed).
//! - `POST /cluster/learners` `{"id": N, "addr": "MULTIADDR"}`: adds a member
//!   as a learner and waits until it has caught up with the log.
//! - `POST /cluster/voters` `{"ids": [N, ...]}`: makes learners voters.
//! - `POST /cluster/remove` `{"ids": [N, ...]}`: removes members.
//! - `GET /cluster/history`: the signing history as an interchange file
//!   (EIP-3076 in spirit).
//! - `POST /cluster/history`: imports one; refused whole if it is for another
//!   chain or key, or contradicts the cluster's own history.
//!
//! Any member answers; a change goes to the leader.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use crate::driver::ApiError;
use crate::rpc::RpcState;

/// A failure of the cluster, as the RPC answers it.
fn cluster_error(e: pyralog_cluster::Error) -> ApiError {
    use pyralog_cluster::Error as E;
    match e {
        E::NotLeader { leader, .. } => ApiError {
            status: 409,
            code: "not_leader",
            message: format!("this member does not lead its cluster (leader: {leader:?})"),
        },
        E::NoLeader => ApiError {
            status: 503,
            code: "no_leader",
            message: "the cluster has no leader now; retry".into(),
        },
        e if e.is_fatal() => ApiError::internal(e),
        e => ApiError::bad("refused", e.to_string()),
    }
}

pub(crate) async fn status(State(s): State<RpcState>) -> Json<pyralog_cluster::Status> {
    Json(s.member.status())
}

/// This member's view once it has applied what the cluster committed (a
/// change made through the leader shows here too).
async fn settled(s: &RpcState) -> Result<Json<pyralog_cluster::Status>, ApiError> {
    s.member.linearize().await.map_err(cluster_error)?;
    Ok(Json(s.member.status()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Learner {
    id: u64,
    addr: String,
}

pub(crate) async fn add_learner(
    State(s): State<RpcState>,
    Json(l): Json<Learner>,
) -> Result<Json<pyralog_cluster::Status>, ApiError> {
    if l.id == 0 {
        return Err(ApiError::bad("bad_request", "member ids start at 1"));
    }
    let addr: pyralog_p2p::Multiaddr = l
        .addr
        .parse()
        .map_err(|e| ApiError::bad("bad_request", format!("bad multiaddress {:?}: {e}", l.addr)))?;
    if pyralog_p2p::peer_of(&addr).is_none() {
        return Err(ApiError::bad(
            "bad_request",
            "the member's address must end in /p2p/PEER_ID",
        ));
    }
    s.member
        .add_learner(l.id, pyralog_cluster::MemberAddr { addr: l.addr })
        .await
        .map_err(cluster_error)?;
    settled(&s).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Ids {
    ids: Vec<u64>,
}

fn check_ids(ids: &Ids) -> Result<(), ApiError> {
    if ids.ids.is_empty() || ids.ids.len() > 64 {
        return Err(ApiError::bad("bad_request", "give 1 to 64 member ids"));
    }
    Ok(())
}

pub(crate) async fn promote(
    State(s): State<RpcState>,
    Json(ids): Json<Ids>,
) -> Result<Json<pyralog_cluster::Status>, ApiError> {
    check_ids(&ids)?;
    s.member.promote(&ids.ids).await.map_err(cluster_error)?;
    settled(&s).await
}

pub(crate) async fn remove(
    State(s): State<RpcState>,
    Json(ids): Json<Ids>,
) -> Result<Json<pyralog_cluster::Status>, ApiError> {
    check_ids(&ids)?;
    s.member.remove(&ids.ids).await.map_err(cluster_error)?;
    settled(&s).await
}

pub(crate) async fn export_history(
    State(s): State<RpcState>,
) -> Result<Json<pyralog_cluster::intent::Interchange>, ApiError> {
    s.member.linearize().await.map_err(cluster_error)?;
    s.member
        .export_history(&s.validator)
        .map(Json)
        .map_err(cluster_error)
}

pub(crate) async fn import_history(
    State(s): State<RpcState>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let file = pyralog_cluster::intent::Interchange::from_json(&body)
        .map_err(|e| ApiError::bad("bad_request", e.to_string()))?;
    let plan = s
        .member
        .import_history(&file, &s.validator)
        .await
        .map_err(cluster_error)?;
    Ok(Json(serde_json::json!({
        "added": plan.add.len(),
        "floor": plan.floor,
    })))
}
