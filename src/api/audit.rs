//! `GET /v1/audit` and `GET /v1/audit/{coordinator}`: the auditor's log of commitments
//! (`crate::audit`), kept by bootstrap nodes. A radiator keeps none and answers 404 saying so.
//! `POST /v1/revocations`: gossips this household's own revocation statement to every node.
//! `GET /v1/refusals`: the keys this node takes no work from, each with its proof (every node).

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

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

/// Most refusals listed in one answer of `GET /v1/refusals`.
pub const MAX_REFUSALS_PAGE: usize = 256;

/// One key this node takes no work from, and the proof why.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct RefusalView {
    /// The household key (hex).
    pub key: String,
    /// `"revoked"` (its household's statement) or `"equivocated"` (two commitments under one
    /// number).
    pub kind: String,
    /// Of a revocation: the commitments below this number stay vouched for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep: Option<u64>,
    /// Of an equivocation: the number both commitments carry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The proof's bytes (hex): a revocation statement or an equivocation proof
    /// (`docs/protocol.md` §6.6), which anyone can check alone.
    pub signed: String,
}

/// A page of `GET /v1/refusals`; `next` is the cursor to ask with for the rest.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct RefusalPage {
    pub refusals: Vec<RefusalView>,
    pub next: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct RefusalQuery {
    /// The cursor (hex, 33 bytes) the last page ended at.
    after: Option<String>,
}

/// `GET /v1/refusals[?after=CURSOR]`: the keys this node refuses (revoked, or caught
/// equivocating) with their proofs, [`MAX_REFUSALS_PAGE`] at a time, in key order. Entries
/// kept without their proof (by hearth before request 11, 2026-12-04) are not listed;
/// `hearth status` counts them.
pub(super) async fn refusals(
    State(ctx): State<NodeContext>,
    Query(q): Query<RefusalQuery>,
) -> Result<Json<RefusalPage>, ApiError> {
    use crate::model::refusal::Refusal;
    use crate::node::revoked::Cursor;
    let after: Option<Cursor> = match q.after {
        None => None,
        Some(h) => Some(
            hex::decode(&h)
                .ok()
                .and_then(|b| Cursor::try_from(b.as_slice()).ok())
                .ok_or_else(|| bad("after: not a 33-byte hex cursor from an earlier page"))?,
        ),
    };
    let keys = ctx.refusals.keys().clone();
    // Reads the disk: off the runtime's threads.
    let (page, more) =
        tokio::task::spawn_blocking(move || keys.page(after.as_ref(), MAX_REFUSALS_PAGE))
            .await
            .map_err(internal)?
            .map_err(internal)?;
    let next = more
        .then(|| page.last().map(|(c, _)| hex::encode(c)))
        .flatten();
    let refusals = page
        .into_iter()
        .map(|(cursor, bytes)| {
            // Checked when kept; one damaged on disk is shown as it is, marked.
            let (kind, keep, seq) = match Refusal::checked(&bytes) {
                Ok(Refusal::Revoked(r)) => ("revoked", Some(r.keep), None),
                Ok(Refusal::Equivocated(e)) => ("equivocated", None, Some(e.seq())),
                Err(_) => ("damaged", None, None),
            };
            RefusalView {
                key: hex::encode(&cursor[..32]),
                kind: kind.into(),
                keep,
                seq,
                signed: hex::encode(&bytes),
            }
        })
        .collect();
    Ok(Json(RefusalPage { refusals, next }))
}
