//! `POST /v1/events`: CloudEvents in any of the three modes, each event a job submitted
//! through the ingest service like any other.
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::extract::Submission;
use super::openapi::{EventProblems, IngestProblems};
use crate::body::parse_json;
use crate::cloudevents::{self, CloudEvent, Mode, BATCH};
use crate::ingest::{BatchAccepted, JobAccepted};
use crate::problem::Problem;

/// `202` for one event (like `POST /v1/jobs`) or for a batch (like `POST /v1/jobs/batch`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EventsAccepted {
    Event(JobAccepted),
    Batch(BatchAccepted),
}

/// Submit CloudEvents: one event (structured or binary mode) or a batch.
#[utoipa::path(post, path = "/v1/events", tag = "events",
    request_body(
        description = "Structured mode: one event in the JSON format. Batch mode: an array of \
            them (up to CODIGO_MAX_BATCH_ITEMS). Binary mode: the event's data as JSON, with its \
            attributes in ce-* headers.",
        content(
            (CloudEvent = "application/cloudevents+json"),
            (Vec<CloudEvent> = "application/cloudevents-batch+json"),
            (serde_json::Value = "application/json"),
        )
    ),
    params(
        ("ce-specversion" = Option<String>, Header, description = "binary mode: 1.0"),
        ("ce-id" = Option<String>, Header, description = "binary mode: with ce-source, the idempotency key"),
        ("ce-source" = Option<String>, Header, description = "binary mode: the event's source"),
        ("ce-type" = Option<String>, Header, description = "binary mode: the job type"),
        ("ce-time" = Option<String>, Header, description = "binary mode: RFC 3339 time, optional"),
    ),
    security(("api_key" = [])),
    responses(
        (status = 202, description = "one event: like POST /v1/jobs; a batch: per-item results like POST /v1/jobs/batch", body = EventsAccepted),
        EventProblems, IngestProblems,
    ))]
pub(super) async fn submit_events(
    submission: Submission,
) -> Result<(StatusCode, Json<EventsAccepted>), Problem> {
    let Submission {
        state,
        caller,
        headers,
        body,
    } = submission;
    let mode = cloudevents::mode(&headers)?;
    if !matches!(mode, Mode::Batch) {
        caller.charge(1)?;
    }
    let bytes = body?;
    let ingest = &state.ingest;
    let accepted = match mode {
        Mode::Structured => {
            let event = cloudevents::read_json_event(parse_json(&bytes)?, "")?;
            let job = event.check(ingest, &caller, "/data")?;
            EventsAccepted::Event(ingest.publish(&caller, job).await?)
        }
        Mode::Binary => {
            let event = cloudevents::read_binary_event(&headers, &bytes)?;
            let job = event.check(ingest, &caller, "")?;
            EventsAccepted::Event(ingest.publish(&caller, job).await?)
        }
        Mode::Batch => {
            let Value::Array(events) = parse_json(&bytes)? else {
                return Err(Problem::invalid_request(format!(
                    "a {BATCH} body is a JSON array of events"
                )));
            };
            ingest.admit_batch(&caller, events.len())?;
            let items = events
                .into_iter()
                .enumerate()
                .map(|(index, event)| {
                    cloudevents::read_json_event(event, &format!("/{index}"))?.check(
                        ingest,
                        &caller,
                        &format!("/{index}/data"),
                    )
                })
                .collect();
            EventsAccepted::Batch(ingest.publish_batch(&caller, items).await)
        }
    };
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}
