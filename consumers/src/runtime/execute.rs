//! Runs a kind's worker over jobs that arrived together: each job decoded into its kind, the
//! work and the job rows in one transaction (per group or per job), the jobs held while a
//! dependency is down, then each settled.
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use codigo_common::shutdown::Shutdown;
use codigo_common::telemetry;
use codigo_schemas::Envelope;
use futures::future::join_all;
use opentelemetry::trace::TraceContextExt;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::dead_letter::dead_letter;
use super::decode::{decode, Rejected};
use super::delivery::Delivery;
use super::job::{Done, ErrorKind, JobCtx, JobError, JobTx, Payload, Worker};
use super::progress::{Attempt, Progress};
use super::settle::{ack, nak, settle_cancelled, settle_failure};
use super::{Served, Shared};
use crate::events::{DelayedJobStarted, JobExpired, JobsProcessed, Meters};
use crate::store::{self, JobRecord, Submitted};

/// Jobs fetched together, with a slot each, ready to be processed.
pub(crate) struct Group {
    pub shared: Arc<Shared>,
    pub meters: Arc<Meters>,
    pub messages: Vec<jetstream::Message>,
    pub permits: OwnedSemaphorePermit,
    /// Cancelled when in-flight jobs must give up: they nak and return.
    pub hard_stop: Shutdown,
}

/// A message whose envelope decoded and validated.
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
            .get_or_init(|| self.delivery.span(Some(self.envelope.id)))
    }
}

/// What became of one job: committed, or failed.
type Outcome = Result<(), JobError>;

/// Processes a group and settles each of its jobs: ack, nak(delay) or term.
pub(crate) async fn process<K: Payload, W: Worker<K>>(served: &Served<K, W>, group: Group) {
    let Group {
        shared,
        meters,
        messages,
        mut permits,
        hard_stop,
    } = group;
    // One slot per job, given back as soon as that job is settled.
    let mut slots: Vec<Option<OwnedSemaphorePermit>> =
        messages.iter().map(|_| permits.split(1)).collect();
    drop(permits);
    let _in_flight = meters.in_flight(messages.len());
    let started = Instant::now();

    let mut decoded = Vec::with_capacity(messages.len());
    let mut payloads = Vec::with_capacity(messages.len());
    let mut job_slots = Vec::with_capacity(messages.len());
    for (message, slot) in messages.iter().zip(&mut slots) {
        let delivery = Delivery::of(served.name, message);
        match decode::<K>(served.name, served.schema(), &message.payload) {
            Ok((envelope, _)) if is_expired(&envelope) => {
                expire(&shared, &meters, &delivery, &envelope)
                    .instrument(delivery.span(Some(envelope.id)))
                    .await;
                drop(slot.take());
            }
            Ok((envelope, payload)) => {
                if let Some(run_at) = envelope.run_at.filter(|_| delivery.attempt == 1) {
                    let lag = OffsetDateTime::now_utc() - run_at;
                    meters.emit(DelayedJobStarted {
                        lag: lag.try_into().unwrap_or_default(),
                    });
                }
                decoded.push(Decoded {
                    delivery,
                    span: OnceLock::new(),
                    envelope,
                });
                payloads.push(payload);
                job_slots.push(slot.take());
            }
            Err(rejected) => {
                reject(&shared, &meters, &delivery, rejected).await;
                drop(slot.take());
            }
        }
    }
    if decoded.is_empty() {
        return;
    }
    let ids: Vec<_> = decoded.iter().map(|d| d.envelope.id).collect();
    match store::claim(&shared.marks, &ids).await {
        Ok(cancelled) => {
            for index in (0..decoded.len()).rev() {
                if cancelled.contains(&decoded[index].envelope.id) {
                    let gone = decoded.remove(index);
                    payloads.remove(index);
                    let slot = job_slots.remove(index);
                    settle_cancelled(&meters, &gone.delivery)
                        .instrument(gone.span().clone())
                        .await;
                    drop(slot);
                }
            }
        }
        // Postgres is the work's own dependency too: the group is held below until it is back.
        Err(error) => tracing::debug!(%error, "could not mark the jobs running"),
    }
    if decoded.is_empty() {
        return;
    }
    let jobs: Vec<JobCtx<'_, K>> = decoded
        .iter()
        .zip(payloads)
        .map(|(d, payload)| JobCtx {
            id: d.envelope.id,
            payload,
            attempt: d.delivery.attempt,
            tenant: d.envelope.tenant.as_deref(),
            idempotency_key: d.envelope.idempotency_key.as_deref(),
            created_at: d.envelope.created_at,
        })
        .collect();
    let records: Vec<JobRecord<'_>> = decoded
        .iter()
        .map(|d| {
            let submitted = Submitted::of_envelope(&d.envelope);
            JobRecord::new(d.envelope.id, served.name, d.delivery.attempt, submitted)
        })
        .collect();

    // One job keeps its own trace; a group runs under a span linked to each job's trace.
    let group_span = if decoded.len() == 1 {
        decoded[0].span().clone()
    } else {
        let span = tracing::info_span!(
            "process_batch",
            job_type = served.name,
            jobs = decoded.len()
        );
        if telemetry::traces_exported() {
            for d in &decoded {
                span.add_link(d.span().context().span().span_context().clone());
            }
        }
        span
    };

    let mut progress = Progress::new(shared.jetstream.effective_ack_wait());
    let work = Work {
        name: served.name,
        worker: &served.worker,
        pool: &shared.pool,
        jobs: &jobs,
        records: &records,
    };
    let held = Held {
        shared: &shared,
        meters: &meters,
        decoded: &decoded,
        hard_stop: &hard_stop,
    };
    let Some(outcomes) = held.until_done(&work, &mut progress, &group_span).await else {
        return;
    };
    meters.emit(JobsProcessed {
        jobs: decoded.len(),
        duration: started.elapsed(),
    });

    // Settling writes to Postgres (retries, dead letters), which may be slow: the jobs not yet
    // acked, naked or termed keep signalling progress meanwhile, or JetStream would hand them to
    // another worker while this one still settles them. Settling is never cut short.
    let settling = Shutdown::new();
    let unsettled: Vec<&jetstream::Message> = decoded.iter().map(|d| d.delivery.message).collect();
    for (index, outcome) in outcomes.into_iter().enumerate() {
        let d = &decoded[index];
        // Nothing is logged about a success: it needs the job's span only for a trace.
        let span = if outcome.is_ok() {
            telemetry::detail_span(|| d.span().clone())
        } else {
            d.span().clone()
        };
        let settle = async {
            match outcome {
                Ok(()) => {
                    served.worker.committed(&jobs[index]);
                    let message = d.delivery.message;
                    let due = d.envelope.due_at();
                    // Committed but not acked: the redelivery finds the job done and acks it.
                    if let Err(error) = ack(&meters, message, due, W::OUTSIDE_EFFECTS).await {
                        tracing::warn!(parent: d.span(), %error, "ack failed after commit");
                    }
                }
                Err(error) => {
                    settle_failure(&shared, &meters, &d.delivery, &records[index], &error).await
                }
            }
        };
        let _ = progress
            .during(&unsettled[index..], &settling, settle.instrument(span))
            .await;
        drop(job_slots[index].take());
    }
}

/// Dead-letters a message that never reached its worker. An envelope with a usable id still
/// gets its jobs row, so that the submitter can see what became of it.
fn is_expired(envelope: &Envelope) -> bool {
    envelope
        .expires_at
        .is_some_and(|deadline| deadline <= OffsetDateTime::now_utc())
}

/// A job past its deadline is recorded expired and acked, never run; if its row cannot be
/// written it comes back later, and expires then.
async fn expire(shared: &Shared, meters: &Meters, delivery: &Delivery<'_>, envelope: &Envelope) {
    let submitted = Submitted::of_envelope(envelope);
    let record = JobRecord::new(envelope.id, delivery.job_type, delivery.attempt, submitted);
    match store::record_expired(&shared.pool, &record).await {
        Ok(()) => {
            tracing::info!(job_id = %envelope.id, "deadline passed before the job could start; not run");
            if let Err(error) = delivery.message.ack().await {
                tracing::warn!(%error, "ack of an expired job failed; it comes back and expires again");
            }
            meters.emit(JobExpired);
        }
        Err(error) => {
            tracing::warn!(%error, "cannot record an expired job; it comes back later");
            nak(meters, delivery.message, EXPIRED_RETRY).await;
        }
    }
}

/// When an expired job whose row could not be written comes back.
const EXPIRED_RETRY: Duration = Duration::from_secs(5);

async fn reject(shared: &Shared, meters: &Meters, delivery: &Delivery<'_>, rejected: Rejected) {
    let submitted = rejected
        .body
        .as_ref()
        .map(Submitted::of_value)
        .unwrap_or_default();
    let record = rejected
        .id
        .map(|id| JobRecord::new(id, delivery.job_type, delivery.attempt, submitted));
    let reason = rejected.reason;
    dead_letter(
        shared,
        meters,
        delivery,
        reason,
        &rejected.error,
        record.as_ref(),
    )
    .instrument(delivery.span(rejected.id))
    .await;
}

/// The jobs of a group and what works them.
struct Work<'w, 'j, K, W> {
    name: &'static str,
    worker: &'w W,
    pool: &'w PgPool,
    jobs: &'j [JobCtx<'j, K>],
    records: &'j [JobRecord<'j>],
}

impl<K: Payload, W: Worker<K>> Work<'_, '_, K, W> {
    /// One attempt at the jobs at `which`, one outcome each, in order. A grouping worker
    /// gets them in one transaction; jobs it may not group, repeated ids, and every job of
    /// a group that failed for a reason other than an unavailable dependency go one by one.
    async fn attempt(&self, which: &[usize]) -> Vec<Outcome> {
        if !W::GROUPS || which.len() == 1 {
            return join_all(which.iter().map(|i| self.alone(*i))).await;
        }
        let mut outcomes: Vec<Option<Outcome>> = vec![None; self.jobs.len()];
        let mut seen = HashSet::new();
        let (grouped, mut alone): (Vec<usize>, Vec<usize>) = which.iter().partition(|i| {
            let job = &self.jobs[**i];
            self.worker.may_group(job) && seen.insert(job.id)
        });
        if grouped.len() > 1 {
            match self.together(&grouped).await {
                Ok(()) => grouped.iter().for_each(|i| outcomes[*i] = Some(Ok(()))),
                Err(error) if error.kind() == ErrorKind::Unavailable => {
                    for i in &grouped {
                        outcomes[*i] = Some(Err(error.clone()));
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, jobs = grouped.len(), "group failed; retrying its jobs one by one");
                    alone.extend(grouped);
                }
            }
        } else {
            alone.extend(grouped);
        }
        alone.sort_unstable();
        for i in alone {
            outcomes[i] = Some(self.alone(i).await);
        }
        which
            .iter()
            .map(|i| {
                outcomes[*i]
                    .take()
                    .unwrap_or_else(|| Err(JobError::unavailable("the job was not attempted")))
            })
            .collect()
    }

    /// One job in its own transaction.
    async fn alone(&self, index: usize) -> Outcome {
        let mut tx = JobTx::new(self.pool.clone());
        let done = self.worker.work(&self.jobs[index], &mut tx).await?;
        let record = &self.records[index];
        let recorded = async {
            store::record_success(tx.conn().await?, record, done.result()).await?;
            tx.commit().await
        };
        recorded.await.map_err(recording_failed::<K, W>)
    }

    /// Jobs with distinct ids in one transaction, their rows written in one statement.
    async fn together(&self, which: &[usize]) -> Outcome {
        let mut tx = JobTx::new(self.pool.clone());
        let jobs: Vec<&JobCtx<'_, K>> = which.iter().map(|i| &self.jobs[*i]).collect();
        let done = self.worker.work_group(&jobs, &mut tx).await?;
        if done.len() != jobs.len() {
            return Err(JobError::permanent(format!(
                "the {} worker answered {} results for a group of {} jobs",
                self.name,
                done.len(),
                jobs.len()
            )));
        }
        let records: Vec<&JobRecord<'_>> = which.iter().map(|i| &self.records[*i]).collect();
        let results: Vec<_> = done.into_iter().map(Done::into_result).collect();
        let recorded = async {
            store::record_successes(tx.conn().await?, &records, &results).await?;
            tx.commit().await
        };
        recorded.await.map_err(recording_failed::<K, W>)
    }
}

/// A success that could not be recorded. Work with outside effects happened all the same: it
/// is held and recorded later, never dead-lettered, since a replay would repeat it.
fn recording_failed<K: Payload, W: Worker<K>>(error: sqlx::Error) -> JobError {
    let error = JobError::from(error);
    if W::OUTSIDE_EFFECTS {
        JobError::unavailable(format!(
            "the job's work is done, but its success cannot be recorded: {error}; the write is \
             retried and the work is not repeated (check Postgres and the consumer role's grants)"
        ))
    } else {
        error
    }
}

/// The jobs of a group while they are being worked on: held, with progress signals, while a
/// dependency is down; handed back at the hard stop.
struct Held<'a> {
    shared: &'a Shared,
    meters: &'a Meters,
    decoded: &'a [Decoded<'a>],
    hard_stop: &'a Shutdown,
}

impl Held<'_> {
    /// Every job's outcome, or `None` when the hard stop came first and the jobs were naked.
    async fn until_done<K: Payload, W: Worker<K>>(
        &self,
        work: &Work<'_, '_, K, W>,
        progress: &mut Progress,
        span: &tracing::Span,
    ) -> Option<Vec<Outcome>> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; self.decoded.len()];
        let mut waiting: Vec<usize> = (0..self.decoded.len()).collect();
        let mut unavailable_attempts = 0u64;
        while !waiting.is_empty() {
            let held = self.messages(&waiting);
            let attempt = work.attempt(&waiting).instrument(span.clone());
            let Attempt::Finished(results) = progress.during(&held, self.hard_stop, attempt).await
            else {
                self.hand_back(&held).await;
                return None;
            };
            let mut still_waiting = Vec::new();
            let mut unavailable = None;
            for (index, result) in waiting.iter().zip(results) {
                match result {
                    Err(error) if error.kind() == ErrorKind::Unavailable => {
                        unavailable = Some(error);
                        still_waiting.push(*index);
                    }
                    outcome => outcomes[*index] = Some(outcome),
                }
            }
            waiting = still_waiting;
            if let Some(error) = unavailable {
                // Not the jobs' fault: keep them (and their delivery counts) and wait.
                unavailable_attempts += 1;
                let wait = self
                    .shared
                    .retry
                    .delay(unavailable_attempts)
                    .min(Duration::from_secs(30));
                tracing::warn!(%error, ?wait, jobs = waiting.len(), "dependency unavailable; holding");
                let held = self.messages(&waiting);
                let pause = tokio::time::sleep(wait);
                if let Attempt::Stopped = progress.during(&held, self.hard_stop, pause).await {
                    self.hand_back(&held).await;
                    return None;
                }
            }
        }
        Some(outcomes.into_iter().flatten().collect())
    }

    fn messages(&self, which: &[usize]) -> Vec<&jetstream::Message> {
        which
            .iter()
            .map(|i| self.decoded[*i].delivery.message)
            .collect()
    }

    async fn hand_back(&self, messages: &[&jetstream::Message]) {
        for message in messages {
            nak(self.meters, message, Duration::ZERO).await;
        }
    }
}
