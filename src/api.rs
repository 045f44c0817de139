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
//! | GET | `/v1/blobs/{hash}` | a blob's bytes | yes |
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
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};
use std::sync::atomic::AtomicU64;

pub mod auth;
pub mod dashboard;
pub mod history;

use auth::Access;

use crate::identity::PublicKey;
use crate::jobs::JobStatus;
use crate::model::receipt::ReceiptExport;
use crate::model::{now_ms, parse_hash, Assembly, JobLimits, JobManifest};
use crate::node::NodeContext;

/// Largest blob accepted through the API in one request.
pub const MAX_UPLOAD: usize = 256 << 20;

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
        .route("/v1/blobs", post(put_blob))
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
        .route("/metrics", get(metrics))
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
        reachability: net.reachability,
        shard_memory_bytes: ctx.executor.memory_in_use(),
        shard_memory_limit_bytes: ctx.executor.limits().memory_total,
        work_records: net.work_records,
        work_records_refused: net.work_records_refused,
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
    let hash = ctx
        .store
        .blocking(move |store| store.put_bytes(&body))
        .await
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
    match ctx.store.read(hash).await {
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
            ctx.store.read(hash).await.map_err(internal)
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

/// Prometheus metrics, read from the node's state at scrape time (one registry per scrape, so
/// nothing is counted twice). Names follow the Prometheus conventions: base units in the name
/// (`_seconds`, `_joules`, `_celsius`, `_watts`), `_total` on counters (values that only grow:
/// the encoder appends it), gauges for values that go up and down. `docs/operations.md` lists
/// every name.
async fn metrics(State(ctx): State<NodeContext>) -> Result<Response, ApiError> {
    let mut m = Metrics::new();
    let net = ctx.net.status().await.map_err(internal)?;
    m.gauge("peers", "Connected peers", None, net.connected_peers as f64);
    let r = &net.reachability;
    m.counter(
        "hole_punch_attempts",
        "Hole punches (DCUtR) finished since the node started, successful or not",
        None,
        r.hole_punch_attempts as f64,
    );
    m.counter(
        "hole_punch_successes",
        "Hole punches that gave a direct connection since the node started",
        None,
        r.hole_punch_successes as f64,
    );
    m.gauge(
        "relayed_peers",
        "Peers connected only through a relay",
        None,
        r.relayed_peers.len() as f64,
    );
    m.gauge(
        "reachable_public",
        "1 when a direct address of this node is confirmed reachable from the internet",
        None,
        f64::from(u8::from(r.is_public())),
    );
    m.counter(
        "blob_chunks_served",
        "Blob pieces served to peers since the node started",
        None,
        net.chunks_served as f64,
    );
    m.counter(
        "blob_chunks_fetched",
        "Verified blob pieces fetched from peers since the node started",
        None,
        net.chunks_fetched as f64,
    );
    m.gauge(
        "work_records",
        "Live work records this node holds as a DHT node",
        None,
        net.work_records as f64,
    );
    m.gauge(
        "blob_provider_records",
        "Blob provider records this node holds for other nodes as a DHT node",
        None,
        net.blob_records as f64,
    );
    m.counter(
        "blob_provider_records_refused",
        "Blob provider records refused since start: a bound of the store was reached",
        None,
        net.blob_records_refused as f64,
    );
    m.counter(
        "work_records_refused",
        "Work records refused since start: the key was full or the sender's network held its share",
        None,
        net.work_records_refused as f64,
    );
    m.gauge(
        "uptime",
        "Time since the node started",
        Some(Unit::Seconds),
        ctx.started.elapsed().as_secs_f64(),
    );
    m.gauge(
        "worker_slots",
        "Worker slots the room wants filled now",
        None,
        *ctx.slots.borrow() as f64,
    );
    m.gauge(
        "worker_slots_max",
        "Worker slots at full heat",
        None,
        ctx.max_slots as f64,
    );
    m.gauge(
        "shard_memory",
        "Memory of the radiator's shard budget held now: running shards and unstored outputs",
        Some(Unit::Bytes),
        ctx.executor.memory_in_use() as f64,
    );
    m.gauge(
        "shard_memory_limit",
        "The radiator's shard memory budget (memory_total_mib)",
        Some(Unit::Bytes),
        ctx.executor.limits().memory_total as f64,
    );
    m.counter(
        "shard_cpu",
        "CPU time spent inside shards by this process",
        Some(Unit::Seconds),
        crate::exec::Executor::process_shard_cpu_time().as_secs_f64(),
    );
    let own = ctx
        .ledger
        .totals_of(&ctx.identity.public())
        .map_err(internal)?;
    m.counter(
        "receipts_credited",
        "Verified receipts crediting this household",
        None,
        own.receipts as f64,
    );
    m.counter(
        "energy_credited",
        "Energy credited to this household in verified receipts",
        Some(Unit::Joules),
        own.credited_mj as f64 / 1000.0,
    );
    m.counter(
        "fuel_credited",
        "Fuel (wasm instructions) credited to this household in verified receipts",
        None,
        own.fuel as f64,
    );
    let all: u64 = ctx
        .ledger
        .totals()
        .map_err(internal)?
        .iter()
        .map(|(_, t)| t.receipts)
        .sum();
    m.counter(
        "ledger_receipts",
        "Receipts of all households in this node's ledger",
        None,
        all as f64,
    );
    let jobs = ctx.coordinator.list().await;
    let jobs_family = Family::<Vec<(String, String)>, Gauge<f64, AtomicU64>>::default();
    for (state, n) in [
        (
            "running",
            count_jobs(&jobs, |s| matches!(s, JobStatus::Running)),
        ),
        (
            "done",
            count_jobs(&jobs, |s| matches!(s, JobStatus::Done { .. })),
        ),
        (
            "failed",
            count_jobs(&jobs, |s| matches!(s, JobStatus::Failed { .. })),
        ),
    ] {
        jobs_family
            .get_or_create(&vec![("state".to_string(), state.to_string())])
            .set(n);
    }
    m.registry
        .register("jobs", "Jobs this node coordinates, by state", jobs_family);
    if let Some(heat) = &ctx.heat {
        let h = heat.status();
        if let Some(room) = h.room_celsius {
            m.gauge(
                "room_temperature",
                "Room temperature (absent while the reading is not trusted)",
                Some(Unit::Celsius),
                room,
            );
        }
        m.gauge(
            "room_setpoint",
            "Room temperature the radiator aims for",
            Some(Unit::Celsius),
            h.setpoint_celsius,
        );
        m.gauge(
            "heat_demand_ratio",
            "Heat the room wants, 0 to 1 of full power",
            None,
            f64::from(h.demand_permille) / 1000.0,
        );
        m.gauge(
            "power",
            "Electrical power of the radiator",
            Some(Unit::Other("watts".into())),
            h.power_watts,
        );
        // Starts again from 0 at local midnight, so a gauge, not a counter.
        m.gauge(
            "energy_today",
            "Electrical energy the radiator drew since local midnight",
            Some(Unit::Joules),
            h.energy_today_kwh * 3.6e6,
        );
        m.gauge(
            "energy_charged_today",
            "Energy the meter charged to shards that ran since local midnight (idle never is)",
            Some(Unit::Joules),
            h.energy_charged_today_kwh * 3.6e6,
        );
        if let Some(credited) = h.energy_credited_today_kwh {
            m.gauge(
                "energy_credited_today",
                "Energy this household's receipts credit since local midnight",
                Some(Unit::Joules),
                credited * 3.6e6,
            );
        }
        m.gauge(
            "heat_fail_safe",
            "1 while heating is held back by an untrusted reading",
            None,
            f64::from(u8::from(h.fail_safe)),
        );
    }
    let build = Family::<Vec<(String, String)>, Gauge<f64, AtomicU64>>::default();
    build
        .get_or_create(&vec![
            ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
            (
                "protocol".to_string(),
                crate::model::wire::PROTOCOL_VERSION.to_string(),
            ),
            ("role".to_string(), format!("{:?}", ctx.role).to_lowercase()),
        ])
        .set(1.0);
    m.registry.register(
        "build_info",
        "Always 1; the labels say which hearth this is",
        build,
    );
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &m.registry).map_err(internal)?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

fn count_jobs(jobs: &[crate::jobs::JobSummary], f: fn(&JobStatus) -> bool) -> f64 {
    jobs.iter().filter(|j| f(&j.status)).count() as f64
}

/// One scrape's registry, with the prefix `hearth_`.
struct Metrics {
    registry: Registry,
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            registry: Registry::with_prefix("hearth"),
        }
    }

    fn register(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        metric: impl prometheus_client::registry::Metric,
    ) {
        match unit {
            Some(unit) => self.registry.register_with_unit(name, help, unit, metric),
            None => self.registry.register(name, help, metric),
        }
    }

    /// A value that goes up and down.
    fn gauge(&mut self, name: &str, help: &str, unit: Option<Unit>, value: f64) {
        let g: Gauge<f64, AtomicU64> = Gauge::default();
        g.set(value);
        self.register(name, help, unit, g);
    }

    /// A value that only grows while the node runs (the encoder appends `_total`).
    fn counter(&mut self, name: &str, help: &str, unit: Option<Unit>, value: f64) {
        let c: Counter<f64, AtomicU64> = Counter::default();
        c.inc_by(value);
        self.register(name, help, unit, c);
    }
}
