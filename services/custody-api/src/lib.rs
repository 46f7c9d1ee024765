//! The HTTP edge of Custody (axum): the REST API under `/api/v1` (evidence, ledger, stations), `/healthz`, `/readyz` and `/metrics`.
//!
//! Handlers parse and answer; the work is done by service crates (`custody-ingest`). This crate never
//! touches SQL or object storage directly, and turns every error into a response in one place
//! ([`ApiError`]), through the error codes shared with gRPC.

mod auth;
mod error;
mod evidence;
mod ledger;
mod stations;

pub use auth::Actor;
pub use error::ApiError;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use custody_ingest::{Ingest, Stations};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub ingest: Ingest,
    pub stations: Stations,
    pub registry: Arc<Registry>,
}

/// The whole HTTP API.
pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/evidence", get(evidence::list))
        .route("/evidence/{id}", get(evidence::get_one))
        .route("/evidence/{id}/content", get(evidence::content))
        .route("/evidence/{id}/history", get(ledger::history))
        .route("/evidence/{id}/receipt", get(ledger::receipt))
        .route("/stations", get(stations::list))
        .route("/stations/{id}", get(stations::get_one))
        .layer(axum::middleware::from_fn(auth::authenticate))
        // The public ledger: proofs for outside verifiers need no credentials.
        .route("/ledger/proof/inclusion", get(ledger::inclusion))
        .route("/ledger/proof/consistency", get(ledger::consistency));
    Router::new()
        .route("/ledger/checkpoint", get(ledger::checkpoint))
        .route("/ledger/tile/{*rest}", get(ledger::tile))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/api/v1", api)
        .fallback(not_found)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
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

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<ApiState>) -> Result<&'static str, ApiError> {
    s.ingest.ready().await.map_err(|e| {
        tracing::warn!(error = %e, "not ready");
        ApiError::unavailable(format!("not ready: {e}"))
    })?;
    Ok("ready\n")
}

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
