//! The HTTP face of the ingest gateway: the route table, what every request passes on its way
//! in, and the routes themselves. Client mistakes map to 4xx problems, once; nothing a client
//! sends can produce a 5xx. Checking and publishing jobs is the ingest service's business.
mod events;
mod extract;
mod job_types;
mod jobs;
mod middleware;
mod openapi;
mod probes;
mod schedules;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use codigo_common::declarations::Declarations;
use codigo_common::telemetry::PrometheusHandle;
use codigo_schemas::Catalog;
use sqlx::PgPool;

pub use crate::auth::LOCAL_TENANT;
pub use crate::body::MAX_JSON_DEPTH;
pub use crate::ingest::JobRequest;
pub use openapi::ApiDoc;

use crate::auth::ApiKeys;
use crate::ingest::Ingest;
use crate::problem::Problem;

pub struct AppState {
    pub ingest: Ingest,
    /// `None` when auth is disabled.
    pub keys: Option<ApiKeys>,
    pub pool: PgPool,
    pub metrics: PrometheusHandle,
    pub max_body_bytes: usize,
    /// Time a client has to send a body once its headers are in.
    pub request_read_timeout: Duration,
    /// Permits for API requests in progress; none left means shed with 503.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Set once the streams are known to exist.
    pub topology_ready: Arc<AtomicBool>,
    /// Built-in and declared job types, kept equal to the job-type bucket.
    pub catalog: Arc<Catalog>,
    /// The job-type bucket, once opened.
    pub declarations: Arc<OnceLock<Declarations>>,
    /// Requests waiting for their job's final state.
    pub waiters: crate::waiters::Waiters,
}

impl AppState {
    fn declarations(&self) -> Result<&Declarations, Problem> {
        self.declarations.get().ok_or_else(|| {
            Problem::unavailable("the job-type bucket is not reachable yet; retry shortly")
        })
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.max_body_bytes;
    let api = Router::new()
        .route("/v1/jobs", post(jobs::submit_job))
        .route("/v1/jobs/batch", post(jobs::submit_batch))
        .route("/v1/jobs/{id}", get(jobs::get_job).delete(jobs::cancel_job))
        .route("/v1/events", post(events::submit_events))
        .route(
            "/v1/job-types/{type}",
            axum::routing::put(job_types::put).delete(job_types::delete),
        )
        .route("/v1/schedules", get(schedules::list))
        .route(
            "/v1/schedules/{name}",
            axum::routing::put(schedules::put)
                .get(schedules::show)
                .delete(schedules::delete),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::admit,
        ));
    Router::new()
        .merge(api)
        .route("/v1/job-types", get(job_types::list))
        .route("/v1/job-types/{type}", get(job_types::show))
        .route("/openapi.json", get(openapi::openapi))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn(middleware::observe))
        .with_state(state)
}

async fn unknown_route() -> Problem {
    Problem::not_found("no such route; see /openapi.json")
}
