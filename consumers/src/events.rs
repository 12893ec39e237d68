//! The consumer's observable events. Each event owns its metric names, labels and log fields;
//! call sites only emit it. [`METRICS`] lists every metric once, and a test holds it equal to
//! `observability/metrics.txt` and the table in docs/OBSERVABILITY.md.
use std::time::Duration;

use codigo_common::contract::DlqReason;
use codigo_common::metric::{Metric, MetricKind};
use metrics::{Counter, Gauge, Histogram};

use crate::db_failure::{DbErrorClass, DbFailure};

const ACKS: Metric = Metric {
    name: "codigo_consumer_acks_total",
    kind: MetricKind::Counter,
    labels: &["job_type", "outcome"],
    help: "Acknowledgements sent to JetStream by outcome: ack (done), nak (retried later) or \
           term (given up).",
};
const DEAD_LETTERS: Metric = Metric {
    name: "codigo_consumer_dead_letters_total",
    kind: MetricKind::Counter,
    labels: &["job_type", "reason"],
    help: "Jobs published to the dead-letter stream, by reason.",
};
const PROCESSING: Metric = Metric {
    name: "codigo_job_processing_duration_seconds",
    kind: MetricKind::Histogram,
    labels: &["job_type"],
    help: "Handler time of one delivery of a job, Postgres transaction included, in seconds.",
};
const END_TO_END: Metric = Metric {
    name: "codigo_job_end_to_end_duration_seconds",
    kind: MetricKind::Histogram,
    labels: &["job_type"],
    help: "Time from a job's envelope created_at (a delayed job's run_at) to its ack, in seconds.",
};
const START_LAG: Metric = Metric {
    name: "codigo_job_start_lag_seconds",
    kind: MetricKind::Histogram,
    labels: &["job_type"],
    help: "How late delayed jobs start: from their run_at to their first delivery to a worker, \
           in seconds.",
};
const SCHEDULED: Metric = Metric {
    name: "codigo_consumer_scheduled_jobs",
    kind: MetricKind::Gauge,
    labels: &["job_type"],
    help: "Delayed jobs of the type waiting for their run_at in the schedules stream.",
};
const EXPIRED: Metric = Metric {
    name: "codigo_consumer_expired_total",
    kind: MetricKind::Counter,
    labels: &["job_type"],
    help: "Jobs not run because their deadline (expires_at, ttl) passed before a worker could \
           start or retry them; acked, neither succeeded nor failed.",
};
const CANCELLED: Metric = Metric {
    name: "codigo_consumer_cancelled_total",
    kind: MetricKind::Counter,
    labels: &["job_type"],
    help: "Jobs taken out of the work stream without running (again) because DELETE \
           /v1/jobs/{id} cancelled them; acked, neither succeeded nor failed.",
};
const IN_FLIGHT: Metric = Metric {
    name: "codigo_consumer_in_flight",
    kind: MetricKind::Gauge,
    labels: &["job_type"],
    help: "Jobs this replica is processing now.",
};
const PENDING: Metric = Metric {
    name: "codigo_consumer_pending_messages",
    kind: MetricKind::Gauge,
    labels: &["job_type"],
    help: "Messages of the job type's durable consumer not yet delivered (num_pending).",
};
const DATABASE_ERRORS: Metric = Metric {
    name: "codigo_consumer_database_errors_total",
    kind: MetricKind::Counter,
    labels: &["class"],
    help: "Database errors met by handlers, by class of SQLSTATE: transient (held and \
           retried), deployment (privileges or schema broken: jobs held, alert) or job (the \
           job's own data: dead-lettered).",
};

/// Every metric the consumer exports.
pub const METRICS: &[Metric] = &[
    ACKS,
    DEAD_LETTERS,
    PROCESSING,
    END_TO_END,
    START_LAG,
    EXPIRED,
    CANCELLED,
    IN_FLIGHT,
    PENDING,
    SCHEDULED,
    DATABASE_ERRORS,
];

/// The `outcome` label of [`ACKS`].
#[derive(Debug, Clone, Copy)]
enum AckOutcome {
    Ack,
    Nak,
    Term,
}

impl AckOutcome {
    const ALL: [AckOutcome; 3] = [Self::Ack, Self::Nak, Self::Term];

    fn as_str(self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Nak => "nak",
            Self::Term => "term",
        }
    }
}

fn acks(job_type: &'static str, outcome: AckOutcome) -> Counter {
    metrics::counter!(
        ACKS.name,
        ACKS.labelled([job_type.into(), outcome.as_str().into()])
    )
}

fn dead_letters(job_type: &str, reason: DlqReason) -> Counter {
    let labels = [job_type.to_owned().into(), reason.as_str().into()];
    metrics::counter!(DEAD_LETTERS.name, DEAD_LETTERS.labelled(labels))
}

fn database_errors(class: DbErrorClass) -> Counter {
    metrics::counter!(
        DATABASE_ERRORS.name,
        DATABASE_ERRORS.labelled([class.as_str().into()])
    )
}

/// The series of one job type, resolved once: looking them up per job would cost the hot path.
pub struct Meters {
    acked: Counter,
    naked: Counter,
    termed: Counter,
    processing: Histogram,
    end_to_end: Histogram,
    start_lag: Histogram,
    expired: Counter,
    cancelled: Counter,
    in_flight: Gauge,
    pending: Gauge,
    scheduled: Gauge,
}

impl Meters {
    /// Resolves the series and registers them at zero, so that rates and ratios exist before
    /// the first event.
    pub fn register(job_type: &'static str) -> Self {
        for outcome in AckOutcome::ALL {
            acks(job_type, outcome).absolute(0);
        }
        for reason in DlqReason::ALL {
            dead_letters(job_type, *reason).absolute(0);
        }
        let meters = Self {
            acked: acks(job_type, AckOutcome::Ack),
            naked: acks(job_type, AckOutcome::Nak),
            termed: acks(job_type, AckOutcome::Term),
            processing: metrics::histogram!(
                PROCESSING.name,
                PROCESSING.labelled([job_type.into()])
            ),
            end_to_end: metrics::histogram!(
                END_TO_END.name,
                END_TO_END.labelled([job_type.into()])
            ),
            start_lag: metrics::histogram!(START_LAG.name, START_LAG.labelled([job_type.into()])),
            expired: metrics::counter!(EXPIRED.name, EXPIRED.labelled([job_type.into()])),
            cancelled: metrics::counter!(CANCELLED.name, CANCELLED.labelled([job_type.into()])),
            in_flight: metrics::gauge!(IN_FLIGHT.name, IN_FLIGHT.labelled([job_type.into()])),
            pending: metrics::gauge!(PENDING.name, PENDING.labelled([job_type.into()])),
            scheduled: metrics::gauge!(SCHEDULED.name, SCHEDULED.labelled([job_type.into()])),
        };
        meters.expired.absolute(0);
        meters.cancelled.absolute(0);
        meters.in_flight.set(0.0);
        meters.pending.set(0.0);
        meters.scheduled.set(0.0);
        meters
    }

    pub fn emit(&self, event: impl JobEvent) {
        event.emit(self);
    }

    /// Counts `jobs` in flight until the guard drops.
    pub fn in_flight(&self, jobs: usize) -> InFlight<'_> {
        #[allow(clippy::cast_precision_loss)]
        let jobs = jobs as f64;
        self.in_flight.increment(jobs);
        InFlight { meters: self, jobs }
    }
}

/// Describes the consumer's metrics and registers the process-wide series at zero (the
/// database alert's rate needs them).
pub fn register_process() {
    codigo_common::metric::describe(METRICS);
    for class in DbErrorClass::ALL {
        database_errors(class).absolute(0);
    }
}

/// An event of one job type.
pub trait JobEvent {
    fn emit(self, meters: &Meters);
}

/// A job acknowledged as done; `age` is the time since its envelope's `created_at`.
pub struct JobAcked {
    pub age: Duration,
}

impl JobEvent for JobAcked {
    fn emit(self, meters: &Meters) {
        meters.acked.increment(1);
        meters.end_to_end.record(self.age.as_secs_f64());
    }
}

/// A delayed job's first delivery, `lag` after its `run_at`.
pub struct DelayedJobStarted {
    pub lag: Duration,
}

impl JobEvent for DelayedJobStarted {
    fn emit(self, meters: &Meters) {
        meters.start_lag.record(self.lag.as_secs_f64());
    }
}

/// A job acked without running: its deadline had passed.
pub struct JobExpired;

impl JobEvent for JobExpired {
    fn emit(self, meters: &Meters) {
        meters.expired.increment(1);
    }
}

/// A job acked without running (again): it was cancelled.
pub struct JobCancelled;

impl JobEvent for JobCancelled {
    fn emit(self, meters: &Meters) {
        meters.cancelled.increment(1);
    }
}

/// A job handed back to JetStream, now or after a delay.
pub struct JobNaked;

impl JobEvent for JobNaked {
    fn emit(self, meters: &Meters) {
        meters.naked.increment(1);
    }
}

/// A job terminated after its dead letter was stored.
pub struct JobTermed;

impl JobEvent for JobTermed {
    fn emit(self, meters: &Meters) {
        meters.termed.increment(1);
    }
}

/// Jobs that were handled together, and how long the handling took.
pub struct JobsProcessed {
    pub jobs: usize,
    pub duration: Duration,
}

impl JobEvent for JobsProcessed {
    fn emit(self, meters: &Meters) {
        meters
            .processing
            .record_many(self.duration.as_secs_f64(), self.jobs);
    }
}

/// The backlog of the job type's durable consumer.
pub struct PendingMessages(pub u64);

impl JobEvent for PendingMessages {
    fn emit(self, meters: &Meters) {
        #[allow(clippy::cast_precision_loss)]
        meters.pending.set(self.0 as f64);
    }
}

/// The delayed jobs of a type waiting for their time.
pub struct ScheduledJobs(pub u64);

impl JobEvent for ScheduledJobs {
    fn emit(self, meters: &Meters) {
        #[allow(clippy::cast_precision_loss)]
        meters.scheduled.set(self.0 as f64);
    }
}

/// Jobs in flight; they leave the gauge when this drops.
pub struct InFlight<'a> {
    meters: &'a Meters,
    jobs: f64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.meters.in_flight.decrement(self.jobs);
    }
}

/// A process-wide event.
pub trait Event {
    fn emit(self);
}

pub fn emit(event: impl Event) {
    event.emit();
}

/// A dead letter stored for the first time (a repeat dropped by de-duplication is
/// [`DeadLetterRepeated`]).
pub struct DeadLettered<'a> {
    pub job_type: &'a str,
    pub reason: DlqReason,
    pub error: &'a str,
    pub attempts: u64,
}

impl Event for DeadLettered<'_> {
    fn emit(self) {
        dead_letters(self.job_type, self.reason).increment(1);
        tracing::warn!(
            job_type = self.job_type,
            reason = self.reason.as_str(),
            error = self.error,
            attempts = self.attempts,
            "job dead-lettered"
        );
    }
}

/// A dead letter stored before (a crash between publishing it and terminating the job): it
/// was counted then, and counting it again would inflate the job-failure SLI.
pub struct DeadLetterRepeated<'a> {
    pub job_type: &'a str,
    pub reason: DlqReason,
}

impl Event for DeadLetterRepeated<'_> {
    fn emit(self) {
        tracing::info!(
            job_type = self.job_type,
            reason = self.reason.as_str(),
            "dead letter already stored"
        );
    }
}

/// A message the sweep found still in the work stream after JetStream stopped delivering it,
/// one whole sweep interval later: its max-deliveries advisory was lost (or is stuck), so the
/// sweep dead-letters it (counted by [`DeadLettered`]) or, if its job succeeded, removes it.
pub struct OrphanFound<'a> {
    pub job_type: &'a str,
    pub stream_seq: u64,
}

impl Event for OrphanFound<'_> {
    fn emit(self) {
        let Self {
            job_type,
            stream_seq,
        } = self;
        tracing::warn!(
            job_type,
            stream_seq,
            "a message JetStream no longer delivers was still in the work stream (its \
             max-deliveries advisory was lost); dead-lettering it unless its job succeeded"
        );
    }
}

/// A sweep for orphans that could not finish; the next one tries again.
pub struct OrphanSweepFailed<'a> {
    pub job_type: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl Event for OrphanSweepFailed<'_> {
    fn emit(self) {
        tracing::warn!(
            job_type = self.job_type,
            error = %self.error,
            "the sweep for messages that ran out of deliveries failed; the next sweep tries again"
        );
    }
}

/// A database error a job met, judged by its SQLSTATE.
pub struct DatabaseError<'a>(pub &'a DbFailure);

impl Event for DatabaseError<'_> {
    fn emit(self) {
        let class = self.0.class();
        database_errors(class).increment(1);
        if class == DbErrorClass::Deployment {
            tracing::error!(error = %self.0, sqlstate = self.0.sqlstate(), "database misconfigured; holding jobs");
        }
    }
}

impl DbFailure {
    /// Counts the failure (`codigo_consumer_database_errors_total{class}`) and, for a broken
    /// deployment, logs it as the error it is.
    pub fn observed(self) -> Self {
        emit(DatabaseError(&self));
        self
    }
}

#[cfg(test)]
mod tests {
    use codigo_common::metric;

    use super::*;

    const PREFIXES: [&str; 2] = ["codigo_consumer_", "codigo_job_"];

    /// `observability/metrics.txt` is the contract dashboards and alerts are checked against.
    #[test]
    fn metrics_match_the_metrics_list() {
        let listed = metric::listed(include_str!("../../observability/metrics.txt"), &PREFIXES);
        assert_eq!(metric::declared(METRICS), listed);
    }

    /// The table in docs/OBSERVABILITY.md names the same metrics with the same labels.
    #[test]
    fn metrics_match_the_documentation() {
        let documented = metric::documented(include_str!("../../docs/OBSERVABILITY.md"), &PREFIXES);
        assert_eq!(metric::declared(METRICS), documented);
    }
}
