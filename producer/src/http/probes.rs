//! Liveness, readiness and the Prometheus page: outside admission, never shed.
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;

use super::AppState;
use crate::problem::Problem;

pub(super) async fn healthz() -> &'static str {
    "ok"
}

pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Result<&'static str, Problem> {
    if state.topology_ready.load(Ordering::Relaxed) && state.ingest.ready().await {
        Ok("ready")
    } else {
        Err(Problem::unavailable(
            "JetStream is unreachable or the streams are not set up yet",
        ))
    }
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
}
