//! The ingest service every submission route goes through, whatever its wire format (`/v1/jobs`,
//! `/v1/jobs/batch`, CloudEvents): check a job, publish it, or publish a batch of them, and
//! answer in the same problem types and counts.
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use codigo_schemas::registry;

use crate::auth::Caller;
use crate::events::{JobPublished, PublishFailed, PublishResult};
use crate::problem::Problem;
use crate::publish::{NewJob, PublishError, Published, Publisher};

/// Longest idempotency key.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

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

impl BatchItemResult {
    fn queued(index: usize, job: JobAccepted) -> Self {
        Self {
            index,
            status: job.status,
            id: Some(job.id),
            job_type: Some(job.job_type),
            duplicate: Some(job.duplicate),
            error: None,
        }
    }

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

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAccepted {
    /// One result per submitted item, in order.
    pub results: Vec<BatchItemResult>,
}

/// Counts a job refused before publishing; `job_type` may be anything the client sent.
pub fn rejected(job_type: &str, problem: Problem) -> Problem {
    JobPublished {
        job_type,
        result: PublishResult::Rejected,
    }
    .emit();
    problem
}

pub struct Ingest {
    publisher: Publisher,
    max_batch_items: usize,
}

impl Ingest {
    pub fn new(publisher: Publisher, max_batch_items: usize) -> Self {
        Self {
            publisher,
            max_batch_items,
        }
    }

    /// Whether JetStream answers and the work stream exists.
    pub async fn ready(&self) -> bool {
        self.publisher.ready().await
    }

    /// The checks every job passes, whichever route it came in by: a registered type (so NATS
    /// subjects are only ever built from registered names), the key's scope, the idempotency
    /// key's length and the payload's schema. `payload_pointer` locates the payload in the
    /// body. A refused job is counted.
    pub fn check(
        &self,
        caller: &Caller,
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
                if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
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

    /// Publishes one checked job: accepted once JetStream stored it, a problem otherwise.
    pub async fn publish(&self, caller: &Caller, job: NewJob) -> Result<JobAccepted, Problem> {
        let job_type = job.job_type.clone();
        let outcome = self.publisher.publish(caller.tenant(), job).await;
        settle(job_type, outcome)
    }

    /// What a batch of `len` jobs passes as a whole before any item is checked: its length,
    /// the key's rate (one token per job, all or nothing) and a reachable JetStream
    /// (answering per item would only repeat the same 503).
    pub fn admit_batch(&self, caller: &Caller, len: usize) -> Result<(), Problem> {
        if len == 0 || len > self.max_batch_items {
            return Err(Problem::invalid_request(format!(
                "a batch holds 1 to {} jobs; this one has {len}",
                self.max_batch_items
            )));
        }
        caller.charge(len)?;
        if !self.publisher.is_connected() {
            return Err(Problem::unavailable(
                "JetStream is unreachable; nothing was stored, retry shortly",
            ));
        }
        Ok(())
    }

    /// Publishes the checked items of a batch together and reports every item, in order:
    /// the items that failed their checks as `rejected`, the others `queued` or `error`.
    pub async fn publish_batch(
        &self,
        caller: &Caller,
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
                Err(problem) => {
                    results.push(Some(BatchItemResult::failed(index, "rejected", problem)))
                }
            }
        }
        let job_types: Vec<String> = jobs.iter().map(|job| job.job_type.clone()).collect();
        let outcomes = self.publisher.publish_many(caller.tenant(), jobs).await;
        for ((index, job_type), outcome) in indices.into_iter().zip(job_types).zip(outcomes) {
            // Too large is the client's doing, like a failed check.
            let failed_status = match &outcome {
                Err(PublishError::TooLarge { .. }) => "rejected",
                _ => "error",
            };
            results[index] = Some(match settle(job_type, outcome) {
                Ok(job) => BatchItemResult::queued(index, job),
                Err(problem) => BatchItemResult::failed(index, failed_status, problem),
            });
        }
        BatchAccepted {
            results: results.into_iter().flatten().collect(),
        }
    }
}

/// A publish's outcome as the client sees it, counted.
fn settle(
    job_type: String,
    outcome: Result<Published, PublishError>,
) -> Result<JobAccepted, Problem> {
    let published = match outcome {
        Ok(published) => published,
        Err(error) => {
            PublishFailed {
                job_type: &job_type,
                error: &error,
            }
            .emit();
            return Err(match error {
                // Never a 503: no retry can make it fit.
                PublishError::TooLarge { limit } => Problem::message_too_large(limit),
                PublishError::QueueFull(_) => Problem::queue_full(),
                PublishError::Disconnected | PublishError::NotStored(_) => {
                    Problem::unavailable(format!("{error}; nothing was stored"))
                }
            });
        }
    };
    JobPublished {
        job_type: &job_type,
        result: if published.duplicate {
            PublishResult::Duplicate
        } else {
            PublishResult::Accepted
        },
    }
    .emit();
    Ok(JobAccepted {
        id: published.id,
        job_type,
        status: "queued",
        duplicate: published.duplicate,
    })
}
