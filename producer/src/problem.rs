//! RFC 9457 problem details: every error a client sees, with a stable `type`.
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use codigo_schemas::{SchemaError, Violation};
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_BASE: &str = "https://codigo.dev/problems/";

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// Stable URI naming the kind of problem.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: &'static str,
    pub status: u16,
    /// What went wrong and what to do about it.
    pub detail: String,
    /// Every schema violation, with the JSON pointer of the offending value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub violations: Vec<Violation>,
    /// CloudEvents attributes that are required but absent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_attributes: Vec<String>,
    /// The state of the job a request could not change (`job-not-cancellable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_status: Option<String>,
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
}

impl Problem {
    fn new(status: StatusCode, slug: &str, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            problem_type: format!("{PROBLEM_BASE}{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            violations: Vec::new(),
            missing_attributes: Vec::new(),
            job_status: None,
            retry_after_secs: None,
        }
    }

    pub fn malformed_json(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON",
            detail,
        )
    }

    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "Invalid request",
            detail,
        )
    }

    pub fn unknown_job_type(job_type: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown-job-type",
            "Unknown job type",
            format!("job type {job_type:?} is not registered; GET /v1/job-types lists the registered ones"),
        )
    }

    pub fn schema_violation(violations: Vec<Violation>) -> Self {
        let mut problem = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema-violation",
            "Schema violation",
            format!(
                "the job does not match its schema ({} violation(s)); fix the values at the listed pointers",
                violations.len()
            ),
        );
        problem.violations = violations;
        problem
    }

    pub fn from_schema_error(error: SchemaError, pointer_prefix: &str) -> Self {
        match error {
            SchemaError::UnknownType(t) => Self::unknown_job_type(&t),
            SchemaError::Invalid(violations) => Self::schema_violation(
                violations
                    .into_iter()
                    .map(|v| Violation {
                        pointer: format!("{pointer_prefix}{}", v.pointer),
                        message: v.message,
                    })
                    .collect(),
            ),
        }
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!("the request body exceeds {limit} bytes; split it or send smaller payloads"),
        )
    }

    /// A body that fits `CODIGO_MAX_BODY_BYTES` but whose message (envelope and headers) does
    /// not fit the largest message NATS takes: retrying cannot help.
    pub fn message_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!(
                "the job's message (payload plus envelope and headers) exceeds the {limit} bytes \
                 NATS takes in one message; send a smaller payload"
            ),
        )
    }

    /// A string or member name holding U+0000, which Postgres cannot store.
    pub fn nul_character(pointer: String) -> Self {
        let mut problem = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "nul-character",
            "Text holds U+0000",
            format!(
                "the value at {pointer:?} holds the character U+0000 (\\u0000), which cannot be \
                 stored; remove it"
            ),
        );
        problem.violations = vec![Violation {
            pointer,
            message: "holds U+0000, which cannot be stored".into(),
        }];
        problem
    }

    /// The body was not received within the read timeout.
    pub fn request_timeout(secs: u64) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            "Request timeout",
            format!("the request body did not arrive within {secs} s; send it at once and retry"),
        )
    }

    /// More requests in progress than `CODIGO_MAX_CONCURRENT_REQUESTS`.
    pub fn overloaded() -> Self {
        let mut problem = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "Too many requests in progress",
            "the gateway is at its limit of requests in progress; nothing was stored, retry \
             after the Retry-After delay",
        );
        problem.retry_after_secs = Some(1);
        problem
    }

    /// The work stream reached its limits (discard new): this job was not stored.
    pub fn queue_full() -> Self {
        let mut problem = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue-full",
            "Job queue full",
            "the job queue is full (the work stream reached its message or byte limit); \
             nothing was stored, retry after the Retry-After delay",
        );
        problem.retry_after_secs = Some(5);
        problem
    }

    /// A batch costing more jobs than the key's burst: retrying cannot help.
    pub fn batch_over_burst(jobs: usize, burst: u32) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "batch-over-rate-limit",
            "Batch larger than the key's burst",
            format!(
                "this batch holds {jobs} jobs but this API key may send at most {burst} at once \
                 (rates count jobs); send smaller batches"
            ),
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as JSON with `Content-Type: application/json`",
        )
    }

    /// A media type this API does not take, with what to send instead.
    pub fn unsupported_media_type_because(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            detail,
        )
    }

    pub fn too_deeply_nested(limit: usize) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too-deeply-nested",
            "JSON nested too deeply",
            format!(
                "the body nests objects and arrays deeper than {limit} levels; flatten the payload"
            ),
        )
    }

    pub fn cloudevent_missing_attributes(missing: &[&str]) -> Self {
        let mut problem = Self::new(
            StatusCode::BAD_REQUEST,
            "cloudevent-missing-attributes",
            "CloudEvent lacks required attributes",
            format!(
                "the CloudEvent lacks the required attribute(s) {}; send them as JSON members \
                 (structured mode) or as ce-* headers (binary mode)",
                missing.join(", ")
            ),
        );
        problem.missing_attributes = missing.iter().map(|a| (*a).to_owned()).collect();
        problem
    }

    pub fn invalid_cloudevent(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-cloudevent",
            "Invalid CloudEvent",
            detail,
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "send a valid API key as `Authorization: Bearer <token>`",
        )
    }

    pub fn forbidden_job_type(job_type: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "job-type-forbidden",
            "Job type not allowed for this key",
            format!("this API key may not submit {job_type:?} jobs; ask for a key scoped to it"),
        )
    }

    pub fn forbidden_admin() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "admin-required",
            "Admin scope required",
            "declaring and deleting job types needs an API key with the admin scope (`;admin=true` in its CODIGO_API_KEYS entry)",
        )
    }

    pub fn invalid_declaration(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-declaration",
            "Invalid job type declaration",
            detail,
        )
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut problem = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            format!("this API key is over its rate limit (it counts jobs, a batch costs one per job); nothing was stored, retry after {retry_after_secs} s"),
        );
        problem.retry_after_secs = Some(retry_after_secs);
        problem
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// `DELETE /v1/jobs/{id}` of a job past cancelling: final, or in a worker's hands.
    pub fn job_not_cancellable(status: &str) -> Self {
        let detail = match status {
            "queued" => "the job fell due while it was being cancelled: it is queued for a \
                         worker and runs"
                .to_owned(),
            _ => format!("the job is {status} already; there is nothing left to cancel"),
        };
        let mut problem = Self::new(
            StatusCode::CONFLICT,
            "job-not-cancellable",
            "Job cannot be cancelled",
            detail,
        );
        problem.job_status = Some(status.to_owned());
        problem
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        let mut problem = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            detail,
        );
        problem.retry_after_secs = Some(2);
        problem
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail,
        )
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let retry_after = self.retry_after_secs;
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        // RFC 9110: a 401 names the scheme the client should use.
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"codigo\""),
            );
        }
        response
    }
}
