//! Dead letters: the original body, with headers saying why, on the dead-letter stream.
//! Also the worker side of max deliveries: JetStream's advisory names the message that ran
//! out of deliveries; it is copied to the dead-letter stream and removed from the work stream.
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use async_nats::HeaderMap;
use bytes::Bytes;
use codigo_common::shutdown::Shutdown;
use codigo_common::Names;
use futures::StreamExt;
use serde::Deserialize;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::store::{self, JobRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Decode,
    Schema,
    Permanent,
    MaxDeliveries,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Decode => "decode",
            Reason::Schema => "schema",
            Reason::Permanent => "permanent",
            Reason::MaxDeliveries => "max_deliveries",
        }
    }

    pub const ALL: [Reason; 4] = [
        Reason::Decode,
        Reason::Schema,
        Reason::Permanent,
        Reason::MaxDeliveries,
    ];
}

/// Headers copied from the original message; the rest are ours or JetStream's.
const KEPT_HEADERS: &[&str] = &[
    "Codigo-Job-Type",
    "Content-Type",
    "traceparent",
    "tracestate",
];

/// Longest error text kept in a header.
const MAX_ERROR_LEN: usize = 1024;

fn header_safe(text: &str) -> String {
    let mut clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() > MAX_ERROR_LEN {
        let mut cut = MAX_ERROR_LEN;
        while !clean.is_char_boundary(cut) {
            cut -= 1;
        }
        clean.truncate(cut);
    }
    clean
}

pub struct DeadLetter<'a> {
    pub job_type: &'a str,
    pub original_subject: &'a str,
    pub payload: Bytes,
    pub original_headers: Option<&'a HeaderMap>,
    pub reason: Reason,
    pub error: &'a str,
    pub attempts: u64,
    /// Sequence on the work stream: the de-duplication key of the dead letter.
    pub stream_sequence: u64,
}

#[derive(Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
    names: Names,
}

impl DeadLetters {
    pub fn new(js: jetstream::Context, names: Names) -> Self {
        Self { js, names }
    }

    /// Stores a dead letter and waits for JetStream's acknowledgement. A repeat (after a crash
    /// between publishing and terminating the original) is dropped by de-duplication.
    pub async fn publish(&self, letter: DeadLetter<'_>) -> Result<(), String> {
        let mut headers = HeaderMap::new();
        if let Some(original) = letter.original_headers {
            for name in KEPT_HEADERS {
                if let Some(value) = original.get(*name) {
                    headers.insert(*name, value.as_str());
                }
            }
        }
        headers.insert("Codigo-Job-Type", letter.job_type);
        headers.insert(
            "Nats-Msg-Id",
            format!(
                "dlq:{}:{}",
                self.names.jobs_stream(),
                letter.stream_sequence
            )
            .as_str(),
        );
        headers.insert("Codigo-Dlq-Reason", letter.reason.as_str());
        headers.insert("Codigo-Dlq-Error", header_safe(letter.error).as_str());
        headers.insert("Codigo-Dlq-Attempts", letter.attempts.to_string().as_str());
        headers.insert("Codigo-Original-Subject", letter.original_subject);
        headers.insert(
            "Codigo-Dlq-Time",
            OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
                .as_str(),
        );
        let message = PublishMessage::build()
            .payload(letter.payload)
            .headers(headers);
        let ack = self
            .js
            .send_publish(self.names.dlq_subject(letter.job_type), message)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        // A repeat after a crash between publish and term is dropped by de-duplication and was
        // counted the first time: counting it again would inflate the job-failure SLI.
        if ack.duplicate {
            tracing::info!(
                job_type = letter.job_type,
                reason = letter.reason.as_str(),
                "dead letter already stored"
            );
            return Ok(());
        }
        metrics::counter!("codigo_consumer_dead_letters_total",
            "job_type" => letter.job_type.to_owned(), "reason" => letter.reason.as_str())
        .increment(1);
        tracing::warn!(
            job_type = letter.job_type,
            reason = letter.reason.as_str(),
            error = letter.error,
            attempts = letter.attempts,
            "job dead-lettered"
        );
        Ok(())
    }
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

    async fn handle(&self, payload: &[u8]) -> Result<(), String> {
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
            .map_err(|e| e.to_string())?;
        let message = match stream.get_raw_message(advisory.stream_seq).await {
            Ok(message) => message,
            // Gone from the stream (acknowledged late, handled by another replica, removed by
            // an operator or a limit): Postgres says which of these it was.
            Err(error) if error.to_string().contains("no message found") => {
                return self.handle_gone(&advisory).await
            }
            Err(error) => return Err(error.to_string()),
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
                Ok(Some((status, _))) if status == "succeeded" => {
                    // The last attempt committed after all; only the message is left over.
                    stream
                        .delete_message(advisory.stream_seq)
                        .await
                        .map_err(|e| e.to_string())?;
                    return Ok(());
                }
                Ok(Some((_, Some(error)))) => {
                    last_error = format!(
                        "gave up after {} deliveries; last error: {error}",
                        advisory.deliveries
                    );
                }
                Ok(_) => {}
                Err(error) => return Err(format!("Postgres unavailable: {error}")),
            }
        }
        self.dead_letters
            .publish(DeadLetter {
                job_type: &job_type,
                original_subject: &subject,
                payload: message.payload.clone(),
                original_headers: Some(&message.headers),
                reason: Reason::MaxDeliveries,
                error: &last_error,
                attempts: advisory.deliveries,
                stream_sequence: advisory.stream_seq,
            })
            .await?;
        if let Some(envelope) = &envelope {
            let record = JobRecord {
                id: envelope.id,
                job_type: &job_type,
                payload: Some(&envelope.payload),
                idempotency_key: envelope.idempotency_key.as_deref(),
                tenant: envelope.tenant.as_deref(),
                created_at: envelope.created_at,
                started_at: OffsetDateTime::now_utc(),
                attempts: i32::try_from(advisory.deliveries).unwrap_or(i32::MAX),
            };
            store::record_dead_letter(&self.pool, &record, &last_error)
                .await
                .map_err(|e| format!("Postgres unavailable: {e}"))?;
        }
        match stream.delete_message(advisory.stream_seq).await {
            Ok(_) => Ok(()),
            Err(error) if error.to_string().contains("no message found") => Ok(()),
            Err(error) => Err(error.to_string()),
        }
    }
}

impl AdvisoryWorker {
    /// The advisory's message has left the stream. A job that finished is fine; any other
    /// job would vanish, so it is dead-lettered from what its jobs row holds (its envelope
    /// rebuilt), or, when Postgres knows nothing of it, with an empty body that still names
    /// the sequence: nothing disappears without a dead letter, a metric and an error.
    async fn handle_gone(&self, advisory: &MaxDeliveriesAdvisory) -> Result<(), String> {
        let seq = advisory.stream_seq;
        let row = store::job_at_sequence(&self.pool, seq)
            .await
            .map_err(|e| format!("Postgres unavailable: {e}"))?;
        if let Some(job) = row
            .as_ref()
            .filter(|job| matches!(job.status.as_str(), "succeeded" | "dead_lettered"))
        {
            tracing::info!(job_id = %job.id, status = job.status, stream_seq = seq,
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
        let mut headers = HeaderMap::new();
        headers.insert("Content-Type", "application/json");
        self.dead_letters
            .publish(DeadLetter {
                job_type: &job_type,
                original_subject: &subject,
                payload,
                original_headers: Some(&headers),
                reason: Reason::MaxDeliveries,
                error: &error,
                attempts: advisory.deliveries,
                stream_sequence: seq,
            })
            .await?;
        if let Some(job) = &row {
            let record = JobRecord {
                id: job.id,
                job_type: &job.job_type,
                payload: job.payload.as_ref(),
                idempotency_key: job.idempotency_key.as_deref(),
                tenant: job.tenant.as_deref(),
                created_at: job.created_at,
                started_at: OffsetDateTime::now_utc(),
                attempts: i32::try_from(advisory.deliveries).unwrap_or(i32::MAX),
            };
            store::record_dead_letter(&self.pool, &record, &error)
                .await
                .map_err(|e| format!("Postgres unavailable: {e}"))?;
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

/// Sleeps, or returns early at shutdown.
pub async fn pause(shutdown: &Shutdown, duration: Duration) {
    tokio::select! {
        () = tokio::time::sleep(duration) => {},
        () = shutdown.cancelled() => {},
    }
}
