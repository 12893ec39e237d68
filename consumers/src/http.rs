//! Health, readiness and metrics of a worker process.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use codigo_common::telemetry::PrometheusHandle;

pub struct Probe {
    pub nats: async_nats::Client,
    pub pool: sqlx::PgPool,
    /// One flag per served job type: its durable consumer is bound.
    pub bound: Vec<(&'static str, Arc<AtomicBool>)>,
    pub metrics: PrometheusHandle,
}

pub fn router(probe: Arc<Probe>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probe)
}

async fn readyz(State(probe): State<Arc<Probe>>) -> impl IntoResponse {
    let mut problems = Vec::new();
    if !codigo_common::nats::is_connected(&probe.nats) {
        problems.push("NATS unreachable".to_owned());
    }
    if !codigo_common::db::ping(&probe.pool).await {
        problems.push("Postgres unreachable".to_owned());
    }
    for (job_type, bound) in &probe.bound {
        if !bound.load(Ordering::Relaxed) {
            problems.push(format!("consumer for {job_type} not bound"));
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("; "))
    }
}

async fn metrics(State(probe): State<Arc<Probe>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        probe.metrics.render(),
    )
}
