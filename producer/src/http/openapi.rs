//! The OpenAPI document at `/openapi.json`, and the problem responses routes share in it.
use std::collections::BTreeMap;

use axum::Json;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, OpenApi};

use super::events::{self, EventsAccepted};
use super::job_types::{self, JobTypeInfo, JobTypes};
use super::jobs::{self, BatchRequest, JobCancelled};
use super::schedules::{self, Schedules};
use crate::cloudevents::CloudEvent;
use crate::ingest::{BatchAccepted, BatchItemResult, JobAccepted, JobRequest};
use crate::problem::Problem;
use crate::recurring::{JobTemplate, Schedule, ScheduleSpec};
use crate::store::JobStatus;

#[derive(OpenApi)]
#[openapi(
    info(title = "Codigo ingest gateway", description = "Submit jobs to the Codigo pipeline."),
    paths(jobs::submit_job, jobs::submit_batch, events::submit_events, jobs::get_job,
        jobs::cancel_job, job_types::list,
        job_types::show, job_types::put, job_types::delete, schedules::put, schedules::list,
        schedules::show, schedules::delete),
    components(schemas(Problem, JobRequest, JobAccepted, BatchRequest, BatchItemResult, BatchAccepted,
        CloudEvent, EventsAccepted, JobStatus, JobCancelled, JobTypes, JobTypeInfo, ScheduleSpec,
        JobTemplate, Schedule, Schedules)),
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

macro_rules! problem_responses {
    ($($(#[$doc:meta])* $name:ident = [$(($status:literal, $description:literal)),* $(,)?];)*) => {
        $(
            $(#[$doc])*
            pub(super) struct $name;

            impl IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    problems(&[$(($status, $description)),*])
                }
            }
        )*
    };
}

problem_responses! {
    /// What every job submission route may answer before its own checks.
    IngestProblems = [
        (401, "missing or invalid API key"),
        (408, "body not received within CODIGO_REQUEST_READ_TIMEOUT_SECS"),
        (413, "body over CODIGO_MAX_BODY_BYTES, or a job whose message does not fit the NATS server's max_payload"),
        (429, "over the key's rate, which counts jobs (a batch of N costs N, accepted or refused whole)"),
        (503, "JetStream unavailable (unavailable), work stream full (queue-full) or too many requests in progress (overloaded); nothing stored; see Retry-After"),
    ];
    /// What a route taking a plain JSON body answers when it is not one.
    JsonBodyProblems = [(400, "malformed JSON"), (415, "not JSON")];
    /// `POST /v1/jobs`.
    JobProblems = [
        (403, "job type outside the key's scope"),
        (422, "unknown job type, schema violation, JSON nested too deeply, or text holding \\u0000 (nul-character, with its pointer)"),
    ];
    /// `POST /v1/jobs/batch`.
    BatchProblems = [
        (422, "not a batch, too many items, more jobs than the key's burst, or JSON nested too deeply"),
    ];
    /// `POST /v1/events`.
    EventProblems = [
        (400, "malformed JSON, missing required attributes (named in missing_attributes), or an invalid attribute"),
        (403, "job type outside the key's scope"),
        (415, "event format or data content type other than JSON"),
        (422, "unknown job type, schema violation, JSON nested too deeply, text holding \\u0000 (nul-character, with its pointer), or a batch that is not 1..CODIGO_MAX_BATCH_ITEMS events or larger than the key's burst"),
    ];
    /// `PUT` and `DELETE /v1/job-types/{type}`.
    DeclarationProblems = [
        (401, "missing or invalid API key"),
        (403, "the key has no admin scope"),
        (422, "not a valid declaration (the detail names the field and what to do), or a built-in type"),
        (503, "the job-type bucket is unreachable; nothing changed; see Retry-After"),
    ];
    /// `PUT /v1/schedules/{name}`.
    ScheduleProblems = [
        (401, "missing or invalid API key"),
        (403, "the key may not submit the template's job type"),
        (422, "not a schedule, a bad name, cron expression or time zone, an unknown job type, or a payload its type's schema refuses (the detail says which)"),
        (503, "Postgres unreachable; nothing was stored"),
    ];
    /// `DELETE /v1/jobs/{id}`.
    CancelProblems = [
        (401, "missing or invalid API key"),
        (404, "unknown, or another tenant's"),
        (409, "finished, or a delayed job that fell due as it was cancelled: past cancelling (job_status says which)"),
        (503, "Postgres or JetStream unavailable: nothing was cancelled"),
    ];
    JobStatusProblems = [
        (401, "missing or invalid API key"),
        (404, "unknown, or another tenant's"),
        (422, "wait is not a duration"),
        (503, "Postgres unavailable, or too many requests waiting (Retry-After)"),
    ];
}

pub(super) async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
