//! `GET /v1/audit` and `GET /v1/audit/{coordinator}`: the auditor's log of commitments
//! (`crate::audit`), kept by bootstrap nodes. A radiator keeps none and answers 404 saying so.
//! `POST /v1/revocations`: gossips this household's own revocation statement to every node.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

use super::{bad, internal, not_found, ApiError};
use crate::audit::{AuditLog, AuditSummary, CoordinatorLog, MAX_PAGE};
use crate::identity::PublicKey;
use crate::model::revoke::Revocation;
use crate::net::Topic;
use crate::node::NodeContext;

fn log_of(ctx: &NodeContext) -> Result<AuditLog, ApiError> {
    ctx.audit.clone().ok_or_else(|| {
        not_found(
            "this node keeps no audit log: bootstrap nodes do (`[node] role = \"bootstrap\"`)",
        )
    })
}

pub(super) async fn summary(
    State(ctx): State<NodeContext>,
) -> Result<Json<AuditSummary>, ApiError> {
    let log = log_of(&ctx)?;
    // Reads the whole log: off the runtime's threads.
    let summary = tokio::task::spawn_blocking(move || log.summary())
        .await
        .map_err(internal)?
        .map_err(internal)?;
    Ok(Json(summary))
}

#[derive(Deserialize)]
pub(super) struct Page {
    /// First commitment number to list (default 0).
    from: Option<u64>,
    /// Most commitments to list (default and at most `MAX_PAGE`).
    limit: Option<usize>,
}

pub(super) async fn coordinator(
    State(ctx): State<NodeContext>,
    Path(coordinator): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<CoordinatorLog>, ApiError> {
    let log = log_of(&ctx)?;
    let key = PublicKey::from_hex(&coordinator).map_err(|e| bad(format!("coordinator: {e}")))?;
    let (from, limit) = (page.from.unwrap_or(0), page.limit.unwrap_or(MAX_PAGE));
    let listed = tokio::task::spawn_blocking(move || log.coordinator(&key, from, limit))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    Ok(Json(listed))
}

/// `POST /v1/revocations` with a statement in its JSON form (`hearth receipts revoke
/// --publish`): checked (it decodes, its signature verifies, it revokes this node's own key:
/// gossip carries it under this node's key, and nodes accept a statement only from the key it
/// revokes), kept by this node, then published on `hearth/evidence/1`. 503 when no peer is
/// connected to hear it, so the household knows to try again.
pub(super) async fn publish_revocation(
    State(ctx): State<NodeContext>,
    Json(statement): Json<serde_json::Value>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let r = Revocation::from_json(&statement).map_err(|e| bad(format!("revocation: {e}")))?;
    if r.key != ctx.identity.public() {
        return Err(bad(format!(
            "revocation: it revokes {}, not this node's key {}; publish it from the node that \
             holds that key",
            r.key.to_hex(),
            ctx.identity.public().to_hex()
        )));
    }
    // This node takes no more work from its own key either (its own announcements go the
    // same way as a peer's), and, if it is an auditor, logs it: gossip does not come back to
    // its author.
    ctx.refusals.own_revocation(&r).map_err(internal)?;
    // Every node hears `hearth/evidence/1`: the radiators stop working for the key, the
    // auditors log it for the verifiers.
    match ctx.net.publish(Topic::Evidence, r.to_bytes()).await {
        Ok(()) => Ok(Json(
            serde_json::json!({ "published": true, "keep": r.keep }),
        )),
        Err(e) if e.is_no_peers() => Err(ApiError(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "no peer is connected to hear it yet; try again once the node has peers".into(),
        )),
        Err(e) => Err(internal(e)),
    }
}
