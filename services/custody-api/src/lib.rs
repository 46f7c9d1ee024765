//! The HTTP edge of Custody (axum): the REST API under `/api/v1` (sessions, users, officers, cases,
//! copy requests, evidence and its derived media, ledger, stations, telemetry), its OpenAPI document at
//! `/api/v1/openapi.json` (generated from the handlers, see [`openapi`]), `/healthz`, `/readyz` and
//! `/metrics`.
//!
//! Handlers parse and answer; the work is done by service crates (`custody-ingest`, `custody-tracking`, `custody-media`, `custody-cases`). This crate never
//! touches SQL or object storage directly, and turns every error into a response in one place
//! ([`ApiError`]), through the error codes shared with gRPC.

mod auth;
mod cases;
mod error;
mod evidence;
mod export;
mod ledger;
mod media;
mod openapi;
mod people;
mod requests;
mod retention;
mod stations;
mod telemetry;

pub use auth::Actor;
pub use error::ApiError;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{Route, get, post};
use custody_ingest::{Ingest, Stations};
use custody_tracking::{Devices, Tracking};
use error::ErrorBody;
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tower::{Layer, Service};
use tower_http::trace::TraceLayer;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub ingest: Ingest,
    pub stations: Stations,
    pub tracking: Tracking,
    pub devices: Devices,
    /// The media pipeline's results: probe, poster, thumbnails, browser proxy.
    pub media: custody_media::Media,
    /// MQTT user names the broker hooks treat as Custody's own bridge.
    pub mqtt_superusers: Vec<String>,
    /// Their password (`mqtt_password_file`); without it no superuser can log in through the hooks.
    pub mqtt_password: Option<String>,
    pub registry: Arc<Registry>,
    /// Accounts, sessions, roles and the audit log.
    pub accounts: custody_cases::Accounts,
    /// The officer registry and recorder check-outs.
    pub officers: custody_cases::Officers,
    /// Cases, links and coverage.
    pub cases: custody_cases::Cases,
    /// Approval before copy: download and export requests and the check the content route makes.
    pub requests: custody_cases::Requests,
    /// Export packages of cases.
    pub exporter: custody_cases::Exporter,
    /// Retention: legal holds and marks, and what is kept how long.
    pub retention: custody_cases::Retention,
}

/// The whole HTTP API.
pub fn router(state: ApiState) -> Router {
    let auth = axum::middleware::from_fn_with_state(state.clone(), auth::authenticate);
    routes(auth).with_state(state)
}

/// Every route, the user-session ones behind `auth`. Apart from [`router`] so that a test can list the
/// routes (and hold them against the OpenAPI document) without the services behind them. A route added
/// here is added to [`openapi::ApiDoc`] too.
fn routes<L>(auth: L) -> Router<ApiState>
where
    L: Layer<Route> + Clone + Send + Sync + 'static,
    L::Service: Service<Request> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request>>::Response: IntoResponse + 'static,
    <L::Service as Service<Request>>::Error: Into<Infallible> + 'static,
    <L::Service as Service<Request>>::Future: Send + 'static,
{
    let api = Router::new()
        .route("/evidence", get(evidence::list))
        .route("/evidence/{id}", get(evidence::get_one))
        .route("/evidence/{id}/content", get(evidence::content))
        .route("/evidence/{id}/poster", get(media::poster))
        .route("/evidence/{id}/thumbs", get(media::thumbs))
        .route("/evidence/{id}/proxy", get(media::proxy))
        .route("/evidence/{id}/history", get(ledger::history))
        .route(
            "/evidence/{id}/retention",
            get(retention::get_one).patch(retention::set_marks),
        )
        .route("/evidence/{id}/hold", post(retention::hold))
        .route("/evidence/{id}/release", post(retention::release))
        .route("/evidence/{id}/receipt", get(ledger::receipt))
        .route("/stations", get(stations::list))
        .route("/stations/{id}", get(stations::get_one))
        .route("/live", get(telemetry::live))
        .route("/positions/latest", get(telemetry::latest))
        .route("/officers/nearest", get(telemetry::nearest))
        .route("/devices/{id}/track", get(telemetry::track))
        .route("/alarms", get(telemetry::alarms))
        .route("/alarms/{id}", get(telemetry::alarm))
        .route("/alarms/{id}/ack", post(telemetry::ack))
        .route(
            "/geofences",
            get(telemetry::fences).post(telemetry::add_fence),
        )
        .route("/geofences/events", get(telemetry::fence_events))
        .route(
            "/geofences/{id}",
            axum::routing::delete(telemetry::delete_fence),
        )
        .route("/sessions/current", axum::routing::delete(people::logout))
        .route("/me", get(people::me))
        .route("/users", get(people::list_users).post(people::add_user))
        .route("/users/{name}", axum::routing::patch(people::update_user))
        .route("/audit", get(people::audit_log))
        .route("/officers", get(people::list_officers))
        .route(
            "/officers/{badge}",
            get(people::get_officer).put(people::put_officer),
        )
        .route("/recorders/{device}/checkout", post(people::checkout))
        .route("/recorders/{device}/return", post(people::return_recorder))
        .route("/checkouts", get(people::checkouts))
        .route("/cases", get(cases::list).post(cases::create))
        .route("/cases/{id}", get(cases::get_one))
        .route("/cases/{id}/status", post(cases::set_status))
        .route("/cases/{id}/history", get(cases::history))
        .route("/cases/{id}/steps", get(cases::steps).post(cases::add_step))
        .route(
            "/cases/{id}/steps/{step}/explanations",
            post(cases::explain),
        )
        .route("/cases/{id}/links", get(cases::links).post(cases::link))
        .route(
            "/cases/{id}/links/{evidence}",
            axum::routing::delete(cases::unlink),
        )
        .route("/cases/{id}/coverage", get(cases::coverage))
        .route("/cases/{id}/export", post(export::export))
        .route("/requests", get(requests::list).post(requests::create))
        .route("/requests/{id}", get(requests::get_one))
        .route("/requests/{id}/approve", post(requests::approve))
        .route("/requests/{id}/refuse", post(requests::refuse))
        .route("/requests/{id}/withdraw", post(requests::withdraw))
        .layer(auth)
        // Logging in is how a session starts.
        .route("/sessions", post(people::login))
        // The public ledger: proofs for outside verifiers need no credentials.
        .route("/ledger/proof/inclusion", get(ledger::inclusion))
        .route("/ledger/proof/consistency", get(ledger::consistency))
        // Called by an external MQTT broker (EMQX HTTP authentication and authorization).
        .route("/mqtt/auth", post(telemetry::broker_auth))
        .route("/mqtt/acl", post(telemetry::broker_acl))
        // It describes the API; it holds no data.
        .route("/openapi.json", get(openapi::document));
    Router::new()
        .route("/ledger/checkpoint", get(ledger::checkpoint))
        .route("/ledger/tile/{*rest}", get(ledger::tile))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .fallback(not_found)
        .layer(TraceLayer::new_for_http())
}

/// Serves `router` on `listener` until `shutdown` resolves, then waits for requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// The principal an MQTT login names, if its credential is valid: a station, else a recorder.
pub(crate) async fn mqtt_principal(
    s: &ApiState,
    username: &str,
    password: &str,
) -> Result<custody_mqtt::Principal, String> {
    if let Ok(cred) = custody_core::StationCredential::from_parts(username, password)
        && let Ok(id) = s.stations.authenticate_quietly(&cred).await
    {
        return Ok(custody_mqtt::Principal::Station(id));
    }
    let cred = custody_core::DeviceCredential::from_parts(username, password)?;
    s.devices
        .authenticate(&cred)
        .await
        .map(custody_mqtt::Principal::Device)
        .map_err(|e| e.to_string())
}

/// The principal a user name belongs to (its credential was checked at login by the broker).
pub(crate) async fn mqtt_registered(
    s: &ApiState,
    username: &str,
) -> Option<custody_mqtt::Principal> {
    if let Ok(id) = custody_core::StationId::parse(username)
        && s.stations.get(&id).await.is_ok_and(|v| !v.disabled)
    {
        return Some(custody_mqtt::Principal::Station(id));
    }
    let id = custody_core::DeviceId::parse(username).ok()?;
    s.devices
        .is_active(&id)
        .await
        .ok()
        .filter(|a| *a)
        .map(|_| custody_mqtt::Principal::Device(id))
}

/// Liveness
///
/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    security(()),
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String))
)]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness
///
/// The database and the object store answer.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "service",
    security(()),
    responses(
        (status = 200, description = "`ready`", content_type = "text/plain", body = String),
        (status = 503, description = "a backend does not answer; the message says which", body = ErrorBody),
    )
)]
async fn readyz(State(s): State<ApiState>) -> Result<&'static str, ApiError> {
    s.ingest.ready().await.map_err(|e| {
        tracing::warn!(error = %e, "not ready");
        ApiError::unavailable(format!("not ready: {e}"))
    })?;
    Ok("ready\n")
}

/// Prometheus metrics
///
/// In the OpenMetrics text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    security(()),
    responses((status = 200, description = "the metrics", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String))
)]
async fn metrics(State(s): State<ApiState>) -> Result<impl IntoResponse, ApiError> {
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, &s.registry)
        .map_err(|e| ApiError::internal(format!("encoding metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    ))
}

async fn not_found() -> ApiError {
    ApiError::new(custody_core::ErrorCode::NotFound, "no such route")
}
