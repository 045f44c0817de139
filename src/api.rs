//! The local HTTP+JSON API of a node, for the `hearth` CLI, the dashboard, home automation and
//! Prometheus. It binds to loopback unless the operator allows more (`[node]
//! api_allow_remote`). Every route that changes anything or reveals the household's data needs
//! the API token or a browser session; every route refuses a foreign `Host` and cross-site
//! requests ([`auth`]). Every error is a status code with a JSON `{"error": ...}` body that
//! says what to do.
//!
//! | method | path | what | needs token |
//! |---|---|---|---|
//! | GET | `/`, `/dashboard.css`, `/dashboard.js` | the dashboard page (no data in it) | no |
//! | GET | `/login?ticket=..` | exchanges a one-time ticket for a session cookie | no (the ticket is the secret) |
//! | GET | `/v1/overview` | everything the dashboard shows, with the 24 h room history | yes |
//! | POST | `/v1/login/ticket` | a one-time login link for a browser | yes |
//! | GET | `/v1/status` | peer id, household, listen addresses, peer count, uptime, version | yes |
//! | GET | `/v1/peers` | connected peers | yes |
//! | POST | `/v1/blobs` | store the body as a blob → `{"hash"}` | yes |
//! | GET | `/v1/blobs/{hash}` | a blob's bytes, streamed as they are verified ([`stream`]) | yes |
//! | POST | `/v1/jobs` | submit a job (JSON [`SubmitJob`]) → `{"id"}` | yes |
//! | GET | `/v1/jobs` | jobs this node coordinates, each without its shards ([`crate::jobs::JobSummary`]) | yes |
//! | GET | `/v1/jobs/{id}` | one job, shard by shard ([`crate::jobs::JobView`]) | yes |
//! | GET | `/v1/jobs/{id}/summary` | one job without its shards: what to poll while following it | yes |
//! | GET | `/v1/jobs/{id}/result` | the assembled result once the job is done | yes |
//! | GET | `/v1/receipts?household=KEY` | receipts, in the export format | yes |
//! | GET | `/v1/receipts/totals` | credit per household | yes |
//! | GET | `/v1/receipts/related` | receipts this node countersigned whose worker is itself or shares an address with it: `{"<receipt id>": "same_key" \| "shared_address"}` | yes |
//! | GET | `/v1/trust` | every household this node has a record, an exclusion or fraud evidence about: standing and why ([`crate::jobs::trust::view::HouseholdTrust`]) | yes |
//! | GET | `/v1/trust/{household}` | one household's standing, why, record, exclusion and the evidence against it with who checked it | yes |
//! | GET | `/metrics` | Prometheus text exposition of the node's state | yes |
//! | GET, PUT, POST | `/v1/heat/...` | thermostat and controller (radiators only; `crate::heat::api`) | yes |

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use serde::{Deserialize, Serialize};

pub mod audit;
pub mod auth;
pub mod dashboard;
pub mod history;
mod metrics;
pub mod serve;
pub mod stream;

use auth::Access;

use crate::identity::PublicKey;
use crate::jobs::JobStatus;
use crate::model::receipt::ReceiptExport;
use crate::model::{now_ms, parse_hash, Assembly, JobLimits, JobManifest};
use crate::node::NodeContext;

/// Largest blob accepted through the API in one request.
pub const MAX_UPLOAD: usize = 256 << 20;
/// Uploads received at once: each is held in memory whole until stored, so this bounds what
/// uploads take of the radiator's memory (`UPLOADS_AT_ONCE` × [`MAX_UPLOAD`]); more wait, their
/// bodies not yet read.
pub const UPLOADS_AT_ONCE: usize = 2;

/// The API with its access control: `access` knows the token and the address the API is
/// bound to. Which routes need the token is decided here, by which router a route joins.
pub fn router(ctx: NodeContext, access: Access) -> Router {
    let heat = ctx.heat.clone();
    let history = history::History::default();
    if let Some(heat) = &heat {
        // Ends by itself when the heat service stops.
        tokio::spawn(history.clone().follow(heat.subscribe()));
    }
    let mut private = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/reachability/check", post(recheck))
        .route("/v1/blobs/{hash}", get(get_blob))
        .route("/v1/jobs", post(submit).get(list_jobs))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/jobs/{id}/summary", get(job_summary))
        .route("/v1/jobs/{id}/result", get(result))
        .route("/v1/receipts", get(receipts))
        .route("/v1/receipts/totals", get(totals))
        .route("/v1/receipts/related", get(receipts_related))
        .route("/v1/trust", get(trust_all))
        .route("/v1/trust/{household}", get(trust_one))
        .route("/v1/audit", get(audit::summary))
        .route("/v1/audit/{coordinator}", get(audit::coordinator))
        .route("/v1/revocations", post(audit::publish_revocation))
        .route("/v1/refusals", get(audit::refusals))
        .route("/metrics", get(metrics::metrics))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .with_state(ctx.clone())
        .merge(
            Router::new()
                .route("/v1/login/ticket", post(auth::ticket))
                .with_state(access.clone()),
        )
        .merge(
            Router::new()
                .route("/v1/overview", get(dashboard::overview))
                .with_state((ctx.clone(), history)),
        )
        .merge(
            Router::new()
                .route("/v1/blobs", post(put_blob))
                .layer(DefaultBodyLimit::max(MAX_UPLOAD))
                .with_state((
                    ctx.clone(),
                    std::sync::Arc::new(tokio::sync::Semaphore::new(UPLOADS_AT_ONCE)),
                )),
        );
    if let Some(heat) = heat {
        private = private.merge(crate::heat::routes().with_state(heat));
    }
    let private = private.route_layer(middleware::from_fn_with_state(
        access.clone(),
        auth::require,
    ));
    let public = Router::new()
        .route("/", get(dashboard::index))
        .route("/dashboard.css", get(dashboard::style))
        .route("/dashboard.js", get(dashboard::script))
        .route("/login", get(auth::login))
        .with_state(access.clone());
    private
        .merge(public)
        .layer(middleware::from_fn_with_state(access, auth::guard))
}

pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Response {
        e.into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}
fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg.into())
}
fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!("API: {e}");
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Status {
    pub version: String,
    pub peer_id: String,
    /// The key this node signs with (its PeerId's).
    pub household: String,
    /// Every key of the household's chain, first (its name for credit) to current
    /// (`hearth key`, docs/receipts.md "Rotating a key"); just `household` if it never rotated.
    pub household_keys: Vec<String>,
    pub role: String,
    pub listen_addrs: Vec<String>,
    pub peers: usize,
    pub uptime_s: u64,
    pub worker_slots: usize,
    pub worker_slots_max: usize,
    /// Public or behind NAT, relays, relayed and hole-punched peers.
    #[serde(default)]
    pub reachability: crate::net::Reachability,
    /// Bytes of the radiator's shard memory budget held now (running shards' reservations and
    /// outputs not yet stored), and the budget (`memory_total_mib`). 0 from older nodes.
    #[serde(default)]
    pub shard_memory_bytes: u64,
    #[serde(default)]
    pub shard_memory_limit_bytes: u64,
    /// Live work records this node holds as a DHT node, and those refused since start (key
    /// full, or the sender's network held its share: `net::work`). 0 from older nodes.
    #[serde(default)]
    pub work_records: usize,
    #[serde(default)]
    pub work_records_refused: u64,
    /// Live want records (radiators that want heat and were offered no work) held likewise,
    /// and the lookups of the work and want boards this node made since start. 0 from older
    /// nodes.
    #[serde(default)]
    pub want_records: usize,
    #[serde(default)]
    pub work_lookups: u64,
    #[serde(default)]
    pub want_lookups: u64,
    /// Peers in the DHT routing table, and those kept out since start because their network
    /// held its share of a bucket or of the table (`net::table`). 0 from older nodes.
    #[serde(default)]
    pub routing_peers: usize,
    #[serde(default)]
    pub routing_refused: u64,
    /// Dials since start by who asked for them, and the connections they established
    /// (`net::DialCounts`): where a radiator's outbound connections come from. Empty from
    /// older nodes.
    #[serde(default)]
    pub dials: crate::net::DialCounts,
    /// Bytes free on the disk of the data directory now (absent if it cannot be asked), and
    /// the free space the blob store keeps there (`[limits] disk_free_mib`). 0 and absent
    /// from older nodes.
    #[serde(default)]
    pub disk_free_bytes: Option<u64>,
    #[serde(default)]
    pub disk_floor_bytes: u64,
    /// Why radiators refuse this node's own key, if they do: `"revoked"` (its household
    /// revoked it) and/or `"equivocated"` (it signed two commitments under one number).
    /// Empty from older nodes.
    #[serde(default)]
    pub own_key_refused: Vec<String>,
    /// Keys this node takes no work from (revoked, or caught equivocating; `node::revoked`).
    #[serde(default)]
    pub refused_keys: usize,
    /// Why this node seals no more receipt commitments, if a bootstrap node logged one of its
    /// key that it did not seal while it ran: another node signs with this key
    /// (`node::auditors`). Absent from older nodes.
    #[serde(default)]
    pub key_used_elsewhere: Option<String>,
    /// Why this household must look, if an event of its key log that this node did not sign
    /// was heard (`KeyBook::not_signed_here`): someone else holding its key signed a log of
    /// their own. Absent otherwise and from older nodes.
    #[serde(default)]
    pub key_event_not_signed_here: Option<String>,
    /// How many events the household's own key log holds (0: none, so nothing fixes its next
    /// key; `hearth key prerotate`). Absent until the node read it, and from older nodes.
    #[serde(default)]
    pub key_log_events: Option<usize>,
    /// While this node's first receipt commitment since its start waits for its bootstrap
    /// nodes (`node::auditors`), why. Absent otherwise and from older nodes.
    #[serde(default)]
    pub sealing_waits: Option<String>,
    /// What this node serves as a circuit relay (bootstrap nodes). Absent otherwise and from
    /// older nodes.
    #[serde(default)]
    pub relay: Option<crate::net::RelayServed>,
}

/// Test every address of this node again with AutoNAT, now or 10 s after the last test (a
/// port forwarded or removed on the household's router since). The verdicts show in
/// `GET /v1/status` (`reachability.autonat_verdicts` counts them).
async fn recheck(State(ctx): State<NodeContext>) -> Result<Json<crate::net::Recheck>, ApiError> {
    Ok(Json(ctx.net.recheck().await.map_err(internal)?))
}

async fn status(State(ctx): State<NodeContext>) -> Result<Json<Status>, ApiError> {
    let net = ctx.net.status().await.map_err(internal)?;
    let (disk_free_bytes, disk_floor_bytes) = ctx.store.disk_room();
    Ok(Json(Status {
        version: env!("CARGO_PKG_VERSION").into(),
        peer_id: net.peer_id.to_string(),
        household: ctx.identity.public().to_hex(),
        household_keys: ctx
            .ledger
            .own()
            .keys
            .iter()
            .map(PublicKey::to_hex)
            .collect(),
        role: format!("{:?}", ctx.role).to_lowercase(),
        listen_addrs: net.listen_addrs.iter().map(ToString::to_string).collect(),
        peers: net.connected_peers,
        uptime_s: ctx.started.elapsed().as_secs(),
        worker_slots: *ctx.slots.borrow(),
        worker_slots_max: ctx.max_slots,
        reachability: net.reachability,
        relay: net.relay,
        shard_memory_bytes: ctx.executor.memory_in_use(),
        shard_memory_limit_bytes: ctx.executor.limits().memory_total,
        work_records: net.work_records,
        work_records_refused: net.work_records_refused,
        want_records: net.want_records,
        work_lookups: net.work_lookups,
        want_lookups: net.want_lookups,
        routing_peers: net.routing_peers,
        dials: net.dials,
        routing_refused: net.routing_refused,
        disk_free_bytes,
        disk_floor_bytes,
        own_key_refused: ctx
            .refusals
            .keys()
            .reasons(&ctx.identity.public())
            .map(|r| {
                let mut why = Vec::new();
                if r.revoked {
                    why.push("revoked".to_string());
                }
                if r.equivocated {
                    why.push("equivocated".to_string());
                }
                why
            })
            .unwrap_or_default(),
        refused_keys: ctx.refusals.keys().count(),
        key_used_elsewhere: ctx.auditors.elsewhere(),
        key_event_not_signed_here: ctx.refusals.key_book().not_signed_here(),
        key_log_events: ctx.refusals.key_book().own_log_len(),
        sealing_waits: ctx.auditors.sealing_waits(),
    }))
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PeerView {
    pub peer_id: String,
    pub addresses: Vec<String>,
    pub agent: Option<String>,
    pub connected_s: u64,
}

async fn peers(State(ctx): State<NodeContext>) -> Result<Json<Vec<PeerView>>, ApiError> {
    let peers = ctx.net.peers().await.map_err(internal)?;
    Ok(Json(
        peers
            .into_iter()
            .map(|p| PeerView {
                peer_id: p.peer_id.to_string(),
                addresses: p.addresses.iter().map(ToString::to_string).collect(),
                agent: p.agent_version.clone(),
                connected_s: p.connected_for().as_secs(),
            })
            .collect(),
    ))
}

async fn put_blob(
    State((ctx, uploads)): State<(NodeContext, std::sync::Arc<tokio::sync::Semaphore>)>,
    request: axum::extract::Request,
) -> Result<Json<serde_json::Value>, Response> {
    // Taken before the body is read, so waiting uploads hold no memory.
    let _turn = uploads.acquire().await.map_err(internal)?;
    let body = Bytes::from_request(request, &())
        .await
        .map_err(IntoResponse::into_response)?;
    let hash = ctx
        .store
        .blocking(move |store| store.put_bytes(&body))
        .await
        .map_err(|e| match e {
            // The household's disk, not the node, is short: 507, with what it keeps free.
            e @ crate::store::StoreError::DiskLow { .. } => {
                ApiError(StatusCode::INSUFFICIENT_STORAGE, e.to_string())
            }
            e => internal(e),
        })?;
    if let Err(e) = ctx.net.provide(hash).await {
        tracing::debug!("could not advertise blob: {e}");
    }
    Ok(Json(
        serde_json::json!({ "hash": hash.to_hex().to_string() }),
    ))
}

async fn get_blob(
    State(ctx): State<NodeContext>,
    Path(hash): Path<String>,
) -> Result<Response, ApiError> {
    let hash = parse_hash(&hash).map_err(bad)?;
    match stream::blob(&ctx.store, hash).await {
        Ok(body) => Ok(body),
        Err(crate::store::StoreError::NotFound(h)) => {
            Err(not_found(format!("blob {h} is not stored here")))
        }
        Err(e) => Err(internal(e)),
    }
}

/// Body of `POST /v1/jobs`: blobs (already uploaded) by hash, and the job's parameters.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SubmitJob {
    pub module: String,
    pub inputs: Vec<String>,
    #[serde(default)]
    pub limits: Option<JobLimits>,
    #[serde(default = "default_replication")]
    pub replication: u8,
    #[serde(default = "default_assembly")]
    pub assembly: Assembly,
    /// The job's own replication policy (`docs/trust.md`); absent: the node's `[trust]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::jobs::trust::Policy>,
    /// Only these households (hex keys, at most 256) and the submitter's trusted set may work
    /// the job; it goes into the job's policy (`docs/trust.md`). Absent or empty: anyone
    /// `[trust] allow` lets in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
}

fn default_replication() -> u8 {
    2
}
fn default_assembly() -> Assembly {
    Assembly::Concat
}

async fn submit(
    State(ctx): State<NodeContext>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(reasons) = ctx.refusals.keys().reasons(&ctx.identity.public()) {
        // Every receipt this key countersigns now is void to a verifier holding the proof,
        // and radiators that heard it refuse the job: say so rather than queue it.
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "{}; submit from a new identity (docs/operations.md, \"A household whose key \
                 was stolen\")",
                reasons.own_key_sentence()
            ),
        ));
    }
    let req: SubmitJob =
        serde_json::from_slice(&body).map_err(|e| bad(format!("job request: {e}")))?;
    let allow = crate::jobs::trust::parse_keys(req.allow.iter().map(String::as_str))
        .map_err(|e| bad(format!("allow: {e}")))?;
    let manifest = JobManifest {
        module: parse_hash(&req.module).map_err(|e| bad(format!("module: {e}")))?,
        inputs: req
            .inputs
            .iter()
            .map(|h| parse_hash(h))
            .collect::<Result<_, _>>()
            .map_err(|e| bad(format!("inputs: {e}")))?,
        limits: req.limits.unwrap_or_default(),
        replication: req.replication,
        assembly: req.assembly,
        submitter: ctx.identity.public(),
        created_ms: now_ms(),
    };
    let id = ctx
        .coordinator
        .submit_with(manifest, req.policy, allow)
        .await
        .map_err(|e| match e {
            crate::jobs::JobError::Invalid(m) => bad(m),
            other => internal(other),
        })?;
    Ok(Json(serde_json::json!({ "id": id.to_hex().to_string() })))
}

async fn list_jobs(State(ctx): State<NodeContext>) -> Json<Vec<crate::jobs::JobSummary>> {
    Json(ctx.coordinator.list().await)
}

async fn job_summary(
    State(ctx): State<NodeContext>,
    Path(id): Path<String>,
) -> Result<Json<crate::jobs::JobSummary>, ApiError> {
    let id = parse_hash(&id).map_err(bad)?;
    ctx.coordinator
        .summary(id)
        .await
        .map(Json)
        .ok_or_else(|| not_found("this node coordinates no such job"))
}

async fn job(
    State(ctx): State<NodeContext>,
    Path(id): Path<String>,
) -> Result<Json<crate::jobs::JobView>, ApiError> {
    let id = parse_hash(&id).map_err(bad)?;
    ctx.coordinator
        .view(id)
        .await
        .map(Json)
        .ok_or_else(|| not_found("this node coordinates no such job"))
}

async fn result(
    State(ctx): State<NodeContext>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_hash(&id).map_err(bad)?;
    let view = ctx
        .coordinator
        .view(id)
        .await
        .ok_or_else(|| not_found("this node coordinates no such job"))?;
    match view.status {
        JobStatus::Done { result } => {
            let hash = parse_hash(&result).map_err(internal)?;
            stream::blob(&ctx.store, hash).await.map_err(internal)
        }
        JobStatus::Failed { reason } => Err(ApiError(
            StatusCode::CONFLICT,
            format!("the job failed: {reason}"),
        )),
        JobStatus::Running => Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "the job is still running: {} of {} shards verified",
                view.shards_verified, view.shards_total
            ),
        )),
    }
}

#[derive(Deserialize)]
struct ReceiptQuery {
    household: Option<String>,
}

async fn receipts(
    State(ctx): State<NodeContext>,
    Query(q): Query<ReceiptQuery>,
) -> Result<Json<ReceiptExport>, ApiError> {
    let household = q
        .household
        .map(|h| PublicKey::from_hex(&h))
        .transpose()
        .map_err(|e| bad(format!("household: {e}")))?;
    Ok(Json(
        ctx.ledger.export(household.as_ref()).map_err(internal)?,
    ))
}

/// Receipts this node countersigned whose worker is this household or shares an address
/// with it (`docs/threat-model.md`): receipt id → `same_key` | `shared_address`.
async fn receipts_related(
    State(ctx): State<NodeContext>,
) -> Result<Json<std::collections::BTreeMap<String, crate::jobs::trust::related::Relation>>, ApiError>
{
    Ok(Json(ctx.trust.view.all_related().map_err(internal)?))
}

async fn trust_all(
    State(ctx): State<NodeContext>,
) -> Result<Json<Vec<crate::jobs::trust::view::HouseholdTrust>>, ApiError> {
    Ok(Json(ctx.trust.view.all().map_err(internal)?))
}

async fn trust_one(
    State(ctx): State<NodeContext>,
    Path(household): Path<String>,
) -> Result<Json<crate::jobs::trust::view::HouseholdTrust>, ApiError> {
    let household = PublicKey::from_hex(&household).map_err(|e| bad(format!("household: {e}")))?;
    Ok(Json(
        ctx.trust.view.household(&household).map_err(internal)?,
    ))
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct TotalsView {
    pub household: String,
    pub receipts: u64,
    pub fuel: u64,
    pub energy_mj: u64,
}

async fn totals(State(ctx): State<NodeContext>) -> Result<Json<Vec<TotalsView>>, ApiError> {
    let totals = ctx.ledger.totals().map_err(internal)?;
    Ok(Json(
        totals
            .into_iter()
            .map(|(k, t)| TotalsView {
                household: k.to_hex(),
                receipts: t.receipts,
                fuel: t.fuel,
                energy_mj: t.credited_mj,
            })
            .collect(),
    ))
}
