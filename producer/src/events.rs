//! What the producer reports about itself. One struct per observable event owns its metric
//! names, labels and log fields; the rest of the producer only builds and emits events, so
//! a metric name is spelled here and nowhere else (the metrics contract: [`codigo_common::metric`]).
use std::time::Duration;

use axum::http::StatusCode;
use codigo_common::metric::{Metric, MetricKind};
use codigo_schemas::registry;
use metrics::SharedString;

use crate::publish::PublishError;

pub const REQUESTS: Metric = Metric {
    name: "codigo_gateway_requests_total",
    kind: MetricKind::Counter,
    labels: &["route", "method", "status"],
    help: "HTTP requests answered by the producer, by route pattern, method and status code.",
};

pub const REQUEST_DURATION: Metric = Metric {
    name: "codigo_gateway_request_duration_seconds",
    kind: MetricKind::Histogram,
    labels: &["route", "method"],
    help: "Time the producer took to answer a request, in seconds, by route pattern and method.",
};

pub const JOBS_PUBLISHED: Metric = Metric {
    name: "codigo_gateway_jobs_published_total",
    kind: MetricKind::Counter,
    labels: &["job_type", "result"],
    help: "Jobs submitted to the producer by result: accepted, duplicate (dropped by the \
           JetStream duplicate window), rejected (invalid) or error (not stored).",
};

pub const JOBS_UNRECORDED: Metric = Metric {
    name: "codigo_gateway_jobs_unrecorded_total",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Accepted jobs whose queued row the producer could not write before answering: \
           GET /v1/jobs/{id} does not know them until a worker records them.",
};

pub const SCHEDULE_TICKS: Metric = Metric {
    name: "codigo_gateway_schedule_ticks_total",
    kind: MetricKind::Counter,
    labels: &["result"],
    help: "Ticks of recurring schedules by result: published (the tick's job stored), skipped \
           (missed while no producer ran, and catch_up is false), invalid (the job no longer \
           passes its type's checks) or error (not stored; tried again a second later).",
};

pub const CALLBACKS: Metric = Metric {
    name: "codigo_gateway_callbacks_total",
    kind: MetricKind::Counter,
    labels: &["result"],
    help: "Completion callbacks of final jobs by result: published (its webhook.deliver job \
           stored), invalid (never deliverable; given up) or error (not stored; tried again).",
};

/// Every metric the producer exports.
pub const METRICS: &[Metric] = &[
    REQUESTS,
    REQUEST_DURATION,
    JOBS_PUBLISHED,
    JOBS_UNRECORDED,
    SCHEDULE_TICKS,
    CALLBACKS,
];

/// An HTTP request answered, whatever its route and status; emitted inside its request span.
#[derive(Debug)]
pub struct RequestServed<'a> {
    /// The route pattern (`/v1/jobs/{id}`), never the raw path, or `unmatched`.
    pub route: &'a str,
    /// One of a bounded set of methods, `OTHER` for the rest.
    pub method: &'static str,
    pub status: StatusCode,
    pub duration: Duration,
}

impl RequestServed<'_> {
    pub fn emit(&self) {
        let route: SharedString = self.route.to_owned().into();
        let method: SharedString = self.method.into();
        if self.status.is_server_error() {
            tracing::error!(route = %self.route, status = self.status.as_u16(), "request failed");
        }
        metrics::counter!(
            REQUESTS.name,
            REQUESTS.labelled([
                route.clone(),
                method.clone(),
                self.status.as_u16().to_string().into()
            ])
        )
        .increment(1);
        metrics::histogram!(
            REQUEST_DURATION.name,
            REQUEST_DURATION.labelled([route, method])
        )
        .record(self.duration.as_secs_f64());
    }
}

/// What became of a submitted job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishResult {
    /// Stored by JetStream.
    Accepted,
    /// Dropped by the JetStream duplicate window: an earlier submission holds the id.
    Duplicate,
    /// Refused as the client's doing (invalid, forbidden, too large); never stored.
    Rejected,
    /// Not stored for the gateway's or JetStream's reasons; the client may retry.
    Error,
}

impl PublishResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Rejected => "rejected",
            Self::Error => "error",
        }
    }
}

/// A job's submission settled; `job_type` may be anything the client sent.
#[derive(Debug)]
pub struct JobPublished<'a> {
    pub job_type: &'a str,
    pub result: PublishResult,
}

impl JobPublished<'_> {
    pub fn emit(&self) {
        // Built-in and declared types as they are (operators make those, so they are few),
        // anything else folded into one label value.
        let known = registry().job_type(self.job_type).is_ok()
            || codigo_schemas::interned(self.job_type).is_some();
        let job_type = if known {
            self.job_type.to_owned()
        } else {
            "unknown".to_owned()
        };
        metrics::counter!(
            JOBS_PUBLISHED.name,
            JOBS_PUBLISHED.labelled([job_type.into(), self.result.as_str().into()])
        )
        .increment(1);
    }
}

/// JetStream did not store a validated job.
#[derive(Debug)]
pub struct PublishFailed<'a> {
    pub job_type: &'a str,
    pub error: &'a PublishError,
}

impl PublishFailed<'_> {
    pub fn emit(&self) {
        let (job_type, error) = (self.job_type, self.error);
        let result = match error {
            // The client's doing: no retry makes it fit, and nothing went wrong here.
            PublishError::TooLarge { .. } => PublishResult::Rejected,
            PublishError::QueueFull(_) => {
                tracing::warn!(%error, job_type, "work stream full; job refused");
                PublishResult::Error
            }
            PublishError::Disconnected | PublishError::NotStored(_) => {
                tracing::warn!(%error, job_type, "publish failed");
                PublishResult::Error
            }
        };
        JobPublished { job_type, result }.emit();
    }
}

/// The job store did not answer a status query.
#[derive(Debug)]
pub struct JobStatusQueryFailed<'a> {
    pub error: &'a sqlx::Error,
}

impl JobStatusQueryFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(error = %self.error, "job status query failed");
    }
}

/// Accepted jobs answered without their `queued` row.
#[derive(Debug)]
pub struct QueuedNotRecorded<'a> {
    pub jobs: usize,
    pub reason: &'a str,
}

impl QueuedNotRecorded<'_> {
    /// The counter at zero from the start, so that its rate exists before the first event.
    pub fn register() {
        metrics::counter!(JOBS_UNRECORDED.name).absolute(0);
    }

    pub fn emit(&self) {
        tracing::warn!(
            jobs = self.jobs,
            reason = self.reason,
            "accepted jobs answered without their queued row; GET knows them once a worker does"
        );
        metrics::counter!(JOBS_UNRECORDED.name).increment(self.jobs as u64);
    }
}

/// A due tick of a recurring schedule handled.
#[derive(Debug)]
pub struct ScheduleTicked<'a> {
    pub tenant: &'a str,
    pub name: &'a str,
    /// One of [`ScheduleTicked::RESULTS`].
    pub result: &'static str,
}

impl ScheduleTicked<'_> {
    pub const RESULTS: [&'static str; 4] = ["published", "skipped", "invalid", "error"];

    /// Every result at zero from the start, so that their rates exist before the first tick.
    pub fn register() {
        for result in Self::RESULTS {
            metrics::counter!(
                SCHEDULE_TICKS.name,
                SCHEDULE_TICKS.labelled([result.into()])
            )
            .absolute(0);
        }
    }

    /// `reason` says why a tick did not publish; empty when it did.
    pub fn emit(&self, reason: &str) {
        match self.result {
            "published" => tracing::debug!(
                tenant = self.tenant,
                schedule = self.name,
                "a schedule's tick submitted its job"
            ),
            "error" => tracing::warn!(
                tenant = self.tenant,
                schedule = self.name,
                reason,
                "a schedule's tick was not submitted; trying again in a second"
            ),
            _ => tracing::warn!(
                tenant = self.tenant,
                schedule = self.name,
                reason,
                result = self.result,
                "a schedule's tick submitted no job"
            ),
        }
        metrics::counter!(
            SCHEDULE_TICKS.name,
            SCHEDULE_TICKS.labelled([self.result.into()])
        )
        .increment(1);
    }
}

/// A final job's callback handed to the webhook delivery path, or not.
#[derive(Debug)]
pub struct CallbackHandedOver {
    pub job_id: uuid::Uuid,
    /// One of [`CallbackHandedOver::RESULTS`].
    pub result: &'static str,
}

impl CallbackHandedOver {
    pub const RESULTS: [&'static str; 3] = ["published", "invalid", "error"];

    /// Every result at zero from the start, so that their rates exist before the first one.
    pub fn register() {
        for result in Self::RESULTS {
            metrics::counter!(CALLBACKS.name, CALLBACKS.labelled([result.into()])).absolute(0);
        }
    }

    /// `reason` says why a callback was not handed over; empty when it was.
    pub fn emit(&self, reason: &str) {
        match self.result {
            "published" => tracing::debug!(job_id = %self.job_id, "callback handed over"),
            "error" => tracing::warn!(job_id = %self.job_id, reason,
                "a callback could not be handed over; trying again shortly"),
            _ => tracing::warn!(job_id = %self.job_id, reason,
                "a callback can never be delivered; given up"),
        }
        metrics::counter!(CALLBACKS.name, CALLBACKS.labelled([self.result.into()])).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The label names of `name`'s samples in Prometheus text (`le` of buckets left out).
    fn rendered_labels(text: &str, name: &str) -> BTreeSet<Vec<String>> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let series = line.split(['{', ' ']).next()?;
                let base = series
                    .strip_suffix("_bucket")
                    .or_else(|| series.strip_suffix("_sum"))
                    .or_else(|| series.strip_suffix("_count"))
                    .unwrap_or(series);
                (series == name || base == name).then_some(line)
            })
            .map(|line| {
                let labels = line.split_once('{').map_or("", |(_, rest)| rest);
                let labels = labels.split_once('}').map_or("", |(inside, _)| inside);
                labels
                    .split(',')
                    .filter_map(|pair| pair.split_once('=').map(|(k, _)| k.to_owned()))
                    .filter(|k| k != "le")
                    .collect()
            })
            .collect()
    }

    #[test]
    fn every_event_records_its_metric_with_the_declared_labels() {
        let handle = codigo_common::telemetry::metrics();
        RequestServed {
            route: "/v1/jobs",
            method: "POST",
            status: StatusCode::ACCEPTED,
            duration: Duration::from_millis(3),
        }
        .emit();
        JobPublished {
            job_type: "no.such.type",
            result: PublishResult::Rejected,
        }
        .emit();
        PublishFailed {
            job_type: "ledger.post",
            error: &PublishError::Disconnected,
        }
        .emit();
        QueuedNotRecorded {
            jobs: 2,
            reason: "test",
        }
        .emit();
        ScheduleTicked {
            tenant: "acme",
            name: "nightly",
            result: "published",
        }
        .emit("");
        CallbackHandedOver {
            job_id: uuid::Uuid::nil(),
            result: "published",
        }
        .emit("");
        let text = handle.render();
        for metric in METRICS {
            let declared: Vec<String> = metric.labels.iter().map(|l| (*l).to_owned()).collect();
            assert_eq!(
                rendered_labels(&text, metric.name),
                BTreeSet::from([declared]),
                "{}:\n{text}",
                metric.name
            );
        }
        assert!(
            text.contains(r#"job_type="unknown",result="rejected""#),
            "{text}"
        );
        assert!(
            text.contains(r#"job_type="ledger.post",result="error""#),
            "{text}"
        );
    }
}
