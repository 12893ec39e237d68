//! Jobs whose message ran out of deliveries: copied to the dead-letter stream with reason
//! `max_deliveries`, their jobs row marked `dead_lettered`, and the message removed from the
//! work stream. Both ways of learning of such a message end here: JetStream's max-deliveries
//! advisory (`advisories`) and the sweep for messages whose advisory was lost (`orphans`).
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use codigo_common::contract::{headers, DlqReason, JobState};
use codigo_common::Names;
use sqlx::PgPool;
use uuid::Uuid;

use crate::dead_letters::{DeadLetter, DeadLetters};
use crate::store::{self, JobRecord, Submitted};

/// Why a message that ran out of deliveries could not be dead-lettered yet; it is tried again
/// (the advisory naked, the sweep's next round).
#[derive(Debug, thiserror::Error)]
pub enum ExhaustedError {
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error("Postgres unavailable: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error(transparent)]
    DeadLetter(#[from] crate::dead_letters::DeadLetterError),
}

pub(crate) fn jetstream_error(error: impl std::fmt::Display) -> ExhaustedError {
    ExhaustedError::JetStream(error.to_string())
}

/// A work-stream message that JetStream no longer delivers.
#[derive(Debug, Clone)]
pub struct Exhausted {
    pub stream_seq: u64,
    pub deliveries: u64,
    /// The durable that gave up: names the job type when the message itself is gone.
    pub consumer: String,
}

pub struct ExhaustedJobs {
    pub js: jetstream::Context,
    pub names: Names,
    pub pool: PgPool,
    pub dead_letters: DeadLetters,
}

impl ExhaustedJobs {
    /// Dead-letters the message, unless its job succeeded after all, and removes it from the
    /// work stream. Idempotent: the dead letter's `Nats-Msg-Id` is the stream sequence, and
    /// the jobs row records it, so a second pass over the same message (the advisory and the
    /// sweep both, or a retry) stores no second dead letter.
    pub async fn dead_letter(&self, exhausted: &Exhausted) -> Result<(), ExhaustedError> {
        let stream = self
            .js
            .get_stream(self.names.jobs_stream())
            .await
            .map_err(jetstream_error)?;
        let message = match stream.get_raw_message(exhausted.stream_seq).await {
            Ok(message) => message,
            // Gone from the stream (acknowledged late, handled by another replica, removed by
            // an operator or a limit): Postgres says which of these it was.
            Err(error) if error.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                return self.dead_letter_gone(exhausted).await
            }
            Err(error) => return Err(jetstream_error(error)),
        };
        let subject = message.subject.to_string();
        let job_type = self
            .names
            .job_type_of(&subject)
            .unwrap_or("unknown")
            .to_owned();
        let envelope: Option<codigo_schemas::Envelope> =
            serde_json::from_slice(&message.payload).ok();
        let id: Option<Uuid> = envelope.as_ref().map(|e| e.id);

        let mut last_error = format!("gave up after {} deliveries", exhausted.deliveries);
        if let Some(id) = id {
            match store::status_of(&self.pool, id).await {
                Ok(Some((JobState::Succeeded, _))) => {
                    // The last attempt committed after all; only the message is left over.
                    return delete(&stream, exhausted.stream_seq).await;
                }
                Ok(Some((_, Some(error)))) => {
                    last_error = format!(
                        "gave up after {} deliveries; last error: {error}",
                        exhausted.deliveries
                    );
                }
                Ok(_) => {}
                Err(error) => return Err(error.into()),
            }
        }
        self.dead_letters
            .publish(DeadLetter {
                job_type: &job_type,
                original_subject: &subject,
                payload: message.payload.clone(),
                original_headers: Some(&message.headers),
                reason: DlqReason::MaxDeliveries,
                error: &last_error,
                attempts: exhausted.deliveries,
                stream_sequence: exhausted.stream_seq,
            })
            .await?;
        if let Some(envelope) = &envelope {
            let submitted = Submitted::of_envelope(envelope);
            let record = JobRecord::new(envelope.id, &job_type, exhausted.deliveries, submitted);
            store::record_failure(
                &self.pool,
                &record,
                JobState::DeadLettered,
                &last_error,
                exhausted.stream_seq,
            )
            .await?;
        }
        delete(&stream, exhausted.stream_seq).await
    }

    /// The message has left the stream. A job that finished is fine; any other job would
    /// vanish, so it is dead-lettered from what its jobs row holds (its envelope rebuilt), or,
    /// when Postgres knows nothing of it, with an empty body that still names the sequence:
    /// nothing disappears without a dead letter, a metric and an error.
    async fn dead_letter_gone(&self, exhausted: &Exhausted) -> Result<(), ExhaustedError> {
        let seq = exhausted.stream_seq;
        let row = store::job_at_sequence(&self.pool, seq).await?;
        if let Some(job) = row.as_ref().filter(|job| job.status.is_final()) {
            tracing::info!(job_id = %job.id, status = job.status.as_str(), stream_seq = seq,
                "max-deliveries advisory for a job already finished");
            return Ok(());
        }
        let job_type = row.as_ref().map_or_else(
            || {
                codigo_schemas::registry()
                    .names()
                    .find(|t| self.names.durable(t) == exhausted.consumer)
                    .unwrap_or("unknown")
                    .to_owned()
            },
            |job| job.job_type.clone(),
        );
        let subject = self.names.job_subject(&job_type);
        let mut error = format!(
            "gave up after {} deliveries; the message (stream sequence {seq}) had left the stream",
            exhausted.deliveries
        );
        if let Some(last) = row.as_ref().and_then(|job| job.error.as_deref()) {
            error.push_str("; last error: ");
            error.push_str(last);
        }
        let payload = match &row {
            Some(job) => Bytes::from(serde_json::to_vec(&job.envelope()).unwrap_or_default()),
            None => {
                error.push_str("; Postgres has no row for it, so the job is unknown");
                Bytes::new()
            }
        };
        let mut original_headers = HeaderMap::new();
        original_headers.insert(headers::CONTENT_TYPE, "application/json");
        self.dead_letters
            .publish(DeadLetter {
                job_type: &job_type,
                original_subject: &subject,
                payload,
                original_headers: Some(&original_headers),
                reason: DlqReason::MaxDeliveries,
                error: &error,
                attempts: exhausted.deliveries,
                stream_sequence: seq,
            })
            .await?;
        if let Some(job) = &row {
            let submitted = Submitted::of_stored(job);
            let record = JobRecord::new(job.id, &job.job_type, exhausted.deliveries, submitted);
            store::record_failure(&self.pool, &record, JobState::DeadLettered, &error, seq).await?;
        }
        tracing::error!(
            job_id = row.as_ref().map(|job| job.id.to_string()),
            job_type,
            stream_seq = seq,
            deliveries = exhausted.deliveries,
            "the message of a job that ran out of deliveries had left the stream; dead-lettered with what Postgres knows of it"
        );
        Ok(())
    }
}

/// Removes the message from the work stream; one already gone (another replica, the other
/// path) is fine. nats-server answers a delete of a missing message with a generic "delete
/// failed" (10057), so a failed delete is checked against the stream.
async fn delete(stream: &stream::Stream, seq: u64) -> Result<(), ExhaustedError> {
    let Err(error) = stream.delete_message(seq).await else {
        return Ok(());
    };
    match stream.get_raw_message(seq).await {
        Err(gone) if gone.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(()),
        _ => Err(jetstream_error(error)),
    }
}
