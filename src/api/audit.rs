//! `GET /v1/audit` and `GET /v1/audit/{coordinator}`: the auditor's log of commitments
//! (`crate::audit`), kept by bootstrap nodes. A radiator keeps none and answers 404 saying so.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;

use super::{bad, internal, not_found, ApiError};
use crate::audit::{AuditLog, AuditSummary, CoordinatorLog, MAX_PAGE};
use crate::identity::PublicKey;
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
