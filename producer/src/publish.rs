//! From an accepted request to a stored message: envelope, headers, JetStream publish with
//! its acknowledgement.
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use codigo_common::{nats, telemetry, Names};
use codigo_schemas::Envelope;
use futures::future::join_all;
use serde_json::Value;
use time::OffsetDateTime;
use tracing::Instrument;
use uuid::Uuid;

/// A validated job, ready to be stored.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub job_type: String,
    pub payload: Value,
    pub idempotency_key: Option<String>,
    /// A CloudEvent's `source`: with `idempotency_key` (its `id`) it makes the job's id.
    pub event_source: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub id: Uuid,
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("JetStream is unreachable; retry shortly")]
    Disconnected,
    #[error("JetStream did not store the job: {0}; retry shortly")]
    NotStored(String),
}

#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    client: async_nats::Client,
    names: Names,
}

impl Publisher {
    pub fn new(client: async_nats::Client, names: Names, ack_timeout: Duration) -> Self {
        let js = jetstream::ContextBuilder::new()
            .timeout(ack_timeout)
            .ack_timeout(ack_timeout)
            .build(client.clone());
        Self { js, client, names }
    }

    pub fn is_connected(&self) -> bool {
        nats::is_connected(&self.client)
    }

    fn message(&self, tenant: &str, job: NewJob) -> (Uuid, String, PublishMessage) {
        let id = match (&job.event_source, &job.idempotency_key) {
            (Some(source), Some(event_id)) => {
                codigo_schemas::event_job_id(tenant, &job.job_type, source, event_id)
            }
            _ => codigo_schemas::job_id(tenant, &job.job_type, job.idempotency_key.as_deref()),
        };
        let subject = self.names.job_subject(&job.job_type);
        let envelope = Envelope {
            id,
            job_type: job.job_type,
            payload: job.payload,
            idempotency_key: job.idempotency_key,
            created_at: OffsetDateTime::now_utc(),
            tenant: Some(tenant.to_owned()),
        };
        let body = serde_json::to_vec(&envelope).unwrap_or_default();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.to_string().as_str());
        headers.insert("Codigo-Job-Type", envelope.job_type.as_str());
        headers.insert("Content-Type", "application/json");
        telemetry::inject_trace_context(&mut headers);
        let message = PublishMessage::build()
            .payload(Bytes::from(body))
            .headers(headers);
        (id, subject, message)
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
        let mut pending = Vec::with_capacity(jobs.len());
        for job in jobs {
            let (id, subject, message) = self.message(tenant, job);
            pending.push((id, self.js.send_publish(subject, message).await));
        }
        join_all(pending.into_iter().map(|(id, sent)| async move {
            let ack = sent
                .map_err(|e| PublishError::NotStored(e.to_string()))?
                .await
                .map_err(|e| PublishError::NotStored(e.to_string()))?;
            Ok(Published {
                id,
                duplicate: ack.duplicate,
            })
        }))
        .await
    }

    /// Whether JetStream answers and the work stream exists.
    pub async fn ready(&self) -> bool {
        self.is_connected() && self.js.get_stream(self.names.jobs_stream()).await.is_ok()
    }
}
