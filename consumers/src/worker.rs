//! One pull loop per job type: fetch as many jobs as there are free slots, run each in its own
//! task, and map every outcome to exactly one of ack, nak(delay) or term.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use codigo_common::config::JetStreamArgs;
use codigo_common::jetstream::{bind_job_consumer, PullConsumer};
use codigo_common::shutdown::Shutdown;
use codigo_common::{telemetry, Names};
use codigo_schemas::{registry, Envelope};
use futures::StreamExt;
use opentelemetry::trace::TraceContextExt;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::dlq::{pause, DeadLetter, DeadLetters, Reason};
use crate::handlers::{Handler, Job, Outcome};
use crate::retry::RetryPolicy;
use crate::store::{self, JobRecord};

/// Largest group handled in one go: beyond it a transaction only grows longer, while more
/// groups in flight overlap their round trips.
const MAX_GROUP: usize = 128;

/// How long a group waits for the rest of its pull to arrive before it is handled: a
/// transaction for 128 jobs costs about what one for 20 does, and under load a pull's
/// messages arrive over a few socket reads. At low rates it is the latency a job pays.
const GROUP_LINGER: Duration = Duration::from_millis(1);

/// How long a pull waits for a whole group's slots before it goes with the ones that are free.
/// Groups finish in one go and free their slots together, so under load this is rarely reached;
/// when it is, slow jobs hold the rest and the free slots must not wait for them.
const GROUP_WAIT: Duration = Duration::from_millis(20);

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

/// The per-job series of one job type, looked up once per group rather than once per job.
struct Meters {
    acked: metrics::Counter,
    processing: metrics::Histogram,
    end_to_end: metrics::Histogram,
}

impl Meters {
    fn of(job_type: &'static str) -> Self {
        Self {
            acked: metrics::counter!("codigo_consumer_acks_total",
                "job_type" => job_type, "outcome" => "ack"),
            processing: metrics::histogram!("codigo_job_processing_duration_seconds",
                "job_type" => job_type),
            end_to_end: metrics::histogram!("codigo_job_end_to_end_duration_seconds",
                "job_type" => job_type),
        }
    }
}

struct InFlight(&'static str, f64);

impl InFlight {
    #[allow(clippy::cast_precision_loss)]
    fn start(job_type: &'static str, jobs: usize) -> Self {
        let jobs = jobs as f64;
        metrics::gauge!("codigo_consumer_in_flight", "job_type" => job_type).increment(jobs);
        Self(job_type, jobs)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("codigo_consumer_in_flight", "job_type" => self.0).decrement(self.1);
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
        let group_size = self.shared.concurrency.min(MAX_GROUP);
        // Cancelled when in-flight jobs must give up: they nak and return.
        let hard_stop = Shutdown::new();
        let mut tasks = JoinSet::new();
        let mut consumer: Option<PullConsumer> = None;

        while !shutdown.is_cancelled() {
            while tasks.try_join_next().is_some() {}
            // Pull once a slot is free, after a short wait for a whole group's: pulling each
            // slot as it trickles free would keep every later group small, but waiting for a
            // whole group would let a few slow jobs stop this worker.
            let mut permits = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                () = shutdown.cancelled() => break,
            };
            while let Ok(more) = slots.clone().try_acquire_owned() {
                permits.merge(more);
            }
            if permits.num_permits() < group_size {
                let missing = u32::try_from(group_size - permits.num_permits()).unwrap_or(u32::MAX);
                tokio::select! {
                    more = slots.clone().acquire_many_owned(missing) => match more {
                        Ok(more) => permits.merge(more),
                        Err(_) => break,
                    },
                    () = tokio::time::sleep(GROUP_WAIT) => {}
                    () = shutdown.cancelled() => break,
                }
                while let Ok(more) = slots.clone().try_acquire_owned() {
                    permits.merge(more);
                }
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
                .max_messages(permits.num_permits())
                .expires(self.shared.fetch_expires)
                .messages()
                .await;
            let batch = match batch {
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
            // Messages that arrived together are handled together: one transaction for a
            // group of ledger.post jobs instead of one per job.
            let mut batch = batch.fuse();
            loop {
                let next = tokio::select! {
                    biased;
                    () = shutdown.cancelled(), if !draining => { draining = true; continue; }
                    next = batch.next() => next,
                };
                let Some(first) = next else { break };
                let mut items = vec![first];
                let until = tokio::time::sleep(GROUP_LINGER);
                tokio::pin!(until);
                while items.len() < group_size {
                    tokio::select! {
                        biased;
                        next = batch.next() => match next {
                            Some(item) => items.push(item),
                            None => break,
                        },
                        () = &mut until => break,
                    }
                }
                let mut messages = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Ok(message) => messages.push(message),
                        Err(error) => {
                            tracing::warn!(job_type, %error, "message stream error; rebinding");
                            healthy = false;
                        }
                    }
                }
                if messages.is_empty() {
                    // Only stream errors arrived.
                } else if let Some(mut taken) = permits.split(messages.len()).filter(|_| !draining)
                {
                    // A handler that shares no work between jobs gets them one by one, so that
                    // a slow job holds only its own slot and delays no other.
                    let groups: Vec<(Vec<jetstream::Message>, OwnedSemaphorePermit)> = if self
                        .handler
                        .handles_groups()
                    {
                        vec![(messages, taken)]
                    } else {
                        messages
                            .into_iter()
                            .filter_map(|message| taken.split(1).map(|slot| (vec![message], slot)))
                            .collect()
                    };
                    for (messages, taken) in groups {
                        let handler = self.handler.clone();
                        let shared = self.shared.clone();
                        let stop = hard_stop.clone();
                        tasks.spawn(process_group(shared, handler, messages, taken, stop));
                    }
                } else {
                    // Fetched after SIGTERM (or, impossibly, beyond the free slots): hand them
                    // back, delayed past this pull request's expiry so that they go to another
                    // replica rather than bouncing straight back into this draining one.
                    let delay = self.shared.fetch_expires + Duration::from_secs(1);
                    for message in &messages {
                        nak_later(job_type, message, delay).await;
                    }
                }
                if !healthy {
                    break;
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

fn decode(job_type: &str, payload: &[u8]) -> Result<Envelope, Rejected> {
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
    if value.get("type").and_then(Value::as_str) != Some(job_type) {
        return Err(schema(format!(
            "envelope type {} arrived on the {job_type} subject",
            value.get("type").unwrap_or(&Value::Null)
        )));
    }
    // Valid against the schema, so it deserializes; taken apart rather than copied.
    serde_json::from_value(value).map_err(|e| Rejected {
        reason: Reason::Schema,
        error: format!("envelope: {e}"),
        id,
        value: None,
    })
}

enum Attempt<T> {
    Finished(T),
    Stopped,
}

/// When the jobs of one delivery last told JetStream they are alive. It spans every step of
/// the delivery (handler runs and the pauses between them): a clock restarted per step would
/// never fire while a held job alternates short attempts and short pauses, and JetStream would
/// redeliver a job its worker still holds.
struct Progress {
    every: Duration,
    next: tokio::time::Instant,
}

impl Progress {
    fn new(ack_wait: Duration) -> Self {
        let every = (ack_wait / 3).max(Duration::from_millis(500));
        Self {
            every,
            next: tokio::time::Instant::now() + every,
        }
    }
}

/// Runs `work` while telling JetStream the jobs are alive, so a slow job is not redelivered to
/// another worker while this one is still on it.
async fn with_progress<F: std::future::Future>(
    messages: &[&jetstream::Message],
    progress: &mut Progress,
    hard_stop: &Shutdown,
    work: F,
) -> Attempt<F::Output> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return Attempt::Finished(output),
            () = tokio::time::sleep_until(progress.next) => {
                for message in messages {
                    if let Err(error) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(%error, "progress signal failed");
                    }
                }
                progress.next = tokio::time::Instant::now() + progress.every;
            }
            () = hard_stop.cancelled() => return Attempt::Stopped,
        }
    }
}

/// A message whose envelope decoded and validated, ready for its handler.
struct Decoded<'a> {
    delivery: Delivery<'a>,
    /// The job's own `process_job` span, made once something needs it: an exported trace (its
    /// group's span links to it), a job handled alone, a log line about this job. A job that
    /// succeeds within a group while traces are not exported then costs no span of its own.
    span: OnceLock<tracing::Span>,
    envelope: Envelope,
}

impl Decoded<'_> {
    fn span(&self) -> &tracing::Span {
        self.span
            .get_or_init(|| job_span(&self.delivery, Some(self.envelope.id)))
    }
}

/// A job's `process_job` span, continuing the trace its message carries.
fn job_span(delivery: &Delivery<'_>, job_id: Option<uuid::Uuid>) -> tracing::Span {
    let span = tracing::info_span!(
        "process_job",
        job_type = delivery.job_type,
        attempt = delivery.attempt,
        job_id = tracing::field::Empty
    );
    telemetry::link_to_remote_parent(&span, delivery.message.headers.as_ref());
    if let Some(id) = job_id {
        span.record("job_id", tracing::field::display(id));
    }
    span
}

fn delivery_of<'a>(
    job_type: &'static str,
    message: &'a jetstream::Message,
    subject: &'a str,
) -> Delivery<'a> {
    let (attempt, stream_sequence) = message
        .info()
        .map(|info| {
            (
                u64::try_from(info.delivered).unwrap_or(1),
                info.stream_sequence,
            )
        })
        .unwrap_or((1, 0));
    Delivery {
        job_type,
        message,
        subject,
        attempt,
        stream_sequence,
    }
}

fn record_of<'a>(envelope: &'a Envelope, job_type: &'static str, attempt: u64) -> JobRecord<'a> {
    JobRecord {
        id: envelope.id,
        job_type,
        payload: Some(&envelope.payload),
        idempotency_key: envelope.idempotency_key.as_deref(),
        tenant: envelope.tenant.as_deref(),
        created_at: envelope.created_at,
        started_at: OffsetDateTime::now_utc(),
        attempts: i32::try_from(attempt).unwrap_or(i32::MAX),
    }
}

/// Decodes and validates one message; what fails is dead-lettered here.
async fn decode_or_dead_letter<'a>(shared: &Shared, delivery: Delivery<'a>) -> Option<Decoded<'a>> {
    let job_type = delivery.job_type;
    match decode(job_type, &delivery.message.payload) {
        Ok(envelope) => Some(Decoded {
            delivery,
            span: OnceLock::new(),
            envelope,
        }),
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
                attempts: i32::try_from(delivery.attempt).unwrap_or(i32::MAX),
            });
            let reason = rejected.reason;
            dead_letter(shared, &delivery, reason, &rejected.error, record.as_ref())
                .instrument(job_span(&delivery, rejected.id))
                .await;
            None
        }
    }
}

/// Runs the handler over a group of jobs and settles each: ack, nak(delay) or term.
async fn process_group(
    shared: Arc<Shared>,
    handler: Arc<dyn Handler>,
    messages: Vec<jetstream::Message>,
    permits: OwnedSemaphorePermit,
    hard_stop: Shutdown,
) {
    // One slot per job, given back as soon as that job is settled.
    let mut permits = permits;
    let mut slots: Vec<Option<OwnedSemaphorePermit>> =
        messages.iter().map(|_| permits.split(1)).collect();
    drop(permits);
    let job_type = handler.job_type();
    let _in_flight = InFlight::start(job_type, messages.len());
    let started = Instant::now();

    let mut decoded = Vec::with_capacity(messages.len());
    let mut job_slots = Vec::with_capacity(messages.len());
    for (message, slot) in messages.iter().zip(&mut slots) {
        let delivery = delivery_of(job_type, message, message.subject.as_str());
        if let Some(ok) = decode_or_dead_letter(&shared, delivery).await {
            decoded.push(ok);
            job_slots.push(slot.take());
        } else {
            drop(slot.take());
        }
    }
    if decoded.is_empty() {
        return;
    }
    let jobs: Vec<Job<'_>> = decoded
        .iter()
        .map(|d| Job {
            envelope: &d.envelope,
            record: record_of(&d.envelope, job_type, d.delivery.attempt),
            attempt: d.delivery.attempt,
        })
        .collect();

    // One job keeps its own trace; a group runs under a span linked to each job's trace.
    let group_span = if decoded.len() == 1 {
        decoded[0].span().clone()
    } else {
        let span = tracing::info_span!("process_batch", job_type, jobs = decoded.len());
        if telemetry::traces_exported() {
            for d in &decoded {
                span.add_link(d.span().context().span().span_context().clone());
            }
        }
        span
    };

    let mut progress = Progress::new(shared.jetstream.effective_ack_wait());
    let mut outcomes: Vec<Option<Outcome>> = vec![None; jobs.len()];
    let mut waiting: Vec<usize> = (0..jobs.len()).collect();
    let mut unavailable_attempts = 0u64;
    while !waiting.is_empty() {
        let group: Vec<&Job<'_>> = waiting.iter().map(|i| &jobs[*i]).collect();
        let held: Vec<&jetstream::Message> = waiting
            .iter()
            .map(|i| decoded[*i].delivery.message)
            .collect();
        let work = handler.handle_batch(&group).instrument(group_span.clone());
        let results = match with_progress(&held, &mut progress, &hard_stop, work).await {
            Attempt::Finished(results) => results,
            Attempt::Stopped => {
                for message in held {
                    nak_now(job_type, message).await;
                }
                return;
            }
        };
        let mut still_waiting = Vec::new();
        let mut unavailable = None;
        for (index, result) in waiting.iter().zip(results) {
            match result {
                Ok(outcome) => outcomes[*index] = Some(outcome),
                Err(error) => {
                    unavailable = Some(error);
                    still_waiting.push(*index);
                }
            }
        }
        waiting = still_waiting;
        if let Some(error) = unavailable {
            // Not the jobs' fault: keep them (and their delivery counts) and wait.
            unavailable_attempts += 1;
            let wait = shared
                .retry
                .delay(unavailable_attempts)
                .min(Duration::from_secs(30));
            tracing::warn!(%error, ?wait, jobs = waiting.len(), "dependency unavailable; holding");
            let held: Vec<&jetstream::Message> = waiting
                .iter()
                .map(|i| decoded[*i].delivery.message)
                .collect();
            let pause = tokio::time::sleep(wait);
            if let Attempt::Stopped = with_progress(&held, &mut progress, &hard_stop, pause).await {
                for message in held {
                    nak_now(job_type, message).await;
                }
                return;
            }
        }
    }

    let meters = Meters::of(job_type);
    meters
        .processing
        .record_many(started.elapsed().as_secs_f64(), decoded.len());
    // Settling writes to Postgres (retries, dead letters), which may be slow: the jobs not yet
    // acked, naked or termed keep signalling progress meanwhile, or JetStream would hand them to
    // another worker while this one still settles them. Settling is never cut short.
    let settling = Shutdown::new();
    let unsettled: Vec<&jetstream::Message> = decoded.iter().map(|d| d.delivery.message).collect();
    for (index, ((d, job), outcome)) in decoded.iter().zip(&jobs).zip(outcomes).enumerate() {
        let Some(outcome) = outcome else { continue };
        // Nothing is logged about a success: it needs the job's span only for a trace.
        let span = if outcome == Outcome::Succeeded {
            telemetry::detail_span(|| d.span().clone())
        } else {
            d.span().clone()
        };
        let outside_effects = handler.has_outside_effects();
        let work =
            settle(&shared, &meters, d, &job.record, outcome, outside_effects).instrument(span);
        let _ = with_progress(&unsettled[index..], &mut progress, &settling, work).await;
        drop(job_slots[index].take());
    }
}

async fn settle(
    shared: &Shared,
    meters: &Meters,
    decoded: &Decoded<'_>,
    record: &JobRecord<'_>,
    outcome: Outcome,
    outside_effects: bool,
) {
    let delivery = &decoded.delivery;
    let (job_type, message, attempt) = (delivery.job_type, delivery.message, delivery.attempt);
    match outcome {
        Outcome::Succeeded => {
            shared.faults.after_commit();
            let ack_span = telemetry::detail_span(|| tracing::info_span!("ack"));
            let acked = if outside_effects {
                confirmed_ack(message).instrument(ack_span).await
            } else {
                message.ack().instrument(ack_span).await
            };
            match acked {
                Ok(()) => {
                    meters.acked.increment(1);
                    let age = OffsetDateTime::now_utc() - decoded.envelope.created_at;
                    meters.end_to_end.record(age.as_seconds_f64().max(0.0));
                }
                // Committed but not acked: the redelivery finds the job done and acks it.
                Err(error) => tracing::warn!(
                    parent: decoded.span(),
                    %error,
                    "ack failed after commit"
                ),
            }
        }
        Outcome::Retry { after, error } => {
            if let Err(db) =
                store::record_retry(&shared.pool, record, &error, delivery.stream_sequence).await
            {
                tracing::debug!(error = %db, "could not record the retry");
            }
            let delay = after.unwrap_or_else(|| shared.retry.delay(attempt));
            tracing::info!(%error, ?delay, attempt, "job will be retried");
            match message.ack_with(AckKind::Nak(Some(delay))).await {
                Ok(()) => count_ack(job_type, "nak"),
                Err(e) => tracing::warn!(error = %e, "nak failed; the job returns after ack wait"),
            }
        }
        Outcome::Permanent { error } => {
            dead_letter(shared, delivery, Reason::Permanent, &error, Some(record)).await;
        }
    }
}

/// Acks and waits for JetStream to confirm it, trying a few times: a lost ack means a
/// redelivery, which for a job with outside effects is work done twice unless the handler
/// finds its own record of it.
async fn confirmed_ack(message: &jetstream::Message) -> Result<(), async_nats::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match message.double_ack().await {
            Ok(()) => return Ok(()),
            Err(error) if attempt >= 3 => return Err(error),
            Err(error) => {
                tracing::debug!(%error, attempt, "ack not confirmed; sending it again");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
        }
    }
}

/// One delivery of a message, as much as dead-lettering needs to know.
#[derive(Clone, Copy)]
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
