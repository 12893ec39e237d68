//! Job handlers. A handler turns a validated job into an [`Outcome`], and records a success
//! together with its effects in one transaction (see [`crate::store::record_success`]).
pub mod ledger;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use codigo_schemas::Envelope;
use serde_json::Value;
use sqlx::PgPool;

use crate::store::{DbFailure, JobRecord};

/// What became of one attempt at a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done and recorded: ack.
    Succeeded,
    /// Worth trying again later: nak with a delay (the handler's, or the retry policy's).
    Retry {
        after: Option<Duration>,
        error: String,
    },
    /// Will fail the same way every time: dead-letter and term.
    Permanent { error: String },
}

/// A dependency (Postgres) is down. The job is not at fault, so the worker keeps it and tries
/// again without using up one of its deliveries.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

pub struct Job<'a> {
    pub envelope: &'a Envelope,
    pub record: JobRecord<'a>,
    pub attempt: u64,
}

#[async_trait]
pub trait Handler: Send + Sync + 'static {
    fn job_type(&self) -> &'static str;

    /// Whether a job's work reaches outside Postgres (an HTTP request) and so cannot be
    /// rolled back: its ack then waits for JetStream's confirmation, since an ack lost on the
    /// way means a redelivery.
    fn has_outside_effects(&self) -> bool {
        false
    }

    async fn handle(&self, job: &Job<'_>) -> Result<Outcome, Unavailable>;

    /// Whether jobs that arrived together should reach [`Handler::handle_batch`] together
    /// because it shares work between them. A handler that does not is given its jobs one by
    /// one, so that a slow job holds no other job's slot.
    fn handles_groups(&self) -> bool {
        false
    }

    /// Handles jobs that arrived together, one result per job, in order. The default runs
    /// them concurrently, one by one; a handler that can share work (one transaction for
    /// the group) overrides it.
    async fn handle_batch(&self, jobs: &[&Job<'_>]) -> Vec<Result<Outcome, Unavailable>> {
        futures::future::join_all(jobs.iter().map(|job| self.handle(job))).await
    }
}

/// Maps a database error to the worker's vocabulary by its SQLSTATE (see
/// [`crate::store::DbFailure`]): transient errors and a broken deployment hold the job, an
/// error in the job's own data fails it for good.
pub fn db_failure(error: sqlx::Error) -> Result<Outcome, Unavailable> {
    match DbFailure::from(error).observed() {
        failure @ DbFailure::Job { .. } => Ok(Outcome::Permanent {
            error: failure.to_string(),
        }),
        held => Err(Unavailable(held.to_string())),
    }
}

/// Decodes a validated payload into its typed form; a failure here means the schema and the
/// type disagree, which no retry fixes.
pub fn typed<T: serde::de::DeserializeOwned>(payload: &Value) -> Result<T, Outcome> {
    T::deserialize(payload).map_err(|e| Outcome::Permanent {
        error: format!("payload does not decode: {e}"),
    })
}

pub type Handlers = HashMap<&'static str, Arc<dyn Handler>>;

pub struct HandlerSettings {
    pub pool: PgPool,
    pub faults: crate::faults::Faults,
    pub webhook: Option<webhook::WebhookSettings>,
}

/// The handlers of the given job types.
pub fn build(
    settings: HandlerSettings,
    job_types: &[&'static str],
) -> Result<Handlers, webhook::WebhookSetupError> {
    let mut handlers: Handlers = HashMap::new();
    for job_type in job_types {
        let handler: Arc<dyn Handler> = match *job_type {
            codigo_schemas::LEDGER_POST => Arc::new(ledger::LedgerPostHandler::new(
                settings.pool.clone(),
                settings.faults.clone(),
            )),
            codigo_schemas::WEBHOOK_DELIVER => Arc::new(webhook::WebhookHandler::new(
                settings.pool.clone(),
                settings
                    .webhook
                    .clone()
                    .ok_or(webhook::WebhookSetupError::NoKey)?,
            )?),
            other => return Err(webhook::WebhookSetupError::NoHandler(other.to_owned())),
        };
        handlers.insert(job_type, handler);
    }
    Ok(handlers)
}
