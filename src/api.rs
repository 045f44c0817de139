//! The local HTTP+JSON API of a node, for the `hearth` CLI, dashboards and home automation.
//! It binds to loopback by default and has no authentication: anyone who can reach it can
//! submit jobs as this household. Every error is a status code with a JSON `{"error": ...}`
//! body that says what to do.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/v1/status` | peer id, household, listen addresses, peer count, uptime, version |
//! | GET | `/v1/peers` | connected peers |
//! | POST | `/v1/blobs` | store the body as a blob → `{"hash"}` |
//! | GET | `/v1/blobs/{hash}` | a blob's bytes |
//! | POST | `/v1/jobs` | submit a job (JSON [`SubmitJob`]) → `{"id"}` |
//! | GET | `/v1/jobs` | jobs this node coordinates |
//! | GET | `/v1/jobs/{id}` | one job, shard by shard |
//! | GET | `/v1/jobs/{id}/result` | the assembled result once the job is done |
//! | GET | `/v1/receipts?household=KEY` | receipts, in the export format |
//! | GET | `/v1/receipts/totals` | credit per household |
//! | GET | `/metrics` | Prometheus text exposition of the node's state |
//! | GET, PUT, POST | `/v1/heat/...` | thermostat and controller (radiators only; `crate::heat::api`) |

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::identity::PublicKey;
use crate::jobs::JobStatus;
use crate::model::receipt::ReceiptExport;
use crate::model::{now_ms, parse_hash, Assembly, JobLimits, JobManifest};
use crate::node::NodeContext;

/// Largest blob accepted through the API in one request.
pub const MAX_UPLOAD: usize = 256 << 20;

pub fn router(ctx: NodeContext) -> Router {
    let heat = ctx.heat.clone();
    let router = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/blobs", post(put_blob))
        .route("/v1/blobs/{hash}", get(get_blob))
        .route("/v1/jobs", post(submit).get(list_jobs))
        .route("/v1/jobs/{id}", get(job))
        .route("/v1/jobs/{id}/result", get(result))
        .route("/v1/receipts", get(receipts))
        .route("/v1/receipts/totals", get(totals))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .with_state(ctx);
    match heat {
        Some(heat) => router.merge(crate::heat::routes().with_state(heat)),
        None => router,
    }
}

pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
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
    pub household: String,
    pub role: String,
    pub listen_addrs: Vec<String>,
    pub peers: usize,
    pub uptime_s: u64,
    pub worker_slots: usize,
    pub worker_slots_max: usize,
}

async fn status(State(ctx): State<NodeContext>) -> Result<Json<Status>, ApiError> {
    let net = ctx.net.status().await.map_err(internal)?;
    Ok(Json(Status {
        version: env!("CARGO_PKG_VERSION").into(),
        peer_id: net.peer_id.to_string(),
        household: ctx.identity.public().to_hex(),
        role: format!("{:?}", ctx.role).to_lowercase(),
        listen_addrs: net.listen_addrs.iter().map(ToString::to_string).collect(),
        peers: net.connected_peers,
        uptime_s: ctx.started.elapsed().as_secs(),
        worker_slots: *ctx.slots.borrow(),
        worker_slots_max: ctx.max_slots,
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
    State(ctx): State<NodeContext>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let store = ctx.store.clone();
    let hash = tokio::task::spawn_blocking(move || store.put_bytes(&body))
        .await
        .map_err(internal)?
        .map_err(internal)?;
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
) -> Result<Vec<u8>, ApiError> {
    let hash = parse_hash(&hash).map_err(bad)?;
    match ctx.store.get_bytes(&hash) {
        Ok(b) => Ok(b),
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
    let req: SubmitJob =
        serde_json::from_slice(&body).map_err(|e| bad(format!("job request: {e}")))?;
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
        .submit(manifest)
        .await
        .map_err(|e| match e {
            crate::jobs::JobError::Invalid(m) => bad(m),
            other => internal(other),
        })?;
    Ok(Json(serde_json::json!({ "id": id.to_hex().to_string() })))
}

async fn list_jobs(State(ctx): State<NodeContext>) -> Json<Vec<crate::jobs::JobView>> {
    Json(ctx.coordinator.list().await)
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
) -> Result<Vec<u8>, ApiError> {
    let id = parse_hash(&id).map_err(bad)?;
    let view = ctx
        .coordinator
        .view(id)
        .await
        .ok_or_else(|| not_found("this node coordinates no such job"))?;
    match view.status {
        JobStatus::Done { result } => {
            let hash = parse_hash(&result).map_err(internal)?;
            ctx.store.get_bytes(&hash).map_err(internal)
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

/// Prometheus metrics, read from the node's state at scrape time (one registry per scrape:
/// every figure is a gauge over state the node already keeps, so nothing is counted twice).
async fn metrics(State(ctx): State<NodeContext>) -> Result<Response, ApiError> {
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::registry::Registry;
    use std::sync::atomic::AtomicU64;

    let mut registry = Registry::with_prefix("hearth");
    let mut gauge = |name: &str, help: &str, value: f64| {
        let g: Gauge<f64, AtomicU64> = Gauge::default();
        g.set(value);
        registry.register(name, help, g);
    };
    let net = ctx.net.status().await.map_err(internal)?;
    gauge("peers", "Connected peers", net.connected_peers as f64);
    gauge(
        "blob_chunks_served",
        "Blob pieces served to peers since start",
        net.chunks_served as f64,
    );
    gauge(
        "blob_chunks_fetched",
        "Verified blob pieces fetched since start",
        net.chunks_fetched as f64,
    );
    gauge(
        "uptime_seconds",
        "Seconds since the node started",
        ctx.started.elapsed().as_secs_f64(),
    );
    gauge(
        "worker_slots",
        "Worker slots the room wants filled now",
        *ctx.slots.borrow() as f64,
    );
    gauge(
        "worker_slots_max",
        "Worker slots at full heat",
        ctx.max_slots as f64,
    );
    gauge(
        "shard_cpu_seconds",
        "CPU seconds spent inside shards by this process",
        crate::exec::Executor::process_shard_cpu_time().as_secs_f64(),
    );
    let own = ctx
        .ledger
        .totals_of(&ctx.identity.public())
        .map_err(internal)?;
    gauge(
        "receipts_own",
        "Verified receipts crediting this household",
        own.receipts as f64,
    );
    gauge(
        "energy_credited_joules",
        "Energy credited to this household in receipts",
        own.credited_mj as f64 / 1000.0,
    );
    gauge(
        "fuel_credited",
        "Fuel credited to this household in receipts",
        own.fuel as f64,
    );
    let all: u64 = ctx
        .ledger
        .totals()
        .map_err(internal)?
        .iter()
        .map(|(_, t)| t.receipts)
        .sum();
    gauge(
        "ledger_receipts",
        "Receipts of all households in this ledger",
        all as f64,
    );
    let jobs = ctx.coordinator.list().await;
    let count = |f: fn(&JobStatus) -> bool| jobs.iter().filter(|j| f(&j.status)).count() as f64;
    gauge(
        "jobs_running",
        "Jobs this node coordinates that are running",
        count(|s| matches!(s, JobStatus::Running)),
    );
    gauge(
        "jobs_done",
        "Jobs this node coordinated to completion",
        count(|s| matches!(s, JobStatus::Done { .. })),
    );
    gauge(
        "jobs_failed",
        "Jobs this node coordinated that failed",
        count(|s| matches!(s, JobStatus::Failed { .. })),
    );
    if let Some(heat) = &ctx.heat {
        let h = heat.status();
        if let Some(room) = h.room_celsius {
            gauge("room_celsius", "Room temperature", room);
        }
        gauge("setpoint_celsius", "Room setpoint", h.setpoint_celsius);
        gauge(
            "heat_demand_ratio",
            "Heat demand, 0 to 1",
            f64::from(h.demand_permille) / 1000.0,
        );
        gauge(
            "power_watts",
            "Electrical power of the radiator",
            h.power_watts,
        );
        gauge("energy_today_kwh", "Energy used today", h.energy_today_kwh);
        gauge(
            "heat_fail_safe",
            "1 while heating is held back by an untrusted reading",
            f64::from(u8::from(h.fail_safe)),
        );
    }
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &registry).map_err(internal)?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}
