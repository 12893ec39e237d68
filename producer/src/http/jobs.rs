//! The jobs API: submit one job or a batch in the `{type, payload}` format, read a job's
//! status, list the job types.
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use codigo_schemas::registry;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::Submission;
use super::openapi::{
    BatchProblems, IngestProblems, JobProblems, JobStatusProblems, JsonBodyProblems,
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
            "{}: {e}; allowed fields are type, payload and idempotency_key",
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

/// A job's status as recorded by the workers.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "job id returned at submission")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "the job's status", body = JobStatus),
        JobStatusProblems,
    ))]
pub(super) async fn get_job(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<JobStatus>, Problem> {
    let not_found = || {
        Problem::not_found(format!(
            "no job {id} for this tenant yet; jobs appear once a worker has started them"
        ))
    };
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    match store::job_status(&state.pool, caller.tenant(), id).await {
        Ok(Some(status)) => Ok(Json(status)),
        Ok(None) => Err(not_found()),
        Err(error) => {
            JobStatusQueryFailed { error: &error }.emit();
            Err(Problem::unavailable(
                "the job store is unreachable; retry shortly",
            ))
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobTypeInfo {
    #[serde(rename = "type")]
    pub job_type: &'static str,
    pub version: u32,
    /// JSON Schema of the payload.
    #[schema(value_type = Object)]
    pub schema: Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobTypes {
    pub job_types: Vec<JobTypeInfo>,
    /// JSON Schema of the envelope on the work stream.
    #[schema(value_type = Object)]
    pub envelope: Value,
}

/// Registered job types with their JSON Schemas.
#[utoipa::path(get, path = "/v1/job-types", tag = "jobs",
    responses((status = 200, description = "registered job types", body = JobTypes)))]
pub(super) async fn job_types() -> Json<JobTypes> {
    Json(JobTypes {
        job_types: registry()
            .job_types()
            .map(|t| JobTypeInfo {
                job_type: t.name,
                version: t.version,
                schema: t.schema.clone(),
            })
            .collect(),
        envelope: registry().envelope_schema().clone(),
    })
}
