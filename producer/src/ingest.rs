//! The ingest service every submission route goes through, whatever its wire format (`/v1/jobs`,
//! `/v1/jobs/batch`, CloudEvents): check a job, publish it, or publish a batch of them, and
//! answer in the same problem types and counts.
use std::sync::Arc;
use std::time::Duration;

use codigo_schemas::Catalog;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::events::{JobPublished, PublishFailed, PublishResult};
use crate::problem::Problem;
use crate::publish::{NewJob, PublishError, Published, Publisher};
use crate::queued::{QueuedJob, QueuedJobs};
use crate::schedule;

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
    /// Start no earlier than this time (RFC 3339, at most `CODIGO_MAX_DELAY` ahead, 30 days by
    /// default); a time past means now. Not with `delay`.
    #[schema(value_type = Option<String>, format = DateTime, example = "2026-12-24T18:00:00Z")]
    pub run_at: Option<String>,
    /// Start no earlier than this many seconds from now. Not with `run_at`.
    #[schema(example = 30)]
    pub delay: Option<f64>,
    /// The job's deadline (RFC 3339): not started by then, it is not run and becomes
    /// `expired`. Not with `ttl`.
    #[schema(value_type = Option<String>, format = DateTime, example = "2026-12-24T19:00:00Z")]
    pub expires_at: Option<String>,
    /// The deadline in seconds from now. Not with `expires_at`.
    #[schema(example = 300)]
    pub ttl: Option<f64>,
    /// An http(s) URL: when the job reaches a final state (succeeded, failed, dead_lettered,
    /// cancelled, expired), a CloudEvent `dev.codigo.job.<state>` signed with the tenant's
    /// Standard Webhooks secret is POSTed there, retried like a `webhook.deliver` job.
    #[schema(example = "https://example.com/hooks/codigo")]
    pub callback_url: Option<String>,
}

impl JobRequest {
    /// A job to run now, with no deadline or callback: what schedules and callbacks submit.
    pub fn now(job_type: String, payload: Value, idempotency_key: Option<String>) -> Self {
        Self {
            job_type,
            payload,
            idempotency_key,
            run_at: None,
            delay: None,
            expires_at: None,
            ttl: None,
            callback_url: None,
        }
    }
}

/// Answer of an accepted job.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobAccepted {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub job_type: String,
    /// `queued`: stored by JetStream, waiting for a worker; `scheduled`: stored, waiting for
    /// its `run_at`.
    pub status: &'static str,
    /// True when this submission repeated an earlier one (same idempotency key).
    pub duplicate: bool,
    /// When a delayed job is due.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub run_at: Option<OffsetDateTime>,
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
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub run_at: Option<OffsetDateTime>,
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
            run_at: job.run_at,
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
            run_at: None,
            error: Some(problem),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAccepted {
    /// One result per submitted item, in order.
    pub results: Vec<BatchItemResult>,
}

/// Longest callback URL, as for a `webhook.deliver` target.
const MAX_CALLBACK_URL_LEN: usize = 2048;

/// A callback goes where a `webhook.deliver` job may POST: an absolute http(s) URL. Private
/// and loopback addresses are refused when it is delivered, on every resolved address.
fn check_callback_url(url: &str) -> Result<(), Problem> {
    let parsed = url::Url::parse(url).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
    });
    if parsed.is_none() || url.len() > MAX_CALLBACK_URL_LEN || url.contains(char::is_whitespace) {
        return Err(Problem::invalid_request(format!(
            "callback_url must be an absolute http(s) URL of at most {MAX_CALLBACK_URL_LEN} \
             characters"
        )));
    }
    Ok(())
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

/// Bounds every submission is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_batch_items: usize,
    /// How far ahead `run_at` or `delay` may be.
    pub max_delay: Duration,
}

#[derive(Clone)]
pub struct Ingest {
    publisher: Publisher,
    queued: QueuedJobs,
    limits: Limits,
    catalog: Arc<Catalog>,
}

impl Ingest {
    pub fn new(
        publisher: Publisher,
        queued: QueuedJobs,
        limits: Limits,
        catalog: Arc<Catalog>,
    ) -> Self {
        Self {
            publisher,
            queued,
            limits,
            catalog,
        }
    }

    /// Job `id` while it waits for its `run_at`.
    pub async fn scheduled(
        &self,
        id: Uuid,
    ) -> Result<Option<schedule::Waiting>, schedule::LookupError> {
        self.publisher.scheduled(id).await
    }

    /// Removes a waiting job; `false` once it has become due.
    pub async fn unschedule(&self, sequence: u64) -> Result<bool, schedule::LookupError> {
        self.publisher.unschedule(sequence).await
    }

    /// Removes a cancelled job from the work stream; `false` once it has left.
    pub async fn unqueue(&self, sequence: u64) -> Result<bool, schedule::LookupError> {
        self.publisher.unqueue(sequence).await
    }

    /// Whether JetStream answers and the work stream exists.
    pub async fn ready(&self) -> bool {
        self.publisher.ready().await
    }

    /// The checks every job passes, whichever route it came in by: a built-in or declared type
    /// (so NATS subjects are only ever built from known names), the key's scope, the idempotency
    /// key's length and the payload's schema. `payload_pointer` locates the payload in the
    /// body. A refused job is counted.
    pub fn check(
        &self,
        caller: &Caller,
        request: JobRequest,
        payload_pointer: &str,
    ) -> Result<NewJob, Problem> {
        self.check_with(
            |job_type| caller.may_submit(job_type),
            request,
            payload_pointer,
        )
    }

    /// The checks of [`Ingest::check`] for a job no caller submits now (a schedule's tick):
    /// the scope of the key that stored the schedule was checked then.
    pub fn check_for_tenant(
        &self,
        request: JobRequest,
        payload_pointer: &str,
    ) -> Result<NewJob, Problem> {
        self.check_with(|_| Ok(()), request, payload_pointer)
    }

    fn check_with(
        &self,
        may_submit: impl FnOnce(&str) -> Result<(), Problem>,
        request: JobRequest,
        payload_pointer: &str,
    ) -> Result<NewJob, Problem> {
        let requested_type = request.job_type.clone();
        let outcome = (|| {
            let known = self
                .catalog
                .get(&request.job_type)
                .map_err(|_| Problem::unknown_job_type(&request.job_type))?;
            let job_type = known.job_type();
            may_submit(job_type.name)?;
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
            let now = OffsetDateTime::now_utc();
            let run_at = schedule::due_time(
                request.run_at.as_deref(),
                request.delay,
                self.limits.max_delay,
                now,
            )?;
            let expires_at =
                schedule::deadline(request.expires_at.as_deref(), request.ttl, run_at, now)?;
            if let Some(url) = &request.callback_url {
                check_callback_url(url)?;
            }
            Ok(NewJob {
                job_type: job_type.name.to_owned(),
                payload: request.payload,
                idempotency_key: request.idempotency_key,
                event_source: None,
                run_at,
                expires_at,
                callback_url: request.callback_url,
            })
        })();
        outcome.map_err(|problem| rejected(&requested_type, problem))
    }

    /// Publishes one checked job: accepted once JetStream stored it (and its `queued` row is
    /// written), a problem otherwise.
    pub async fn publish(&self, caller: &Caller, job: NewJob) -> Result<JobAccepted, Problem> {
        self.publish_for(caller.tenant(), job).await
    }

    /// [`Ingest::publish`] of a job of `tenant`.
    pub async fn publish_for(&self, tenant: &str, job: NewJob) -> Result<JobAccepted, Problem> {
        let (job_type, run_at) = (job.job_type.clone(), job.run_at);
        let outcome = self.publisher.publish(tenant, job).await;
        self.record_queued([(&outcome, run_at.is_some())]).await;
        settle(job_type, run_at, outcome)
    }

    /// Writes the rows of the jobs JetStream has just stored for the first time: `queued`, or
    /// `scheduled` for the delayed ones.
    async fn record_queued<'a>(
        &self,
        outcomes: impl IntoIterator<Item = (&'a Result<Published, PublishError>, bool)>,
    ) {
        let jobs = outcomes
            .into_iter()
            .filter_map(|(outcome, delayed)| Some((outcome.as_ref().ok()?, delayed)))
            .filter(|(published, _)| !published.duplicate)
            .map(|(published, delayed)| QueuedJob {
                envelope: published.envelope.clone(),
                // A delayed job's sequence is in the schedules stream, not the work stream.
                sequence: (!delayed).then_some(published.sequence),
            })
            .collect();
        self.queued.record(jobs).await;
    }

    /// What a batch of `len` jobs passes as a whole before any item is checked: its length,
    /// the key's rate (one token per job, all or nothing) and a reachable JetStream
    /// (answering per item would only repeat the same 503).
    pub fn admit_batch(&self, caller: &Caller, len: usize) -> Result<(), Problem> {
        if len == 0 || len > self.limits.max_batch_items {
            return Err(Problem::invalid_request(format!(
                "a batch holds 1 to {} jobs; this one has {len}",
                self.limits.max_batch_items
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
        let job_types: Vec<(String, Option<OffsetDateTime>)> = jobs
            .iter()
            .map(|job| (job.job_type.clone(), job.run_at))
            .collect();
        let outcomes = self.publisher.publish_many(caller.tenant(), jobs).await;
        self.record_queued(
            job_types
                .iter()
                .zip(&outcomes)
                .map(|((_, run_at), outcome)| (outcome, run_at.is_some())),
        )
        .await;
        for ((index, (job_type, run_at)), outcome) in
            indices.into_iter().zip(job_types).zip(outcomes)
        {
            // Too large is the client's doing, like a failed check.
            let failed_status = match &outcome {
                Err(PublishError::TooLarge { .. }) => "rejected",
                _ => "error",
            };
            results[index] = Some(match settle(job_type, run_at, outcome) {
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
    run_at: Option<OffsetDateTime>,
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
        status: if run_at.is_some() {
            "scheduled"
        } else {
            "queued"
        },
        duplicate: published.duplicate,
        run_at,
    })
}
