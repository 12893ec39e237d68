//! The jobs API: submit one job or a batch in the `{type, payload}` format, read a job's
//! status, list the job types.
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use codigo_common::contract::JobState;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::Submission;
use super::middleware::Admission;
use super::openapi::{
    BatchProblems, CancelProblems, IngestProblems, JobProblems, JobStatusProblems, JsonBodyProblems,
};
use super::AppState;
use crate::auth::Caller;
use crate::body::refuse_nul;
use crate::events::JobStatusQueryFailed;
use crate::ingest::{rejected, BatchAccepted, Ingest, JobAccepted, JobRequest};
use crate::problem::Problem;
use crate::publish::NewJob;
use crate::store::{self, JobStatus};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Up to `CODIGO_MAX_BATCH_ITEMS` (default 1000) jobs.
    #[schema(value_type = Vec<JobRequest>)]
    pub jobs: Vec<Value>,
}

fn idempotency_header(headers: &HeaderMap) -> Result<Option<&str>, Problem> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map_err(|_| Problem::invalid_request("the Idempotency-Key header must be ASCII"))
        })
        .transpose()
}

/// Reads one job request (the body, or the batch item at `pointer`); the Idempotency-Key
/// header, if any, must agree with the body's key.
fn parse_job_request(
    value: Value,
    header_key: Option<&str>,
    pointer: &str,
) -> Result<JobRequest, Problem> {
    refuse_nul(&value, pointer)?;
    if header_key.is_some_and(|key| key.contains('\0')) {
        return Err(Problem::nul_character("Idempotency-Key header".into()));
    }
    if !value.is_object() {
        return Err(Problem::invalid_request(format!(
            "{} must be a JSON object with `type` and `payload`",
            if pointer.is_empty() {
                "the body"
            } else {
                pointer
            }
        )));
    }
    let mut request = serde_json::from_value::<JobRequest>(value).map_err(|e| {
        Problem::invalid_request(format!(
            "{}: {e}; allowed fields are type, payload, idempotency_key, run_at, delay, expires_at, ttl and callback_url",
            if pointer.is_empty() { "body" } else { pointer }
        ))
    })?;
    request.idempotency_key = match (request.idempotency_key.take(), header_key) {
        (Some(body), Some(header)) if body != header => {
            return Err(Problem::invalid_request(
                "the Idempotency-Key header and the body's idempotency_key differ; send one",
            ))
        }
        (Some(key), _) => Some(key),
        (None, header) => header.map(str::to_owned),
    };
    Ok(request)
}

/// One job request read and checked; a refused one is counted under the type it claims.
fn check_job(
    ingest: &Ingest,
    caller: &Caller,
    value: Value,
    header_key: Option<&str>,
    pointer: &str,
) -> Result<NewJob, Problem> {
    let _span = codigo_common::telemetry::detail_span(|| tracing::info_span!("validate")).entered();
    let claimed = value
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let request =
        parse_job_request(value, header_key, pointer).map_err(|p| rejected(&claimed, p))?;
    ingest.check(caller, request, &format!("{pointer}/payload"))
}

/// Submit one job.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    request_body = JobRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "alternative to idempotency_key")),
    security(("api_key" = [])),
    responses(
        (status = 202, description = "stored by JetStream", body = JobAccepted),
        JobProblems, JsonBodyProblems, IngestProblems,
    ))]
pub(super) async fn submit_job(
    submission: Submission,
) -> Result<(StatusCode, Json<JobAccepted>), Problem> {
    let Submission { state, caller, .. } = &submission;
    caller.charge(1)?;
    let value = submission.json()?;
    let header_key = idempotency_header(&submission.headers)?;
    let job = check_job(&state.ingest, caller, value, header_key, "")?;
    let accepted = state.ingest.publish(caller, job).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Submit up to 1000 jobs at once; each item succeeds or fails on its own.
#[utoipa::path(post, path = "/v1/jobs/batch", tag = "jobs",
    request_body = BatchRequest,
    security(("api_key" = [])),
    responses(
        (status = 202, description = "per-item results, in order", body = BatchAccepted),
        BatchProblems, JsonBodyProblems, IngestProblems,
    ))]
pub(super) async fn submit_batch(
    submission: Submission,
) -> Result<(StatusCode, Json<BatchAccepted>), Problem> {
    let Submission { state, caller, .. } = &submission;
    let batch: BatchRequest = serde_json::from_value(submission.json()?).map_err(|e| {
        Problem::invalid_request(format!(
            "{e}; a batch is {{\"jobs\": [{{\"type\": ..., \"payload\": ...}}, ...]}}"
        ))
    })?;
    state.ingest.admit_batch(caller, batch.jobs.len())?;
    let items = batch
        .jobs
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            check_job(&state.ingest, caller, item, None, &format!("/jobs/{index}"))
        })
        .collect();
    let results = state.ingest.publish_batch(caller, items).await;
    Ok((StatusCode::ACCEPTED, Json(results)))
}

/// Longest `?wait=` honoured; a longer one is cut to it.
const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize, IntoParams)]
pub(super) struct StatusQuery {
    /// Hold the request until the job reaches a final state (`succeeded`, `dead_lettered`,
    /// `cancelled`, `expired`) or this much time has passed (`30s`, `500ms`; a number is
    /// seconds; at most 60 s), then answer its state as it is.
    wait: Option<String>,
}

fn wait_limit(query: &StatusQuery) -> Result<Option<Duration>, Problem> {
    let Some(raw) = query.wait.as_deref() else {
        return Ok(None);
    };
    let limit = match raw.trim().parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => {
            Duration::from_secs_f64(seconds.min(MAX_WAIT.as_secs_f64()))
        }
        Ok(_) => return Err(wait_refused(raw)),
        Err(_) => humantime::parse_duration(raw.trim()).map_err(|_| wait_refused(raw))?,
    };
    Ok(Some(limit.min(MAX_WAIT)))
}

fn wait_refused(raw: &str) -> Problem {
    Problem::invalid_request(format!(
        "wait={raw:?} is not a duration; write it like wait=30s or wait=30 (seconds), at most 60s"
    ))
}

/// A failed read or write of the jobs table, counted; the client may retry.
fn job_not_found(id: impl std::fmt::Display) -> Problem {
    Problem::not_found(format!(
        "no job {id} for this tenant; check the id returned at submission and the API key's \
         tenant"
    ))
}

fn store_unreachable(error: sqlx::Error) -> Problem {
    JobStatusQueryFailed { error: &error }.emit();
    Problem::unavailable("the job store is unreachable; retry shortly")
}

/// A job's state: from Postgres from its acceptance on (the gateway writes a `queued` row
/// before its 202, workers the rest), from the schedules stream while a delayed job waits;
/// `None` when neither knows it (or it is another tenant's).
async fn read_status(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<Option<JobStatus>, Problem> {
    if let Some(status) = store::job_status(&state.pool, caller.tenant(), id)
        .await
        .map_err(store_unreachable)?
    {
        return Ok(Some(status));
    }
    match state.ingest.scheduled(id).await {
        // Another tenant's job is indistinguishable from a missing one.
        Ok(Some(waiting)) if waiting.envelope.tenant.as_deref() == Some(caller.tenant()) => {
            Ok(Some(JobStatus::scheduled(waiting.envelope)))
        }
        Ok(_) => Ok(None),
        Err(error) => Err(Problem::unavailable(error.to_string())),
    }
}

fn is_final(status: &JobStatus) -> bool {
    status
        .status
        .parse::<JobState>()
        .is_ok_and(JobState::is_final)
}

/// A job's status as recorded by the workers; with `?wait=`, once it is final or the wait
/// is over.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "job id returned at submission"), StatusQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "the job's status", body = JobStatus),
        JobStatusProblems,
    ))]
pub(super) async fn get_job(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Extension(admission): Extension<Admission>,
    Path(id): Path<String>,
    Query(query): Query<StatusQuery>,
) -> Result<Json<JobStatus>, Problem> {
    let wait = wait_limit(&query)?;
    let id = Uuid::parse_str(&id).map_err(|_| job_not_found(&id))?;
    // Boxed: a waiting request keeps this handler's future alive for up to a minute, and the
    // store's futures would otherwise make every one of them as large as the largest.
    let status = Box::pin(read_status(&state, &caller, id)).await?;
    let Some(limit) = wait.filter(|_| !status.as_ref().is_some_and(is_final)) else {
        return status.map(Json).ok_or_else(|| job_not_found(id));
    };
    // A job not known yet may be queued and not started: it is waited for too.
    admission.release();
    state
        .waiters
        .wait(id, limit)
        .await
        .map_err(|_| Problem::overloaded())?;
    Box::pin(read_status(&state, &caller, id))
        .await?
        .map(Json)
        .ok_or_else(|| job_not_found(id))
}

/// Answer of a cancellation.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobCancelled {
    pub id: Uuid,
    /// `cancelled`: it will not run. `running`: a worker has it; it may still succeed, but
    /// no retry follows.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'static str>,
}

fn cancelled(id: Uuid) -> (StatusCode, Json<JobCancelled>) {
    let answer = JobCancelled {
        id,
        status: JobState::Cancelled.as_str(),
        detail: None,
    };
    (StatusCode::OK, Json(answer))
}

/// Cancel a job no worker has finished. A `queued`, `scheduled` or `retrying` job never
/// runs (again): 200. A `running` job may still complete, but no retry follows: 202.
/// Cancelling again answers the same; a finished job answers 409 with its state.
#[utoipa::path(delete, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "job id returned at submission")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "cancelled: it will not run", body = JobCancelled),
        (status = 202, description = "a worker is running it: it may still complete, and no \
            retry follows", body = JobCancelled),
        CancelProblems,
    ))]
pub(super) async fn cancel_job(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<JobCancelled>), Problem> {
    let id = Uuid::parse_str(&id).map_err(|_| job_not_found(&id))?;
    match store::cancel(&state.pool, caller.tenant(), id)
        .await
        .map_err(store_unreachable)?
    {
        Some(store::Cancellation {
            status: JobState::Running,
            ..
        }) => {
            let answer = JobCancelled {
                id,
                status: JobState::Running.as_str(),
                detail: Some(
                    "a worker is running the job: it may still complete, but it will not be \
                     retried",
                ),
            };
            return Ok((StatusCode::ACCEPTED, Json(answer)));
        }
        Some(cancellation) => {
            remove_cancelled(&state, id, &cancellation).await;
            return Ok(cancelled(id));
        }
        None => {}
    }
    let known = |status: JobStatus| match status.status.as_str() {
        "cancelled" => Ok(cancelled(id)),
        other => Err(Problem::job_not_cancellable(other)),
    };
    if let Some(status) = store::job_status(&state.pool, caller.tenant(), id)
        .await
        .map_err(store_unreachable)?
    {
        return known(status);
    }
    match cancel_delayed(&state, &caller, id).await? {
        RowlessCancel::Cancelled => Ok(cancelled(id)),
        RowlessCancel::Known(status) => known(*status),
        RowlessCancel::Unknown => Err(job_not_found(id)),
    }
}

/// Takes a cancelled job's message out of the stream it waits in. Best effort: the worker
/// that would take it skips it all the same; removing it spares the wait for its turn.
async fn remove_cancelled(state: &AppState, id: Uuid, cancellation: &store::Cancellation) {
    let removed = match (cancellation.stream_sequence, cancellation.run_at) {
        (Some(sequence), _) => match u64::try_from(sequence) {
            Ok(sequence) => state.ingest.unqueue(sequence).await.map(drop),
            Err(_) => Ok(()),
        },
        // Delayed: waiting in the schedules stream, or due and queued without a known sequence.
        (None, Some(_)) => match state.ingest.scheduled(id).await {
            Ok(Some(waiting)) => state.ingest.unschedule(waiting.sequence).await.map(drop),
            other => other.map(drop),
        },
        (None, None) => Ok(()),
    };
    if let Err(error) = removed {
        tracing::info!(%error, job_id = %id,
            "a cancelled job stays in its stream until a worker meets it and skips it");
    }
}

/// What cancelling a job that has no row came to.
enum RowlessCancel {
    /// No delayed job of the caller's tenant waits under that id.
    Unknown,
    /// Taken out of the schedules stream: it will not run.
    Cancelled,
    /// It has a row after all: a worker or a concurrent cancellation wrote it meanwhile.
    Known(Box<JobStatus>),
}

/// Cancels a delayed job that waits for its time with no row (its gateway could not write
/// one).
async fn cancel_delayed(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<RowlessCancel, Problem> {
    let waiting = match state.ingest.scheduled(id).await {
        Ok(Some(waiting)) if waiting.envelope.tenant.as_deref() == Some(caller.tenant()) => waiting,
        Ok(_) => return Ok(RowlessCancel::Unknown),
        Err(error) => return Err(Problem::unavailable(error.to_string())),
    };
    // The row first: once the schedule is gone, nothing else would tell that it was
    // cancelled. A row that is there already is a concurrent cancellation or a worker's.
    if !store::record_cancelled(&state.pool, &waiting.envelope)
        .await
        .map_err(store_unreachable)?
    {
        let status = store::job_status(&state.pool, caller.tenant(), id)
            .await
            .map_err(store_unreachable)?;
        return Ok(status.map_or(RowlessCancel::Unknown, |status| {
            RowlessCancel::Known(Box::new(status))
        }));
    }
    let removed = state.ingest.unschedule(waiting.sequence).await;
    if !matches!(removed, Ok(true)) {
        // Fell due meanwhile (it runs), or unreachable (it may run): the row must not say
        // otherwise.
        store::undo_cancelled(&state.pool, id)
            .await
            .map_err(store_unreachable)?;
    }
    match removed {
        Ok(true) => Ok(RowlessCancel::Cancelled),
        Ok(false) => Err(Problem::job_not_cancellable("queued")),
        Err(error) => Err(Problem::unavailable(format!(
            "{error}; nothing was cancelled"
        ))),
    }
}
