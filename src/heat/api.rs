//! The `/v1/heat` HTTP routes: status, household commands and the temperature push endpoint
//! for home automation. The node merges them into its local API with
//! `heat::routes().with_state(handle)`.
//!
//! Errors answer with a status code and JSON `{"error": "..."}` like the rest of the API: 400
//! for a value out of range or a body that is not the expected JSON, 409 for a push to a
//! radiator that reads another source, 503 when the service has stopped.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::grid::{Series, SignalPush};
use super::service::{HeatHandle, HeatStatus};
use super::HeatError;

/// Body of `PUT /v1/heat/temperature` and `POST /v1/heat/setpoint`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Celsius {
    pub celsius: f64,
}

/// Body of `POST /v1/heat/boost`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boost {
    pub minutes: u64,
}

pub fn routes() -> Router<HeatHandle> {
    Router::new()
        .route("/v1/heat", get(status))
        .route("/v1/heat/temperature", put(push))
        .route("/v1/heat/setpoint", post(setpoint))
        .route("/v1/heat/auto", post(auto))
        .route("/v1/heat/boost", post(boost))
        .route("/v1/heat/off", post(off))
        .route("/v1/heat/signal", put(signal))
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<HeatError> for ApiError {
    fn from(e: HeatError) -> ApiError {
        let code = match e {
            HeatError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            HeatError::NotHttpSource(_) | HeatError::NotHttpSignal => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(code, e.to_string())
    }
}

fn body<T>(json: Result<Json<T>, JsonRejection>, example: &str) -> Result<T, ApiError> {
    json.map(|Json(v)| v).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("expected a JSON body like {example} ({})", e.body_text()),
        )
    })
}

type Answer = Result<Json<HeatStatus>, ApiError>;

async fn status(State(heat): State<HeatHandle>) -> Json<HeatStatus> {
    Json(heat.status())
}

async fn push(
    State(heat): State<HeatHandle>,
    json: Result<Json<Celsius>, JsonRejection>,
) -> Answer {
    let c = body(json, r#"{"celsius": 20.5}"#)?;
    Ok(Json(heat.push_temperature(c.celsius).await?))
}

async fn setpoint(
    State(heat): State<HeatHandle>,
    json: Result<Json<Celsius>, JsonRejection>,
) -> Answer {
    let c = body(json, r#"{"celsius": 20.5}"#)?;
    Ok(Json(heat.set_setpoint(c.celsius).await?))
}

async fn auto(State(heat): State<HeatHandle>) -> Answer {
    Ok(Json(heat.auto().await?))
}

async fn boost(State(heat): State<HeatHandle>, json: Result<Json<Boost>, JsonRejection>) -> Answer {
    let b = body(json, r#"{"minutes": 60}"#)?;
    let secs = b.minutes.saturating_mul(60);
    Ok(Json(heat.boost(Duration::from_secs(secs)).await?))
}

async fn off(State(heat): State<HeatHandle>) -> Answer {
    Ok(Json(heat.off().await?))
}

/// `PUT /v1/heat/signal`: a price or carbon-intensity forecast (body bounded by axum's 2 MB
/// limit; [`Series::try_from`] bounds the period count and every number).
async fn signal(
    State(heat): State<HeatHandle>,
    json: Result<Json<SignalPush>, JsonRejection>,
) -> Answer {
    let p = body(
        json,
        r#"{"points": [{"start": "2024-01-03T07:00", "price_per_kwh": 0.65, "g_co2_per_kwh": 120}], "expensive_price": 0.4}"#,
    )?;
    let series = Series::try_from(p)?;
    Ok(Json(heat.push_signal(series).await?))
}
