//! One load run: offer the load, wait for the pipeline to finish the accepted jobs, and
//! summarise counts, throughput and latencies.
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;

use crate::baseline::BaselineReport;
use crate::driver::{Driver, Limits, Load};
use crate::e2e::{self, Backlog};
use crate::error::LoadError;
use crate::payload::{JobFactory, JobSize};
use crate::progress::Progress;
use crate::stats::{fmt_rate, Latency, Recorder};
use crate::target::{Ingest, Target};

/// What to send, how, and for how long.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub ingest: Ingest,
    pub load: Load,
    pub duration: Option<Duration>,
    pub jobs: Option<u64>,
    pub batch_size: u64,
    pub accounts: u64,
    pub job_bytes: usize,
    /// Tenant written into envelopes published straight to JetStream.
    pub tenant: String,
    pub max_in_flight: usize,
    pub max_backlog: Option<u64>,
    /// Wait for the accepted jobs' rows and report end-to-end latency.
    pub e2e: bool,
    /// Longest wait for the pipeline to finish after the last request.
    pub drain_timeout: Duration,
    pub progress: bool,
}

/// Where the pipeline is.
#[derive(Clone)]
pub struct Endpoints {
    /// Producer base URL (`http://host:port`), for HTTP ingest.
    pub producer_url: String,
    pub api_key: Option<String>,
    pub nats: async_nats::Client,
    pub names: codigo_common::Names,
    /// The pipeline's database, for end-to-end latency.
    pub pool: Option<PgPool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobCounts {
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Accepted jobs whose row says `succeeded`.
    pub completed: u64,
    /// Accepted jobs whose row says `failed` or `dead_lettered`.
    pub failed: u64,
    /// Accepted jobs without a finished row when the run ended.
    pub unfinished: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Accepted jobs per second of sending.
    pub ingest_jobs_per_sec: f64,
    pub requests_per_sec: f64,
    /// Completed jobs per second, from the first request to the last commit.
    pub e2e_jobs_per_sec: Option<f64>,
}

/// The summary of a run, as printed (text or `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ingest: Ingest,
    pub load: Load,
    pub batch_size: Option<u64>,
    pub job_size: JobSize,
    pub accounts: u64,
    /// Seconds from the first request to the last answer.
    pub send_secs: f64,
    /// Seconds from the first request to the last commit.
    pub e2e_secs: Option<f64>,
    pub jobs: JobCounts,
    /// Completed over sent.
    pub success_ratio: f64,
    pub throughput: Throughput,
    pub ingest_latency: Option<Latency>,
    /// `jobs.finished_at - jobs.created_at` of the completed jobs.
    pub e2e_latency: Option<Latency>,
    /// Why jobs were rejected, with counts.
    pub errors: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineReport>,
    /// End-to-end throughput over the bare pipeline's, measured in the same run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_bare_pipeline: Option<f64>,
    #[serde(skip)]
    pub ingest_histogram: Histogram<u64>,
    #[serde(skip)]
    pub e2e_histogram: Option<Histogram<u64>>,
    #[serde(skip)]
    pub started_at: OffsetDateTime,
    #[serde(skip)]
    pub last_finished: Option<OffsetDateTime>,
}

#[allow(clippy::cast_precision_loss)]
fn per_sec(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// Offers the load and, unless `spec.e2e` is off, waits for the accepted jobs' rows.
pub async fn run(spec: &RunSpec, endpoints: &Endpoints) -> Result<Report, LoadError> {
    if spec.e2e && endpoints.pool.is_none() {
        return Err(LoadError::Invalid(
            "end-to-end latency needs the pipeline's database: set DATABASE_URL, or pass --no-e2e"
                .into(),
        ));
    }
    let factory = Arc::new(JobFactory::new(spec.accounts, spec.job_bytes, &spec.tenant));
    let unit = if spec.ingest == Ingest::Batch {
        spec.batch_size.max(1)
    } else {
        1
    };
    let target = Arc::new(match spec.ingest {
        Ingest::Single | Ingest::Batch => Target::http(
            &endpoints.producer_url,
            endpoints.api_key.clone(),
            spec.ingest == Ingest::Batch,
        )?,
        Ingest::Nats => Target::nats(
            endpoints.nats.clone(),
            endpoints.names.job_subject(codigo_schemas::LEDGER_POST),
            spec.max_in_flight,
        ),
    });
    let js = async_nats::jetstream::new(endpoints.nats.clone());
    let backlog = if spec.e2e || spec.max_backlog.is_some() {
        Some(
            Backlog::watch(
                &js,
                &endpoints.names.jobs_stream(),
                Duration::from_millis(50),
            )
            .await?,
        )
    } else {
        None
    };
    let recorder = Arc::new(Recorder::default());
    let driver = Driver {
        target,
        factory: factory.clone(),
        recorder: recorder.clone(),
    };
    let limits = Limits {
        duration: spec.duration,
        jobs: spec.jobs,
        unit,
        max_in_flight: spec.max_in_flight,
        max_backlog: spec.max_backlog,
    };

    let progress = Progress::start(
        spec.progress,
        spec.ingest.describe(),
        spec.duration
            .filter(|_| spec.jobs.is_none())
            .map(|d| d.as_secs()),
        recorder.clone(),
        backlog.clone(),
    );
    let started_at = OffsetDateTime::now_utc();
    let started = tokio::time::Instant::now();
    let last_answer = driver.run(spec.load, limits, backlog.as_ref()).await;
    let send_secs = (last_answer - started).as_secs_f64();
    let counts = recorder.counts();

    let completion = match (&endpoints.pool, spec.e2e) {
        (Some(pool), true) => {
            progress.phase("waiting for the pipeline to finish the accepted jobs");
            let ids: HashSet<_> = recorder.take_ids().into_iter().collect();
            Some(
                e2e::wait_and_gather(pool, backlog.as_ref(), &ids, started_at, spec.drain_timeout)
                    .await?,
            )
        }
        _ => None,
    };
    progress.finish();

    let (completed, failed) = completion
        .as_ref()
        .map_or((0, 0), |c| (c.completed, c.failed));
    let last_finished = completion.as_ref().and_then(|c| c.last_finished);
    let e2e_secs = last_finished.map(|last| (last - started_at).as_seconds_f64().max(send_secs));
    let ingest_histogram = recorder.ingest_histogram();
    Ok(Report {
        ingest: spec.ingest,
        load: spec.load,
        batch_size: (spec.ingest == Ingest::Batch).then_some(unit),
        job_size: factory.size(),
        accounts: spec.accounts,
        send_secs,
        e2e_secs,
        jobs: JobCounts {
            sent: counts.sent,
            accepted: counts.accepted,
            rejected: counts.rejected,
            completed,
            failed,
            unfinished: if completion.is_some() {
                counts.accepted.saturating_sub(completed + failed)
            } else {
                0
            },
        },
        success_ratio: if counts.sent == 0 {
            0.0
        } else {
            per_sec(completed, 1.0) / per_sec(counts.sent, 1.0)
        },
        throughput: Throughput {
            ingest_jobs_per_sec: per_sec(counts.accepted, send_secs),
            requests_per_sec: per_sec(counts.requests, send_secs),
            e2e_jobs_per_sec: e2e_secs.map(|secs| per_sec(completed, secs)),
        },
        ingest_latency: Latency::of(&ingest_histogram),
        e2e_latency: completion.as_ref().and_then(|c| Latency::of(&c.e2e)),
        errors: recorder.errors(),
        baseline: None,
        ratio_to_bare_pipeline: None,
        ingest_histogram,
        e2e_histogram: completion.map(|c| c.e2e),
        started_at,
        last_finished,
    })
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.2}%", 100.0 * per_sec(part, 1.0) / per_sec(whole, 1.0))
    }
}

impl Report {
    /// The k6-style text summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let load = match self.load {
            Load::Open { rate } => format!("open loop at {} jobs/s", fmt_rate(rate)),
            Load::Closed { concurrency } => format!("closed loop, {concurrency} clients"),
        };
        let batch = self
            .batch_size
            .map_or_else(String::new, |b| format!(" ({b} jobs per request)"));
        let _ = writeln!(
            out,
            "\n  codigo-loadtest: {load}, {}{batch}, ledger.post over {} accounts\n",
            self.ingest.describe(),
            self.accounts,
        );
        let row = |out: &mut String, name: &str, value: String| {
            let dots = ".".repeat(22usize.saturating_sub(name.len()));
            let _ = writeln!(out, "     {name}{dots}: {value}");
        };
        let j = &self.jobs;
        row(
            &mut out,
            "jobs_sent",
            format!(
                "{:<9} {}/s",
                j.sent,
                fmt_rate(per_sec(j.sent, self.send_secs))
            ),
        );
        row(
            &mut out,
            "jobs_accepted",
            format!("{:<9} {}", j.accepted, pct(j.accepted, j.sent)),
        );
        row(
            &mut out,
            "jobs_rejected",
            format!("{:<9} {}", j.rejected, pct(j.rejected, j.sent)),
        );
        if self.e2e_histogram.is_some() {
            row(
                &mut out,
                "jobs_completed",
                format!("{:<9} {}", j.completed, pct(j.completed, j.sent)),
            );
            row(&mut out, "jobs_failed", format!("{}", j.failed));
            if j.unfinished > 0 {
                row(&mut out, "jobs_unfinished", format!("{}", j.unfinished));
            }
            row(
                &mut out,
                "success_ratio",
                format!("{:.2}%", 100.0 * self.success_ratio),
            );
        }
        row(
            &mut out,
            "ingest_throughput",
            format!(
                "{} jobs/s ({} requests/s) over {:.1}s",
                fmt_rate(self.throughput.ingest_jobs_per_sec),
                fmt_rate(self.throughput.requests_per_sec),
                self.send_secs
            ),
        );
        if let (Some(rate), Some(secs)) = (self.throughput.e2e_jobs_per_sec, self.e2e_secs) {
            row(
                &mut out,
                "e2e_throughput",
                format!("{} jobs/s over {secs:.1}s", fmt_rate(rate)),
            );
        }
        if let Some(latency) = &self.ingest_latency {
            row(&mut out, "ingest_latency", latency.line());
        }
        if let Some(latency) = &self.e2e_latency {
            row(&mut out, "e2e_latency", latency.line());
        }
        row(
            &mut out,
            "job_size",
            format!(
                "{} B stored per job (envelope {} B + headers)",
                self.job_size.message_bytes, self.job_size.envelope_bytes
            ),
        );
        for (why, count) in &self.errors {
            row(&mut out, "rejected_because", format!("{why}: {count}"));
        }
        if let Some(baseline) = &self.baseline {
            out.push('\n');
            out.push_str(&baseline.text());
            if let Some(ratio) = self.ratio_to_bare_pipeline {
                row(
                    &mut out,
                    "vs_bare_pipeline",
                    format!(
                        "{:.1}% (this run's e2e throughput over the bare pipeline while publishing)",
                        100.0 * ratio
                    ),
                );
            }
        }
        out
    }
}
