//! The OpenAPI document at `/openapi.json`, and the problem responses routes share in it.
use std::collections::BTreeMap;

use axum::Json;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, OpenApi};

use super::events::{self, EventsAccepted};
use super::jobs::{self, BatchRequest, JobTypeInfo, JobTypes};
use crate::cloudevents::CloudEvent;
use crate::ingest::{BatchAccepted, BatchItemResult, JobAccepted, JobRequest};
use crate::problem::Problem;
use crate::store::JobStatus;

#[derive(OpenApi)]
#[openapi(
    info(title = "Codigo ingest gateway", description = "Submit jobs to the Codigo pipeline."),
    paths(jobs::submit_job, jobs::submit_batch, events::submit_events, jobs::get_job, jobs::job_types),
    components(schemas(Problem, JobRequest, JobAccepted, BatchRequest, BatchItemResult, BatchAccepted,
        CloudEvent, EventsAccepted, JobStatus, JobTypes, JobTypeInfo)),
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

/// Problem responses with these statuses and descriptions.
fn problems(described: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    described
        .iter()
        .map(|&(status, description)| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build();
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/problem+json", content)
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

/// What every job submission route may answer before its own checks.
pub(super) struct IngestProblems;

impl IntoResponses for IngestProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[
            (401, "missing or invalid API key"),
            (408, "body not received within CODIGO_REQUEST_READ_TIMEOUT_SECS"),
            (413, "body over CODIGO_MAX_BODY_BYTES, or a job whose message does not fit the NATS server's max_payload"),
            (429, "over the key's rate, which counts jobs (a batch of N costs N, accepted or refused whole)"),
            (503, "JetStream unavailable (unavailable), work stream full (queue-full) or too many requests in progress (overloaded); nothing stored; see Retry-After"),
        ])
    }
}

/// What a route taking a plain JSON body answers when it is not one.
pub(super) struct JsonBodyProblems;

impl IntoResponses for JsonBodyProblems {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        problems(&[(400, "malformed JSON"), (415, "not JSON")])
    }
}

pub(super) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
