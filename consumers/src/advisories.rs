//! The worker side of max deliveries: JetStream's advisory names the message that ran out of
//! deliveries; it is copied to the dead-letter stream and removed from the work stream.
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use codigo_common::contract::{headers, DlqReason, JobState};
use codigo_common::shutdown::Shutdown;
use codigo_common::Names;
use futures::StreamExt;
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::dead_letters::{DeadLetter, DeadLetters};
use crate::pause::pause;
use crate::store::{self, JobRecord, Submitted};

/// Why an advisory could not be handled yet; it is naked and comes back.
#[derive(Debug, thiserror::Error)]
pub enum AdvisoryError {
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error("Postgres unavailable: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error(transparent)]
    DeadLetter(#[from] crate::dead_letters::DeadLetterError),
}

fn jetstream_error(error: impl std::fmt::Display) -> AdvisoryError {
    AdvisoryError::JetStream(error.to_string())
}

/// Whether the message is gone from the stream already.
fn no_message(error: &stream::DeleteMessageError) -> bool {
    matches!(error.kind(), stream::DeleteMessageErrorKind::JetStream(e)
        if e.error_code() == jetstream::ErrorCode::NO_MESSAGE_FOUND)
}

/// `io.nats.jetstream.advisory.v1.max_deliver`
#[derive(Debug, Deserialize)]
struct MaxDeliveriesAdvisory {
    stream_seq: u64,
    deliveries: u64,
    /// The durable that gave up: names the job type when the message itself is gone.
    #[serde(default)]
    consumer: String,
}

pub struct AdvisoryWorker {
    pub js: jetstream::Context,
    pub names: Names,
    pub pool: PgPool,
    pub dead_letters: DeadLetters,
}

impl AdvisoryWorker {
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let mut consumer = None;
        while !shutdown.is_cancelled() {
            let bound = match consumer.take() {
                Some(c) => c,
                None => {
                    match codigo_common::jetstream::bind_advisories_consumer(&self.js, &self.names)
                        .await
                    {
                        Ok(c) => c,
                        Err(error) => {
                            tracing::warn!(%error, "cannot bind the max-deliveries consumer; retrying");
                            pause(&shutdown, Duration::from_secs(2)).await;
                            continue;
                        }
                    }
                }
            };
            let batch = bound
                .batch()
                .max_messages(16)
                .expires(Duration::from_secs(5))
                .messages()
                .await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(%error, "max-deliveries pull failed; retrying");
                    pause(&shutdown, Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut healthy = true;
            while let Some(next) = batch.next().await {
                match next {
                    Ok(advisory) => match self.handle(&advisory.payload).await {
                        Ok(()) => {
                            if let Err(error) = advisory.ack().await {
                                tracing::warn!(%error, "ack of max-deliveries advisory failed");
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "dead-lettering after max deliveries failed; will retry");
                            let _ = advisory
                                .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(5))))
                                .await;
                        }
                    },
                    Err(error) => {
                        tracing::warn!(%error, "max-deliveries stream error; rebinding");
                        healthy = false;
                        break;
                    }
                }
            }
            if healthy {
                consumer = Some(bound);
            }
        }
    }

    async fn handle(&self, payload: &[u8]) -> Result<(), AdvisoryError> {
        let advisory: MaxDeliveriesAdvisory = match serde_json::from_slice(payload) {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(%error, "ignoring an advisory that does not decode");
                return Ok(());
            }
        };
        let stream = self
            .js
            .get_stream(self.names.jobs_stream())
            .await
            .map_err(jetstream_error)?;
        let message = match stream.get_raw_message(advisory.stream_seq).await {
            Ok(message) => message,
            // Gone from the stream (acknowledged late, handled by another replica, removed by
            // an operator or a limit): Postgres says which of these it was.
            Err(error) if error.kind() == stream::RawMessageErrorKind::NoMessageFound => {
                return self.handle_gone(&advisory).await
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

        let mut last_error = format!("gave up after {} deliveries", advisory.deliveries);
        if let Some(id) = id {
            match store::status_of(&self.pool, id).await {
                Ok(Some((JobState::Succeeded, _))) => {
                    // The last attempt committed after all; only the message is left over.
                    stream
                        .delete_message(advisory.stream_seq)
                        .await
                        .map_err(jetstream_error)?;
                    return Ok(());
                }
                Ok(Some((_, Some(error)))) => {
                    last_error = format!(
                        "gave up after {} deliveries; last error: {error}",
                        advisory.deliveries
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
                attempts: advisory.deliveries,
                stream_sequence: advisory.stream_seq,
            })
            .await?;
        if let Some(envelope) = &envelope {
            let submitted = Submitted::of_envelope(envelope);
            let record = JobRecord::new(envelope.id, &job_type, advisory.deliveries, submitted);
            store::record_dead_letter(&self.pool, &record, &last_error).await?;
        }
        match stream.delete_message(advisory.stream_seq).await {
            Ok(_) => Ok(()),
            Err(error) if no_message(&error) => Ok(()),
            Err(error) => Err(jetstream_error(error)),
        }
    }
}

impl AdvisoryWorker {
    /// The advisory's message has left the stream. A job that finished is fine; any other
    /// job would vanish, so it is dead-lettered from what its jobs row holds (its envelope
    /// rebuilt), or, when Postgres knows nothing of it, with an empty body that still names
    /// the sequence: nothing disappears without a dead letter, a metric and an error.
    async fn handle_gone(&self, advisory: &MaxDeliveriesAdvisory) -> Result<(), AdvisoryError> {
        let seq = advisory.stream_seq;
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
                    .find(|t| self.names.durable(t) == advisory.consumer)
                    .unwrap_or("unknown")
                    .to_owned()
            },
            |job| job.job_type.clone(),
        );
        let subject = self.names.job_subject(&job_type);
        let mut error = format!(
            "gave up after {} deliveries; the message (stream sequence {seq}) had left the stream",
            advisory.deliveries
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
                attempts: advisory.deliveries,
                stream_sequence: seq,
            })
            .await?;
        if let Some(job) = &row {
            let submitted = Submitted::of_stored(job);
            let record = JobRecord::new(job.id, &job.job_type, advisory.deliveries, submitted);
            store::record_dead_letter(&self.pool, &record, &error).await?;
        }
        tracing::error!(
            job_id = row.as_ref().map(|job| job.id.to_string()),
            job_type,
            stream_seq = seq,
            deliveries = advisory.deliveries,
            "the message of a job that ran out of deliveries had left the stream; dead-lettered with what Postgres knows of it"
        );
        Ok(())
    }
}
