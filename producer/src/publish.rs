//! From an accepted request to a stored message: envelope, headers, JetStream publish with
//! its acknowledgement.
use std::time::Duration;

use async_nats::jetstream::context::{
    PublishAckFuture, PublishError as NatsPublishError, PublishErrorKind,
};
use async_nats::jetstream::{self, message::PublishMessage, ErrorCode};
use bytes::Bytes;
use codigo_common::contract::headers as codigo_headers;
use codigo_common::{nats, telemetry, Names};
use codigo_schemas::Envelope;
use futures::future::join_all;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use crate::schedule;

/// A validated job, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub job_type: String,
    pub payload: Value,
    pub idempotency_key: Option<String>,
    /// A CloudEvent's `source`: with `idempotency_key` (its `id`) it makes the job's id.
    pub event_source: Option<String>,
    /// A delayed job's due time: it is stored as a message schedule until then.
    pub run_at: Option<OffsetDateTime>,
    /// Not started by then, the job is not run.
    pub expires_at: Option<OffsetDateTime>,
    /// Where the job's final state is POSTed, as a signed CloudEvent.
    pub callback_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: Uuid,
    pub duplicate: bool,
    /// The message's sequence in the stream that stored it.
    pub sequence: u64,
    /// The envelope as published (JSON).
    pub envelope: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("JetStream is unreachable; retry shortly")]
    Disconnected,
    /// The message can never be stored: larger than NATS or the stream takes in one message.
    #[error("the job's message is larger than the {limit} bytes NATS takes in one message")]
    TooLarge { limit: usize },
    /// The work stream reached its limits (discard new).
    #[error("the work stream is full: {0}")]
    QueueFull(String),
    #[error("JetStream did not store the job: {0}; retry shortly")]
    NotStored(String),
}

/// How long a publish may take: the whole budget, and each attempt within it.
#[derive(Debug, Clone, Copy)]
pub struct PublishTimeouts {
    pub budget: Duration,
    pub attempt: Duration,
}

#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    client: async_nats::Client,
    names: Names,
    timeouts: PublishTimeouts,
}

/// A message ready to send, kept so that a retry sends the very same bytes and `Nats-Msg-Id`.
struct Outgoing {
    id: Uuid,
    subject: String,
    payload: Bytes,
    headers: async_nats::HeaderMap,
    /// Without an idempotency key the id is fresh, so a duplicate ack can only answer an
    /// earlier attempt of this same publish.
    fresh_id: bool,
}

/// Failures that may clear up within the budget: an ack lost or late (leader election, a
/// paused or restarted server), no stream answering for the moment, a dropped connection.
fn retriable(error: &NatsPublishError) -> bool {
    matches!(
        error.kind(),
        PublishErrorKind::TimedOut
            | PublishErrorKind::StreamNotFound
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::MaxAckPending
    )
}

/// The JetStream error code of a refused publish, if the server gave one.
fn error_code(error: &NatsPublishError) -> Option<ErrorCode> {
    std::error::Error::source(error)?
        .downcast_ref::<jetstream::Error>()
        .map(jetstream::Error::error_code)
}

impl Publisher {
    pub fn new(client: async_nats::Client, names: Names, timeouts: PublishTimeouts) -> Self {
        let js = jetstream::ContextBuilder::new()
            .timeout(timeouts.attempt)
            .ack_timeout(timeouts.attempt)
            .build(client.clone());
        Self {
            js,
            client,
            names,
            timeouts,
        }
    }

    /// The largest message NATS stores: the server's `max_payload` (read from the connection)
    /// or the work stream's message size limit, whichever is smaller.
    pub fn max_message_bytes(&self) -> usize {
        let stream_limit =
            usize::try_from(codigo_common::jetstream::MAX_MESSAGE_BYTES).unwrap_or(usize::MAX);
        match self.client.server_info().max_payload {
            0 => stream_limit,
            server => server.min(stream_limit),
        }
    }

    fn classify(&self, error: &NatsPublishError) -> PublishError {
        if error.kind() == PublishErrorKind::MaxPayloadExceeded {
            return PublishError::TooLarge {
                limit: self.max_message_bytes(),
            };
        }
        match error_code(error) {
            Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) => PublishError::TooLarge {
                limit: self.max_message_bytes(),
            },
            // The account's or the server's storage running out.
            Some(ErrorCode::INSUFFICIENT_RESOURCES | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED) => {
                PublishError::QueueFull(error.to_string())
            }
            // 10077 wraps every store failure; the server tells a stream at its limits
            // ("maximum messages exceeded", "maximum bytes exceeded") only in the text.
            Some(ErrorCode::STREAM_STORE_FAILED) if error.to_string().contains("maximum") => {
                PublishError::QueueFull(error.to_string())
            }
            _ => PublishError::NotStored(error.to_string()),
        }
    }

    pub fn is_connected(&self) -> bool {
        nats::is_connected(&self.client)
    }

    fn message(&self, tenant: &str, job: NewJob) -> Outgoing {
        let fresh_id = job.idempotency_key.is_none();
        let id = match (&job.event_source, &job.idempotency_key) {
            (Some(source), Some(event_id)) => {
                codigo_schemas::event_job_id(tenant, &job.job_type, source, event_id)
            }
            _ => codigo_schemas::job_id(tenant, &job.job_type, job.idempotency_key.as_deref()),
        };
        let subject = match job.run_at {
            Some(_) => self.names.scheduled_subject(&id, &job.job_type),
            None => self.names.job_subject(&job.job_type),
        };
        let envelope = Envelope {
            id,
            job_type: job.job_type,
            payload: job.payload,
            idempotency_key: job.idempotency_key,
            created_at: OffsetDateTime::now_utc(),
            tenant: Some(tenant.to_owned()),
            run_at: job.run_at,
            expires_at: job.expires_at,
            callback_url: job.callback_url,
        };
        let body = serde_json::to_vec(&envelope).unwrap_or_default();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.to_string().as_str());
        headers.insert(codigo_headers::JOB_TYPE, envelope.job_type.as_str());
        headers.insert("Content-Type", "application/json");
        if let Some(run_at) = job.run_at {
            // The server strips these (and Nats-Msg-Id) from the job it publishes when due.
            headers.insert("Nats-Schedule", schedule::schedule_header(run_at).as_str());
            headers.insert(
                "Nats-Schedule-Target",
                self.names.due_subject(&envelope.job_type).as_str(),
            );
            headers.insert("Nats-Schedule-TTL", codigo_common::jetstream::DUE_COPY_TTL);
        }
        telemetry::inject_trace_context(&mut headers);
        Outgoing {
            id,
            subject,
            payload: Bytes::from(body),
            headers,
            fresh_id,
        }
    }

    async fn send(&self, message: &Outgoing) -> Result<PublishAckFuture, NatsPublishError> {
        let publish = PublishMessage::build()
            .payload(message.payload.clone())
            .headers(message.headers.clone());
        self.js.send_publish(message.subject.clone(), publish).await
    }

    /// Publishes one job and waits for JetStream to store it.
    pub async fn publish(&self, tenant: &str, job: NewJob) -> Result<Published, PublishError> {
        let span =
            telemetry::detail_span(|| tracing::info_span!("publish", job_type = %job.job_type));
        self.send_all(tenant, vec![job])
            .instrument(span)
            .await
            .pop()
            .unwrap_or(Err(PublishError::NotStored("nothing published".into())))
    }

    /// Sends every job before awaiting any acknowledgement, so a batch costs about one round
    /// trip; each job gets its own result, in order.
    #[tracing::instrument(name = "publish_batch", skip_all, fields(jobs = jobs.len()))]
    pub async fn publish_many(
        &self,
        tenant: &str,
        jobs: Vec<NewJob>,
    ) -> Vec<Result<Published, PublishError>> {
        self.send_all(tenant, jobs).await
    }

    async fn send_all(
        &self,
        tenant: &str,
        jobs: Vec<NewJob>,
    ) -> Vec<Result<Published, PublishError>> {
        // A disconnected client would buffer the messages and maybe deliver them later:
        // refuse now rather than answer 503 for a job that may still be stored.
        if !self.is_connected() {
            return jobs
                .iter()
                .map(|_| Err(PublishError::Disconnected))
                .collect();
        }
        let deadline = Instant::now() + self.timeouts.budget;
        let messages: Vec<Outgoing> = jobs
            .into_iter()
            .map(|job| self.message(tenant, job))
            .collect();
        let mut results: Vec<Option<Result<Published, PublishError>>> =
            messages.iter().map(|_| None).collect();
        let mut waiting: Vec<usize> = (0..messages.len()).collect();
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0u32;
        // Each round sends every job still waiting, in order, before awaiting any ack; a job
        // whose ack timed out is sent again with the same Nats-Msg-Id, so JetStream stores it
        // at most once, until the budget runs out.
        loop {
            attempt += 1;
            let mut pending = Vec::with_capacity(waiting.len());
            for &index in &waiting {
                pending.push((index, self.send(&messages[index]).await));
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcomes = join_all(pending.into_iter().map(|(index, sent)| async move {
                let acked = match sent {
                    Ok(ack) => tokio::time::timeout(remaining, ack)
                        .await
                        .unwrap_or_else(|_| Err(NatsPublishError::new(PublishErrorKind::TimedOut))),
                    Err(error) => Err(error),
                };
                (index, acked)
            }))
            .await;
            let mut again = Vec::new();
            let retry_possible = Instant::now() + backoff < deadline;
            for (index, acked) in outcomes {
                let message = &messages[index];
                results[index] = Some(match acked {
                    Ok(ack) => Ok(Published {
                        id: message.id,
                        duplicate: ack.duplicate && !(attempt > 1 && message.fresh_id),
                        sequence: ack.sequence,
                        envelope: message.payload.clone(),
                    }),
                    Err(error) if retriable(&error) && retry_possible => {
                        tracing::warn!(%error, attempt, id = %message.id, "publish not acknowledged; sending it again");
                        again.push(index);
                        continue;
                    }
                    Err(error) => Err(self.classify(&error)),
                });
            }
            if again.is_empty() {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            waiting = again;
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(PublishError::NotStored("not sent".into()))))
            .collect()
    }

    /// Job `id` while it waits for its `run_at`.
    pub async fn scheduled(
        &self,
        id: Uuid,
    ) -> Result<Option<schedule::Waiting>, schedule::LookupError> {
        schedule::find(&self.js, &self.names, id).await
    }

    /// Removes a waiting job; `false` once it has become due.
    pub async fn unschedule(&self, sequence: u64) -> Result<bool, schedule::LookupError> {
        schedule::remove(&self.js, self.names.scheduled_stream(), sequence).await
    }

    /// Removes a cancelled job's message from the work stream; `false` once it has left.
    pub async fn unqueue(&self, sequence: u64) -> Result<bool, schedule::LookupError> {
        schedule::remove(&self.js, self.names.jobs_stream(), sequence).await
    }

    /// Whether JetStream answers and the work stream exists.
    pub async fn ready(&self) -> bool {
        self.is_connected() && self.js.get_stream(self.names.jobs_stream()).await.is_ok()
    }
}
