//! The schedules API: recurring jobs of the caller's tenant, each a cron expression and a job
//! template. A schedule is checked as its jobs will be (type, the key's scope, the payload's
//! schema) before it is stored.
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::extract::Submission;
use super::openapi::{JsonBodyProblems, ScheduleProblems};
use super::AppState;
use crate::auth::Caller;
use crate::body::refuse_nul;
use crate::ingest::JobRequest;
use crate::problem::Problem;
use crate::recurring::{self, Cron, Schedule, ScheduleSpec};

#[derive(Debug, Serialize, ToSchema)]
pub struct Schedules {
    pub schedules: Vec<Schedule>,
}

fn store_unreachable(error: sqlx::Error) -> Problem {
    tracing::warn!(%error, "reading or writing schedules failed");
    Problem::unavailable("Postgres is unreachable; nothing was changed, retry shortly")
}

fn no_such_schedule(name: &str) -> Problem {
    Problem::not_found(format!(
        "no schedule {name:?} for this tenant; GET /v1/schedules lists them"
    ))
}

/// Creates or replaces a schedule of the caller's tenant. Its next tick is the first after
/// now; each tick submits one job, whatever the number of producer replicas.
#[utoipa::path(put, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "1 to 128 letters, digits, '.', '_' or '-'")),
    request_body = ScheduleSpec,
    security(("api_key" = [])),
    responses(
        (status = 200, description = "stored, with its next tick", body = Schedule),
        ScheduleProblems, JsonBodyProblems,
    ))]
pub(super) async fn put(
    Path(name): Path<String>,
    submission: Submission,
) -> Result<Json<Schedule>, Problem> {
    let Submission { state, caller, .. } = &submission;
    recurring::check_name(&name).map_err(Problem::invalid_request)?;
    let body = submission.json()?;
    refuse_nul(&body, "")?;
    let spec: ScheduleSpec = serde_json::from_value(body).map_err(|e| {
        Problem::invalid_request(format!(
            "not a schedule: {e}; send cron, timezone (optional), catch_up (optional) and \
             job: {{type, payload}}"
        ))
    })?;
    let cron = Cron::parse(&spec.cron, &spec.timezone).map_err(Problem::invalid_request)?;
    // The jobs it will submit must pass now what they will have to pass then.
    state.ingest.check(
        caller,
        JobRequest::now(spec.job.job_type.clone(), spec.job.payload.clone(), None),
        "/job/payload",
    )?;
    let next_tick = cron
        .next_after(OffsetDateTime::now_utc())
        .map_err(|reason| Problem::invalid_request(format!("cron {:?}: {reason}", spec.cron)))?;
    let stored = recurring::put(&state.pool, caller.tenant(), &name, &spec, next_tick)
        .await
        .map_err(store_unreachable)?;
    tracing::info!(schedule = %name, tenant = caller.tenant(), cron = %spec.cron,
        "schedule stored");
    Ok(Json(stored))
}

/// The caller's tenant's schedules, by name.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules",
    security(("api_key" = [])),
    responses((status = 200, description = "the tenant's schedules", body = Schedules)))]
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Schedules>, Problem> {
    let schedules = recurring::list(&state.pool, caller.tenant())
        .await
        .map_err(store_unreachable)?;
    Ok(Json(Schedules { schedules }))
}

/// One schedule of the caller's tenant.
#[utoipa::path(get, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "schedule name")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "the schedule", body = Schedule),
        (status = 404, description = "no such schedule for this tenant", body = Problem),
    ))]
pub(super) async fn show(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Schedule>, Problem> {
    recurring::get(&state.pool, caller.tenant(), &name)
        .await
        .map_err(store_unreachable)?
        .map(Json)
        .ok_or_else(|| no_such_schedule(&name))
}

/// Deletes a schedule: no tick after this submits a job; jobs already submitted stay.
#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "schedule name")),
    security(("api_key" = [])),
    responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "no such schedule for this tenant", body = Problem),
    ))]
pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, Problem> {
    if recurring::delete(&state.pool, caller.tenant(), &name)
        .await
        .map_err(store_unreachable)?
    {
        tracing::info!(schedule = %name, tenant = caller.tenant(), "schedule deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_such_schedule(&name))
    }
}
