//! One pull loop per job type: fetch as many jobs as there are free slots, run each in its own
//! task, and map every outcome to exactly one of ack, nak(delay) or term.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use codigo_common::config::JetStreamArgs;
use codigo_common::jetstream::{bind_job_consumer, PullConsumer};
use codigo_common::shutdown::Shutdown;
use codigo_common::{telemetry, Names};
use codigo_schemas::{registry, Envelope};
use futures::StreamExt;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::dlq::{pause, DeadLetter, DeadLetters, Reason};
use crate::handlers::{Handler, Job, Outcome};
use crate::retry::RetryPolicy;
use crate::store::{self, JobRecord};

/// Everything the workers of one process share.
pub struct Shared {
    pub js: jetstream::Context,
    pub names: Names,
    pub pool: sqlx::PgPool,
    pub jetstream: JetStreamArgs,
    pub retry: RetryPolicy,
    pub concurrency: usize,
    pub fetch_expires: Duration,
    pub dead_letters: DeadLetters,
    pub faults: crate::faults::Faults,
}

pub struct Worker {
    pub handler: Arc<dyn Handler>,
    pub shared: Arc<Shared>,
    /// True while the durable consumer is bound (readiness).
    pub bound: Arc<AtomicBool>,
}

fn count_ack(job_type: &'static str, outcome: &'static str) {
    metrics::counter!("codigo_consumer_acks_total", "job_type" => job_type, "outcome" => outcome)
        .increment(1);
}

/// Registers every series at zero so that rates and ratios exist before the first event.
pub fn register_metrics(job_type: &'static str) {
    for outcome in ["ack", "nak", "term"] {
        metrics::counter!("codigo_consumer_acks_total", "job_type" => job_type, "outcome" => outcome)
            .absolute(0);
    }
    for reason in Reason::ALL {
        metrics::counter!("codigo_consumer_dead_letters_total",
            "job_type" => job_type, "reason" => reason.as_str())
        .absolute(0);
    }
    metrics::gauge!("codigo_consumer_in_flight", "job_type" => job_type).set(0.0);
    metrics::gauge!("codigo_consumer_pending_messages", "job_type" => job_type).set(0.0);
}

struct InFlight(&'static str);

impl InFlight {
    fn start(job_type: &'static str) -> Self {
        metrics::gauge!("codigo_consumer_in_flight", "job_type" => job_type).increment(1.0);
        Self(job_type)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("codigo_consumer_in_flight", "job_type" => self.0).decrement(1.0);
    }
}

impl Worker {
    async fn bind(&self) -> Option<PullConsumer> {
        let shared = &self.shared;
        match bind_job_consumer(
            &shared.js,
            &shared.names,
            &shared.jetstream,
            self.handler.job_type(),
        )
        .await
        {
            Ok(consumer) => Some(consumer),
            Err(error) => {
                let job_type = self.handler.job_type();
                tracing::warn!(job_type, %error, "cannot bind consumer; retrying");
                None
            }
        }
    }

    /// Pulls and processes until `shutdown`; then hands back what was fetched but not started,
    /// and gives in-flight jobs `drain_timeout` to finish before naking them too.
    pub async fn run(self, shutdown: Shutdown, drain_timeout: Duration) {
        let job_type = self.handler.job_type();
        let slots = Arc::new(Semaphore::new(self.shared.concurrency));
        // Cancelled when in-flight jobs must give up: they nak and return.
        let hard_stop = Shutdown::new();
        let mut tasks = JoinSet::new();
        let mut consumer: Option<PullConsumer> = None;

        while !shutdown.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = shutdown.cancelled() => break,
            };
            let mut permits = vec![first];
            while let Ok(permit) = slots.clone().try_acquire_owned() {
                permits.push(permit);
            }

            let bound = match consumer.take() {
                Some(c) => c,
                None => match self.bind().await {
                    Some(c) => c,
                    None => {
                        self.bound.store(false, Ordering::Relaxed);
                        pause(&shutdown, Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            let batch = bound
                .batch()
                .max_messages(permits.len())
                .expires(self.shared.fetch_expires)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::warn!(job_type, %error, "pull request failed; rebinding");
                    self.bound.store(false, Ordering::Relaxed);
                    pause(&shutdown, Duration::from_millis(500)).await;
                    continue;
                }
            };
            self.bound.store(true, Ordering::Relaxed);

            let mut healthy = true;
            let mut draining = false;
            loop {
                let next = tokio::select! {
                    biased;
                    () = shutdown.cancelled(), if !draining => { draining = true; continue; }
                    next = batch.next() => next,
                };
                match next {
                    None => break,
                    Some(Ok(message)) => match (draining, permits.pop()) {
                        (false, Some(permit)) => {
                            let handler = self.handler.clone();
                            let shared = self.shared.clone();
                            let stop = hard_stop.clone();
                            tasks.spawn(process(shared, handler, message, permit, stop));
                        }
                        // Fetched after SIGTERM: hand it back, delayed past this pull
                        // request's expiry so that it goes to another replica rather than
                        // bouncing straight back into this draining one.
                        _ => {
                            nak_later(
                                job_type,
                                &message,
                                self.shared.fetch_expires + Duration::from_secs(1),
                            )
                            .await
                        }
                    },
                    Some(Err(error)) => {
                        tracing::warn!(job_type, %error, "message stream error; rebinding");
                        healthy = false;
                        break;
                    }
                }
            }
            if healthy {
                consumer = Some(bound);
            } else {
                self.bound.store(false, Ordering::Relaxed);
            }
        }

        self.bound.store(false, Ordering::Relaxed);
        let in_flight = tasks.len();
        if in_flight > 0 {
            tracing::info!(job_type, in_flight, "draining in-flight jobs");
        }
        let drained = tokio::time::timeout(drain_timeout, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                job_type,
                "drain timeout reached; handing unfinished jobs back"
            );
            hard_stop.cancel();
            while tasks.join_next().await.is_some() {}
        }
        tracing::info!(job_type, "worker stopped");
    }
}

async fn nak_now(job_type: &'static str, message: &jetstream::Message) {
    nak_later(job_type, message, Duration::ZERO).await;
}

async fn nak_later(job_type: &'static str, message: &jetstream::Message, delay: Duration) {
    let kind = if delay.is_zero() {
        AckKind::Nak(None)
    } else {
        AckKind::Nak(Some(delay))
    };
    match message.ack_with(kind).await {
        Ok(()) => count_ack(job_type, "nak"),
        Err(error) => {
            tracing::warn!(job_type, %error, "nak failed; the job returns after its ack wait")
        }
    }
}

/// Why a message never reached its handler.
struct Rejected {
    reason: Reason,
    error: String,
    id: Option<uuid::Uuid>,
    /// The body, when it was at least JSON: its tenant and payload go on the jobs row.
    value: Option<Value>,
}

fn decode(job_type: &str, payload: &[u8]) -> Result<(Envelope, Value), Rejected> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| Rejected {
        reason: Reason::Decode,
        error: format!("body is not JSON: {e}"),
        id: None,
        value: None,
    })?;
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .and_then(|s| uuid::Uuid::parse_str(s).ok());
    let schema = |error: String| Rejected {
        reason: Reason::Schema,
        error,
        id,
        value: Some(value.clone()),
    };
    registry().validate_envelope(&value).map_err(|e| match e {
        codigo_schemas::SchemaError::Invalid(violations) => schema(
            violations
                .iter()
                .map(|v| {
                    format!(
                        "{}: {}",
                        if v.pointer.is_empty() {
                            "/"
                        } else {
                            &v.pointer
                        },
                        v.message
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        ),
        other => schema(other.to_string()),
    })?;
    let envelope: Envelope =
        serde_json::from_value(value.clone()).map_err(|e| schema(format!("envelope: {e}")))?;
    if envelope.job_type != job_type {
        return Err(schema(format!(
            "envelope type {:?} arrived on the {job_type} subject",
            envelope.job_type
        )));
    }
    Ok((envelope, value))
}

enum Attempt<T> {
    Finished(T),
    Stopped,
}

/// Runs `work` while telling JetStream the job is alive, so a slow job is not redelivered to
/// another worker while this one is still on it.
async fn with_progress<F: std::future::Future>(
    message: &jetstream::Message,
    ack_wait: Duration,
    hard_stop: &Shutdown,
    work: F,
) -> Attempt<F::Output> {
    let every = (ack_wait / 3).max(Duration::from_millis(500));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tokio::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return Attempt::Finished(output),
            _ = ticker.tick() => {
                if let Err(error) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(%error, "progress signal failed");
                }
            }
            () = hard_stop.cancelled() => return Attempt::Stopped,
        }
    }
}

async fn process(
    shared: Arc<Shared>,
    handler: Arc<dyn Handler>,
    message: jetstream::Message,
    permit: OwnedSemaphorePermit,
    hard_stop: Shutdown,
) {
    let _permit = permit;
    let job_type = handler.job_type();
    let _in_flight = InFlight::start(job_type);
    let (attempt, stream_sequence) = message
        .info()
        .map(|info| {
            (
                u64::try_from(info.delivered).unwrap_or(1),
                info.stream_sequence,
            )
        })
        .unwrap_or((1, 0));
    let span = tracing::info_span!(
        "process_job",
        job_type,
        attempt,
        job_id = tracing::field::Empty
    );
    telemetry::link_to_remote_parent(&span, message.headers.as_ref());
    let started = Instant::now();
    async {
        let subject = message.subject.to_string();
        let delivery = Delivery {
            job_type,
            message: &message,
            subject: &subject,
            attempt,
            stream_sequence,
        };
        let (envelope, _) = match decode(job_type, &message.payload) {
            Ok(decoded) => decoded,
            Err(rejected) => {
                // An envelope with a usable id still gets its jobs row, so that the submitter
                // can see what became of it.
                let value = rejected.value.as_ref();
                let record = rejected.id.map(|id| JobRecord {
                    id,
                    job_type,
                    payload: value.and_then(|v| v.get("payload")),
                    idempotency_key: value
                        .and_then(|v| v.get("idempotency_key"))
                        .and_then(Value::as_str),
                    tenant: value.and_then(|v| v.get("tenant")).and_then(Value::as_str),
                    created_at: OffsetDateTime::now_utc(),
                    started_at: OffsetDateTime::now_utc(),
                    attempts: i32::try_from(attempt).unwrap_or(i32::MAX),
                });
                if let Some(id) = rejected.id {
                    tracing::Span::current().record("job_id", tracing::field::display(id));
                }
                dead_letter(
                    &shared,
                    &delivery,
                    rejected.reason,
                    &rejected.error,
                    record.as_ref(),
                )
                .await;
                return;
            }
        };
        tracing::Span::current().record("job_id", tracing::field::display(envelope.id));
        let record = JobRecord {
            id: envelope.id,
            job_type,
            payload: Some(&envelope.payload),
            idempotency_key: envelope.idempotency_key.as_deref(),
            tenant: envelope.tenant.as_deref(),
            created_at: envelope.created_at,
            started_at: OffsetDateTime::now_utc(),
            attempts: i32::try_from(attempt).unwrap_or(i32::MAX),
        };
        let job = Job {
            envelope: &envelope,
            record: record.clone(),
            attempt,
        };

        let ack_wait = shared.jetstream.effective_ack_wait();
        let mut unavailable_attempts = 0u64;
        let outcome = loop {
            match with_progress(&message, ack_wait, &hard_stop, handler.handle(&job)).await {
                Attempt::Finished(Ok(outcome)) => break outcome,
                Attempt::Finished(Err(unavailable)) => {
                    // Not the job's fault: keep it (and its delivery count) and wait.
                    unavailable_attempts += 1;
                    let wait = shared
                        .retry
                        .delay(unavailable_attempts)
                        .min(Duration::from_secs(30));
                    tracing::warn!(error = %unavailable, ?wait, "dependency unavailable; holding");
                    let pause = tokio::time::sleep(wait);
                    let waited = with_progress(&message, ack_wait, &hard_stop, pause).await;
                    if let Attempt::Stopped = waited {
                        nak_now(job_type, &message).await;
                        return;
                    }
                }
                Attempt::Stopped => {
                    nak_now(job_type, &message).await;
                    return;
                }
            }
        };
        metrics::histogram!("codigo_job_processing_duration_seconds", "job_type" => job_type)
            .record(started.elapsed().as_secs_f64());

        match outcome {
            Outcome::Succeeded => {
                shared.faults.after_commit();
                match message.ack().instrument(tracing::info_span!("ack")).await {
                    Ok(()) => {
                        count_ack(job_type, "ack");
                        let age = OffsetDateTime::now_utc() - envelope.created_at;
                        metrics::histogram!(
                            "codigo_job_end_to_end_duration_seconds", "job_type" => job_type
                        )
                        .record(age.as_seconds_f64().max(0.0));
                    }
                    // Committed but not acked: the redelivery finds the job done and acks it.
                    Err(error) => tracing::warn!(%error, "ack failed after commit"),
                }
            }
            Outcome::Retry { after, error } => {
                if let Err(db) = store::record_retry(&shared.pool, &record, &error).await {
                    tracing::debug!(error = %db, "could not record the retry");
                }
                let delay = after.unwrap_or_else(|| shared.retry.delay(attempt));
                tracing::info!(%error, ?delay, attempt, "job will be retried");
                match message.ack_with(AckKind::Nak(Some(delay))).await {
                    Ok(()) => count_ack(job_type, "nak"),
                    Err(e) => {
                        tracing::warn!(error = %e, "nak failed; the job returns after ack wait")
                    }
                }
            }
            Outcome::Permanent { error } => {
                dead_letter(&shared, &delivery, Reason::Permanent, &error, Some(&record)).await;
            }
        }
    }
    .instrument(span)
    .await;
}

/// One delivery of a message, as much as dead-lettering needs to know.
struct Delivery<'a> {
    job_type: &'static str,
    message: &'a jetstream::Message,
    subject: &'a str,
    attempt: u64,
    stream_sequence: u64,
}

/// Dead-letters the message, then terminates it. If the dead letter cannot be stored, the
/// message is naked instead: nothing is dropped without a dead letter.
async fn dead_letter(
    shared: &Shared,
    delivery: &Delivery<'_>,
    reason: Reason,
    error: &str,
    record: Option<&JobRecord<'_>>,
) {
    let Delivery {
        job_type,
        message,
        subject,
        attempt,
        stream_sequence,
    } = *delivery;
    let stored = shared
        .dead_letters
        .publish(DeadLetter {
            job_type,
            original_subject: subject,
            payload: message.payload.clone(),
            original_headers: message.headers.as_ref(),
            reason,
            error,
            attempts: attempt,
            stream_sequence,
        })
        .await;
    if let Err(dlq_error) = stored {
        tracing::error!(error = %dlq_error, "cannot store the dead letter; retrying the job later");
        let delay = shared.retry.delay(attempt);
        if message.ack_with(AckKind::Nak(Some(delay))).await.is_ok() {
            count_ack(job_type, "nak");
        }
        return;
    }
    if let Some(record) = record {
        if let Err(db) = store::record_dead_letter(&shared.pool, record, error).await {
            tracing::warn!(error = %db, "dead letter stored but the jobs row was not updated");
        }
    }
    match message.ack_with(AckKind::Term).await {
        Ok(()) => count_ack(job_type, "term"),
        Err(e) => {
            tracing::warn!(error = %e, "term failed; the redelivery is dead-lettered again")
        }
    }
}

/// Publishes each served consumer's backlog as `codigo_consumer_pending_messages`.
pub async fn report_pending(shared: Arc<Shared>, job_types: Vec<&'static str>, shutdown: Shutdown) {
    while !shutdown.is_cancelled() {
        if let Ok(stream) = shared.js.get_stream(shared.names.jobs_stream()).await {
            for job_type in &job_types {
                if let Ok(info) = stream.consumer_info(shared.names.durable(job_type)).await {
                    #[allow(clippy::cast_precision_loss)]
                    metrics::gauge!("codigo_consumer_pending_messages", "job_type" => *job_type)
                        .set(info.num_pending as f64);
                }
            }
        }
        pause(&shutdown, Duration::from_secs(5)).await;
    }
}
