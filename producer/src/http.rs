//! Routes of the ingest gateway. Client mistakes map to 4xx problems here, once; nothing a
//! client sends can produce a 5xx.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use codigo_common::telemetry::PrometheusHandle;
use codigo_schemas::registry;
use opentelemetry::propagation::Extractor;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use tracing::Instrument;
use utoipa::{OpenApi, ToSchema};
use uuid::Uuid;

use crate::auth::{ApiKey, ApiKeys, RateRefusal};
use crate::problem::Problem;
use crate::publish::{NewJob, PublishError, Published, Publisher};
use crate::store::{self, JobStatus};

pub struct AppState {
    pub publisher: Publisher,
    /// `None` when auth is disabled.
    pub keys: Option<ApiKeys>,
    pub pool: PgPool,
    pub metrics: PrometheusHandle,
    pub max_body_bytes: usize,
    pub max_batch_items: usize,
    /// Time a client has to send a body once its headers are in.
    pub request_read_timeout: Duration,
    /// Permits for API requests in progress; none left means shed with 503.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Set once the streams are known to exist.
    pub topology_ready: Arc<AtomicBool>,
}

/// Tenant of requests when auth is disabled.
pub const LOCAL_TENANT: &str = "local";

pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.max_body_bytes;
    let api = Router::new()
        .route("/v1/jobs", post(submit_job))
        .route("/v1/jobs/batch", post(submit_batch))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/events", post(crate::cloudevents::submit_events))
        .route_layer(middleware::from_fn_with_state(state.clone(), admit));
    Router::new()
        .merge(api)
        .route("/v1/job-types", get(job_types))
        .route("/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(unknown_route)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

struct HttpHeaders<'a>(&'a HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// One span, one request counter and one latency sample per request, labelled by route
/// pattern (never the raw path) and a bounded set of methods.
async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "OTHER",
    };
    let span = tracing::info_span!("http_request", http.method = method, http.route = %route,
        http.status_code = tracing::field::Empty);
    codigo_common::telemetry::link_to_parent(&span, &HttpHeaders(request.headers()));
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status();
    span.record("http.status_code", status.as_u16());
    if status.is_server_error() {
        tracing::error!(parent: &span, %route, status = status.as_u16(), "request failed");
    }
    metrics::counter!("codigo_gateway_requests_total",
        "route" => route.clone(), "method" => method, "status" => status.as_u16().to_string())
    .increment(1);
    metrics::histogram!("codigo_gateway_request_duration_seconds",
        "route" => route, "method" => method)
    .record(started.elapsed().as_secs_f64());
    response
}

/// What every API request passes before its body is read: a free slot (else 503 and
/// Retry-After, never an endless queue), a valid API key from the headers (else 401, and the
/// body is never read), and the whole body within the read timeout (else 408) and the size
/// limit (else 413).
async fn admit(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    // Shed requests are counted by `observe`, as 503s of their route.
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        return Problem::overloaded().into_response();
    };
    if let Err(problem) = authenticate(&state, request.headers()) {
        return problem.into_response();
    }
    let (parts, body) = request.into_parts();
    let limit = state.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Problem::payload_too_large(limit).into_response();
    }
    let timeout = state.request_read_timeout;
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => return Problem::request_timeout(timeout.as_secs()).into_response(),
        Ok(Err(error)) => {
            let too_large = std::error::Error::source(&error)
                .is_some_and(|e| e.is::<http_body_util::LengthLimitError>());
            return if too_large {
                Problem::payload_too_large(limit).into_response()
            } else {
                Problem::malformed_json(format!("the request body could not be read: {error}"))
                    .into_response()
            };
        }
        Ok(Ok(bytes)) => bytes,
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

pub(crate) struct Caller<'a> {
    pub(crate) tenant: &'a str,
    key: Option<&'a ApiKey>,
}

impl Caller<'_> {
    /// Charges `jobs` to the key's rate, all or nothing.
    pub(crate) fn charge(&self, jobs: usize) -> Result<(), Problem> {
        let Some(key) = self.key else {
            return Ok(());
        };
        key.charge(jobs).map_err(|refusal| match refusal {
            RateRefusal::Wait(wait) => {
                Problem::rate_limited(wait.as_secs_f64().ceil().max(1.0) as u64)
            }
            RateRefusal::OverBurst(burst) => Problem::batch_over_burst(jobs, burst),
        })
    }

    fn may_submit(&self, job_type: &str) -> Result<(), Problem> {
        match self.key {
            Some(key) if !key.allows(job_type) => Err(Problem::forbidden_job_type(job_type)),
            _ => Ok(()),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 9110).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub(crate) fn authenticate<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
) -> Result<Caller<'a>, Problem> {
    let Some(keys) = &state.keys else {
        return Ok(Caller {
            tenant: LOCAL_TENANT,
            key: None,
        });
    };
    let token = bearer_token(headers).ok_or_else(Problem::unauthorized)?;
    let key = keys.find(token).ok_or_else(Problem::unauthorized)?;
    Ok(Caller {
        tenant: &key.tenant,
        key: Some(key),
    })
}

/// The media type of a `Content-Type` header without its parameters, lower-cased.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase(),
    )
}

/// `application/json` or any `application/*+json` type.
pub(crate) fn is_json_media_type(essence: &str) -> bool {
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn require_json(headers: &HeaderMap) -> Result<(), Problem> {
    if media_type(headers).is_some_and(|essence| is_json_media_type(&essence)) {
        Ok(())
    } else {
        Err(Problem::unsupported_media_type())
    }
}

/// Deepest nesting of objects and arrays a body may have. Checked on the raw bytes before
/// parsing, so a hostile body never reaches the parser's recursion or the schema validator.
pub const MAX_JSON_DEPTH: usize = 32;

/// Whether `bytes` nests objects and arrays deeper than `limit` (brackets inside strings do
/// not count). Malformed input is left to the parser.
pub(crate) fn nests_deeper_than(bytes: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in bytes {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// The body's bytes, or 413 when over the limit.
pub(crate) fn body_bytes(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Bytes, Problem> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::payload_too_large(limit)
        } else {
            Problem::malformed_json(format!("the request body could not be read: {rejection}"))
        }
    })
}

/// Parses a JSON body after checking its nesting depth.
pub(crate) fn parse_json(bytes: &[u8]) -> Result<Value, Problem> {
    if nests_deeper_than(bytes, MAX_JSON_DEPTH) {
        return Err(Problem::too_deeply_nested(MAX_JSON_DEPTH));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        Problem::malformed_json(format!(
            "the body is not valid JSON: {e}; send a JSON object"
        ))
    })
}

/// The JSON pointer (RFC 6901) of the first string or member name holding U+0000, which
/// Postgres cannot store; `pointer` locates `value` in the body.
pub(crate) fn find_nul(value: &Value, pointer: &str) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then(|| pointer.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| find_nul(item, &format!("{pointer}/{index}"))),
        Value::Object(members) => members.iter().find_map(|(name, member)| {
            let at = format!("{pointer}/{}", name.replace('~', "~0").replace('/', "~1"));
            if name.contains('\0') {
                Some(at)
            } else {
                find_nul(member, &at)
            }
        }),
        _ => None,
    }
}

/// 422 with the pointer when `value` holds U+0000 anywhere.
pub(crate) fn refuse_nul(value: &Value, pointer: &str) -> Result<(), Problem> {
    match find_nul(value, pointer) {
        Some(at) => Err(Problem::nul_character(at)),
        None => Ok(()),
    }
}

fn read_body(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Value, Problem> {
    parse_json(&body_bytes(body, limit)?)
}

/// Body of `POST /v1/jobs` and of each item of a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// A registered job type (see `GET /v1/job-types`).
    #[serde(rename = "type")]
    pub job_type: String,
    /// Arguments, validated against the job type's JSON Schema.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Makes resubmissions safe: the same key (per tenant and type) yields the same job id.
    pub idempotency_key: Option<String>,
}

/// Label value for metrics: registered types as they are, anything else folded into one.
fn type_label(job_type: &str) -> String {
    if registry().job_type(job_type).is_ok() {
        job_type.to_owned()
    } else {
        "unknown".to_owned()
    }
}

fn record_published(job_type: &str, result: &'static str) {
    metrics::counter!("codigo_gateway_jobs_published_total",
        "job_type" => type_label(job_type), "result" => result)
    .increment(1);
}

/// Counts a request refused before publishing; `job_type` may be anything the client sent.
pub(crate) fn rejected(job_type: &str, problem: Problem) -> Problem {
    record_published(job_type, "rejected");
    problem
}

/// Validates one job request (`/v1/jobs` body or batch item); `pointer` locates it in the
/// body for error messages.
fn validate_job(
    caller: &Caller<'_>,
    value: Value,
    header_key: Option<&str>,
    pointer: &str,
) -> Result<NewJob, Problem> {
    let _span = codigo_common::telemetry::detail_span(|| tracing::info_span!("validate")).entered();
    let job_type_hint = value
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    if let Err(problem) = refuse_nul(&value, pointer) {
        return Err(rejected(&job_type_hint, problem));
    }
    if header_key.is_some_and(|key| key.contains('\0')) {
        return Err(rejected(
            &job_type_hint,
            Problem::nul_character("Idempotency-Key header".into()),
        ));
    }
    if !value.is_object() {
        return Err(rejected(
            &job_type_hint,
            Problem::invalid_request(format!(
                "{} must be a JSON object with `type` and `payload`",
                if pointer.is_empty() {
                    "the body"
                } else {
                    pointer
                }
            )),
        ));
    }
    let parsed = serde_json::from_value::<JobRequest>(value)
        .map_err(|e| {
            Problem::invalid_request(format!(
                "{}: {e}; allowed fields are type, payload and idempotency_key",
                if pointer.is_empty() { "body" } else { pointer }
            ))
        })
        .and_then(|mut request| {
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
        });
    match parsed {
        Ok(request) => check_job(caller, request, &format!("{pointer}/payload")),
        Err(problem) => Err(rejected(&job_type_hint, problem)),
    }
}

/// The checks every job passes, whichever route it came in by: a registered type (so NATS
/// subjects are only ever built from registered names), the key's scope, the idempotency
/// key's length and the payload's schema. `payload_pointer` locates the payload in the body.
pub(crate) fn check_job(
    caller: &Caller<'_>,
    request: JobRequest,
    payload_pointer: &str,
) -> Result<NewJob, Problem> {
    let requested_type = request.job_type.clone();
    let outcome = (|| {
        let job_type = registry()
            .job_type(&request.job_type)
            .map_err(|_| Problem::unknown_job_type(&request.job_type))?;
        caller.may_submit(job_type.name)?;
        if let Some(key) = &request.idempotency_key {
            if key.is_empty() || key.len() > 256 {
                return Err(Problem::invalid_request(
                    "idempotency_key must be 1 to 256 characters",
                ));
            }
        }
        job_type
            .validate(&request.payload)
            .map_err(|e| Problem::from_schema_error(e, payload_pointer))?;
        Ok(NewJob {
            job_type: job_type.name.to_owned(),
            payload: request.payload,
            idempotency_key: request.idempotency_key,
            event_source: None,
        })
    })();
    outcome.map_err(|problem| rejected(&requested_type, problem))
}

/// Answer of an accepted job.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobAccepted {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub job_type: String,
    /// Always `queued`: stored by JetStream, waiting for a worker.
    pub status: &'static str,
    /// True when this submission repeated an earlier one (same idempotency key).
    pub duplicate: bool,
}

fn accepted(job_type: String, published: Published) -> JobAccepted {
    record_published(
        &job_type,
        if published.duplicate {
            "duplicate"
        } else {
            "accepted"
        },
    );
    JobAccepted {
        id: published.id,
        job_type,
        status: "queued",
        duplicate: published.duplicate,
    }
}

fn publish_problem(job_type: &str, error: &PublishError) -> Problem {
    match error {
        // The client's doing, never a 503: no retry can make it fit.
        PublishError::TooLarge { limit } => {
            record_published(job_type, "rejected");
            Problem::message_too_large(*limit)
        }
        PublishError::QueueFull(_) => {
            record_published(job_type, "error");
            tracing::warn!(%error, job_type, "work stream full; job refused");
            Problem::queue_full()
        }
        PublishError::Disconnected | PublishError::NotStored(_) => {
            record_published(job_type, "error");
            tracing::warn!(%error, job_type, "publish failed");
            Problem::unavailable(format!("{error}; nothing was stored"))
        }
    }
}

/// Publishes one validated job: `202` once JetStream stored it, `503` otherwise.
pub(crate) async fn publish_one(
    state: &AppState,
    caller: &Caller<'_>,
    job: NewJob,
) -> Result<JobAccepted, Problem> {
    let job_type = job.job_type.clone();
    match state.publisher.publish(caller.tenant, job).await {
        Ok(published) => Ok(accepted(job_type, published)),
        Err(error) => Err(publish_problem(&job_type, &error)),
    }
}

/// A batch is refused whole while JetStream is unreachable: answering per item would only
/// repeat the same 503.
pub(crate) fn require_jetstream(state: &AppState) -> Result<(), Problem> {
    if state.publisher.is_connected() {
        Ok(())
    } else {
        Err(Problem::unavailable(
            "JetStream is unreachable; nothing was stored, retry shortly",
        ))
    }
}

/// Checks a batch's length against `CODIGO_MAX_BATCH_ITEMS`.
pub(crate) fn check_batch_len(state: &AppState, len: usize) -> Result<(), Problem> {
    if len == 0 || len > state.max_batch_items {
        return Err(Problem::invalid_request(format!(
            "a batch holds 1 to {} jobs; this one has {len}",
            state.max_batch_items
        )));
    }
    Ok(())
}

/// Publishes the valid items of a batch together and reports every item, in order: the
/// items that failed validation as `rejected`, the others `queued` or `error`.
pub(crate) async fn publish_batch(
    state: &AppState,
    caller: &Caller<'_>,
    items: Vec<Result<NewJob, Problem>>,
) -> BatchAccepted {
    let mut results: Vec<Option<BatchItemResult>> = Vec::with_capacity(items.len());
    let mut indices = Vec::new();
    let mut jobs = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        match item {
            Ok(job) => {
                indices.push(index);
                jobs.push(job);
                results.push(None);
            }
            Err(problem) => results.push(Some(BatchItemResult::failed(index, "rejected", problem))),
        }
    }
    let job_types: Vec<String> = jobs.iter().map(|job| job.job_type.clone()).collect();
    let outcomes = state.publisher.publish_many(caller.tenant, jobs).await;
    for ((index, job_type), outcome) in indices.into_iter().zip(job_types).zip(outcomes) {
        results[index] = Some(match outcome {
            Ok(published) => {
                let job = accepted(job_type, published);
                BatchItemResult {
                    index,
                    status: "queued",
                    id: Some(job.id),
                    job_type: Some(job.job_type),
                    duplicate: Some(job.duplicate),
                    error: None,
                }
            }
            Err(error) => {
                // Too large is the client's doing, like a validation failure.
                let status = if matches!(error, PublishError::TooLarge { .. }) {
                    "rejected"
                } else {
                    "error"
                };
                BatchItemResult::failed(index, status, publish_problem(&job_type, &error))
            }
        });
    }
    BatchAccepted {
        results: results.into_iter().flatten().collect(),
    }
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

/// Submit one job.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    request_body = JobRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "alternative to idempotency_key")),
    security(("api_key" = [])),
    responses(
        (status = 202, description = "stored by JetStream", body = JobAccepted),
        (status = 400, description = "malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "missing or invalid API key", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "job type outside the key's scope", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "body not received within CODIGO_REQUEST_READ_TIMEOUT_SECS", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "body over CODIGO_MAX_BODY_BYTES, or a job whose message does not fit the NATS server's max_payload", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "unknown job type, schema violation, JSON nested too deeply, or text holding \\u0000 (nul-character, with its pointer)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "over the key's rate, which counts jobs (a batch of N costs N, accepted or refused whole)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "JetStream unavailable (unavailable), work stream full (queue-full) or too many requests in progress (overloaded); nothing stored; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ))]
async fn submit_job(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<JobAccepted>), Problem> {
    let caller = authenticate(&state, &headers)?;
    caller.charge(1)?;
    require_json(&headers)?;
    let value = read_body(body, state.max_body_bytes)?;
    let job = validate_job(&caller, value, idempotency_header(&headers)?, "")?;
    let accepted = publish_one(&state, &caller, job).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// Up to `CODIGO_MAX_BATCH_ITEMS` (default 1000) jobs.
    #[schema(value_type = Vec<JobRequest>)]
    pub jobs: Vec<Value>,
}

/// One item's outcome: `queued` with its id, or `rejected`/`error` with a problem.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItemResult {
    pub index: usize,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAccepted {
    /// One result per submitted item, in order.
    pub results: Vec<BatchItemResult>,
}

impl BatchItemResult {
    fn failed(index: usize, status: &'static str, problem: Problem) -> Self {
        Self {
            index,
            status,
            id: None,
            job_type: None,
            duplicate: None,
            error: Some(problem),
        }
    }
}

/// Submit up to 1000 jobs at once; each item succeeds or fails on its own.
#[utoipa::path(post, path = "/v1/jobs/batch", tag = "jobs",
    request_body = BatchRequest,
    security(("api_key" = [])),
    responses(
        (status = 202, description = "per-item results, in order", body = BatchAccepted),
        (status = 400, description = "malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "missing or invalid API key", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "body not received within CODIGO_REQUEST_READ_TIMEOUT_SECS", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "body over CODIGO_MAX_BODY_BYTES, or a job whose message does not fit the NATS server's max_payload", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "not a batch, too many items, more jobs than the key's burst, or JSON nested too deeply", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "over the key's rate, which counts jobs (a batch of N costs N, accepted or refused whole)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "JetStream unavailable (unavailable), work stream full (queue-full) or too many requests in progress (overloaded); nothing stored; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ))]
async fn submit_batch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<BatchAccepted>), Problem> {
    let caller = authenticate(&state, &headers)?;
    require_json(&headers)?;
    let value = read_body(body, state.max_body_bytes)?;
    let batch: BatchRequest = serde_json::from_value(value).map_err(|e| {
        Problem::invalid_request(format!(
            "{e}; a batch is {{\"jobs\": [{{\"type\": ..., \"payload\": ...}}, ...]}}"
        ))
    })?;
    check_batch_len(&state, batch.jobs.len())?;
    caller.charge(batch.jobs.len())?;
    require_jetstream(&state)?;
    let items = batch
        .jobs
        .into_iter()
        .enumerate()
        .map(|(index, item)| validate_job(&caller, item, None, &format!("/jobs/{index}")))
        .collect();
    let results = publish_batch(&state, &caller, items).await;
    Ok((StatusCode::ACCEPTED, Json(results)))
}

/// A job's status as recorded by the workers.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "job id returned at submission")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "the job's status", body = JobStatus),
        (status = 401, description = "missing or invalid API key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "unknown, another tenant's, or not started yet", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres unavailable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_job(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<JobStatus>, Problem> {
    let caller = authenticate(&state, &headers)?;
    let not_found = || {
        Problem::not_found(format!(
            "no job {id} for this tenant yet; jobs appear once a worker has started them"
        ))
    };
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    match store::job_status(&state.pool, caller.tenant, id).await {
        Ok(Some(status)) => Ok(Json(status)),
        Ok(None) => Err(not_found()),
        Err(error) => {
            tracing::warn!(%error, "job status query failed");
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
async fn job_types() -> Json<JobTypes> {
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

#[derive(OpenApi)]
#[openapi(
    info(title = "Codigo ingest gateway", description = "Submit jobs to the Codigo pipeline."),
    paths(submit_job, submit_batch, crate::cloudevents::submit_events, get_job, job_types),
    components(schemas(Problem, JobRequest, JobAccepted, BatchRequest, BatchItemResult, BatchAccepted,
        crate::cloudevents::CloudEvent, crate::cloudevents::EventsAccepted, JobStatus, JobTypes, JobTypeInfo)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Result<&'static str, Problem> {
    if state.topology_ready.load(Ordering::Relaxed) && state.publisher.ready().await {
        Ok("ready")
    } else {
        Err(Problem::unavailable(
            "JetStream is unreachable or the streams are not set up yet",
        ))
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
}

async fn unknown_route() -> Problem {
    Problem::not_found("no such route; see /openapi.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_depth_counts_brackets_outside_strings() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(!nests_deeper_than(deep(32).as_bytes(), 32));
        assert!(nests_deeper_than(deep(33).as_bytes(), 32));
        let quoted = format!(r#"{{"s": "{}\" {}"}}"#, "[".repeat(100), "{".repeat(100));
        assert!(!nests_deeper_than(quoted.as_bytes(), 2));
        assert!(nests_deeper_than(br#"{"a": {"b": [1]}}"#, 2));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut headers = HeaderMap::new();
        for (value, token) in [
            ("Bearer abc", Some("abc")),
            ("BEARER abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearerabc", None),
        ] {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer_token(&headers), token, "{value}");
        }
    }
}
