//! The noisy-neighbour scenario: does one tenant's flood hold up another tenant's jobs?
//! On one stack, in turn: tenant A floods the gateway with batch POSTs alone (the
//! single-tenant figure of this run); tenant B sends single POSTs at a steady rate on the idle
//! system; B again while A floods, until A's last job is done; then A's `jobs_per_sec` is set to
//! 200 in the tenants file (read again without a restart) and A floods again. Latencies and
//! rates are read from the `jobs` rows. Both tenants are listed in the tenants file, which
//! gives them lanes of their own and fair dispatch.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use codigo_common::contract::JobState;
use codigo_schemas::LEDGER_POST;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use crate::driver::Load;
use crate::e2e::Backlog;
use crate::error::LoadError;
use crate::payload::JobFactory;
use crate::run::{self, Endpoints, Report, RunSpec};
use crate::stats::{self, Latency, Recorder};
use crate::target::{Ingest, Target};

use super::stack::Stack;

mod report;
pub(super) use report::{how_measured, section};

use super::Ctx;

const TENANT_A: &str = "tenant-a";
const TENANT_B: &str = "tenant-b";
/// `CODIGO_TENANTS_FILE` of every process of the stack: first both tenants unlimited, then A
/// limited.
const TENANTS: &str = "tenant-a\ntenant-b\n";
const TENANTS_LIMITED: &str = "tenant-a;jobs_per_sec=200\ntenant-b\n";
/// The limit set in the last phase, and how it is judged: its rate over 30 s, measured from
/// 5 s after the phase's first job finished, within ±10 %.
const LIMIT: f64 = 200.0;
const LIMIT_WINDOW: Duration = Duration::from_secs(30);
const LIMIT_SKIP: Duration = Duration::from_secs(5);
/// Jobs of the limited flood: enough for the window and its lead-in at the limit.
const LIMITED_JOBS: u64 = 8_000;
/// B's single POSTs per second, in both phases.
const B_RATE: f64 = 50.0;
/// How long B sends on the idle system.
const ALONE: Duration = Duration::from_secs(15);
/// How long B's last jobs of a phase may take to finish once sent.
const B_SETTLE: Duration = Duration::from_secs(120);
/// The targets: B's p99 under A's flood, and A's throughput as a share of the
/// single-tenant drain.
const B_P99_TARGET_MS: f64 = 250.0;
const A_SHARE_TARGET: f64 = 0.9;
/// States of a job that a worker has yet to settle (the gateway writes the row `queued`
/// before its 202, so every accepted job has one).
const UNFINISHED: [JobState; 4] = [
    JobState::Queued,
    JobState::Scheduled,
    JobState::Running,
    JobState::Retrying,
];

/// One repetition of the noisy-neighbour scenario.
#[derive(Debug, Clone, Copy)]
pub(super) struct NoisySample {
    /// A's flood alone: the single-tenant figure of this run, the same way in.
    pub(super) a_alone_jobs_per_sec: f64,
    /// A's jobs finished per second over [`LIMIT_WINDOW`] while limited to [`LIMIT`].
    pub(super) a_limited_jobs_per_sec: f64,
    /// B's end-to-end latency on the otherwise idle system.
    pub(super) b_alone: Latency,
    /// B's end-to-end latency, of its jobs created before A's last job finished.
    pub(super) b_flooded: Latency,
    /// A's succeeded jobs, and their rate from A's first `created_at` to its last
    /// `finished_at`.
    pub(super) a_jobs: u64,
    pub(super) a_jobs_per_sec: f64,
    /// Jobs of either tenant refused at ingest, accepted without a row, or whose row does
    /// not say `succeeded`.
    pub(super) not_succeeded: u64,
}

pub(super) async fn noisy_rep(ctx: &Ctx<'_>) -> Result<NoisySample, LoadError> {
    let (token_a, token_b) = (format!("{}-a", ctx.token), format!("{}-b", ctx.token));
    // rate=0: no per-key limit, so that only dispatch stands between A's flood and B.
    let keys = format!(
        "{TENANT_A}:{token_a};tenant={TENANT_A};rate=0,{TENANT_B}:{token_b};tenant={TENANT_B};rate=0"
    );
    let flood_jobs = ctx.args.noisy_jobs.max(1);
    let tenants_file = std::env::temp_dir().join(format!(
        "codigo-bench-tenants-{}-{}",
        std::process::id(),
        Uuid::new_v4().simple()
    ));
    let write_tenants = |text: &str| {
        std::fs::write(&tenants_file, text).map_err(|e| {
            LoadError::Invalid(format!("cannot write {}: {e}", tenants_file.display()))
        })
    };
    write_tenants(TENANTS)?;
    let file_env = tenants_file.to_string_lossy().into_owned();
    let sample = Stack::around_with(ctx, &[("CODIGO_TENANTS_FILE", &file_env)], async |stack| {
        stack.start_producer_with_keys(ctx, &keys).await?;
        stack.start_consumer(ctx).await?;
        let js = async_nats::jetstream::new(ctx.client.clone());
        let backlog = Backlog::watch(
            &js,
            &stack.scratch.names.jobs_stream(),
            Duration::from_millis(100),
        )
        .await?;
        let b_target = Arc::new(Target::http(
            &stack.producer_url,
            Some(token_b.clone()),
            false,
        )?);
        let b_jobs = Arc::new(JobFactory::new(
            ctx.args.accounts,
            ctx.args.job_bytes,
            TENANT_B,
        ));

        let flood_of = |jobs: u64| RunSpec {
            ingest: Ingest::Batch,
            load: Load::Closed {
                concurrency: ctx.args.batch_clients,
            },
            duration: None,
            jobs: Some(jobs),
            batch_size: ctx.args.batch_size,
            accounts: ctx.args.accounts,
            job_bytes: ctx.args.job_bytes,
            tenant: TENANT_A.into(),
            max_in_flight: ctx.args.batch_clients.max(1),
            // As fast as the gateway takes them: the backlog is the point.
            max_backlog: None,
            e2e: false,
            drain_timeout: Duration::ZERO,
            progress: true,
        };
        let a_endpoints = Endpoints {
            api_key: Some(token_a.clone()),
            ..stack.endpoints(ctx)
        };
        let settle_flood = Duration::from_secs(600) + Duration::from_millis(flood_jobs * 2);

        // A alone, as a single tenant would be.
        let alone_from = OffsetDateTime::now_utc();
        let alone_flood = run::run(&flood_of(flood_jobs), &a_endpoints).await?;
        wait_settled(stack, &backlog, TENANT_A, settle_flood).await?;
        let alone_until = OffsetDateTime::now_utc();

        let alone = steady(&b_target, &b_jobs, tokio::time::sleep(ALONE)).await;
        wait_settled(stack, &backlog, TENANT_B, B_SETTLE).await?;

        let flooded_from = OffsetDateTime::now_utc();
        let (flood_settled, b_stops) = oneshot::channel::<()>();
        let flooding = async {
            let outcome = async {
                let report = run::run(&flood_of(flood_jobs), &a_endpoints).await?;
                wait_settled(stack, &backlog, TENANT_A, settle_flood).await?;
                Ok::<_, LoadError>(report)
            }
            .await;
            // B stops once A's flood is settled, or has failed.
            drop(flood_settled);
            outcome
        };
        let stopped = async {
            let _ = b_stops.await;
        };
        let (flooded_a, flooded_b) = tokio::join!(flooding, steady(&b_target, &b_jobs, stopped));
        let flood = flooded_a?;
        wait_settled(stack, &backlog, TENANT_B, B_SETTLE).await?;
        let flooded_until = OffsetDateTime::now_utc();

        // A limited to 200 jobs/s by a change to the file, the processes left running.
        write_tenants(TENANTS_LIMITED)?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let limited_from = OffsetDateTime::now_utc();
        let limited = run::run(&flood_of(LIMITED_JOBS), &a_endpoints).await?;
        #[allow(clippy::cast_precision_loss)]
        let at_limit = Duration::from_secs_f64(LIMITED_JOBS as f64 / LIMIT);
        wait_settled(stack, &backlog, TENANT_A, at_limit * 2 + B_SETTLE).await?;

        let windows = Windows {
            alone: (alone_from, alone_until),
            flooded: (flooded_from, flooded_until),
            limited: limited_from,
        };
        measure(
            &stack.pool,
            &alone,
            &flooded_b,
            [&alone_flood, &flood, &limited],
            windows,
        )
        .await
    })
    .await;
    let _ = std::fs::remove_file(&tenants_file);
    let sample = sample?;
    eprintln!(
        "      tenant A alone: {:.0} jobs/s; limited to {LIMIT:.0}/s: {:.1} jobs/s",
        sample.a_alone_jobs_per_sec, sample.a_limited_jobs_per_sec
    );
    eprintln!(
        "      tenant B end to end: p50 {:.1} ms, p99 {:.1} ms alone ({} jobs); p50 {:.1} ms, p99 {:.1} ms under A's flood ({} jobs); A: {} jobs at {:.0} jobs/s; not succeeded: {}",
        sample.b_alone.p50_ms,
        sample.b_alone.p99_ms,
        sample.b_alone.count,
        sample.b_flooded.p50_ms,
        sample.b_flooded.p99_ms,
        sample.b_flooded.count,
        sample.a_jobs,
        sample.a_jobs_per_sec,
        sample.not_succeeded,
    );
    Ok(sample)
}

/// Tenant B's load: single POSTs at [`B_RATE`] on schedule until `stop` resolves, each in a
/// task of its own so that a slow answer never holds the next one back (open loop); returns
/// when every request has been answered, with what became of them.
async fn steady(
    target: &Arc<Target>,
    jobs: &Arc<JobFactory>,
    stop: impl Future<Output = ()>,
) -> Arc<Recorder> {
    let recorder = Arc::new(Recorder::default());
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / B_RATE));
    let mut requests = JoinSet::new();
    tokio::pin!(stop);
    for n in 0_u64.. {
        tokio::select! {
            biased;
            () = &mut stop => break,
            _ = tick.tick() => {}
        }
        let (target, jobs, recorder) = (target.clone(), jobs.clone(), recorder.clone());
        requests.spawn(async move {
            let sent_at = Instant::now();
            let sent = target.send(&jobs, n, 1).await;
            recorder.record(sent_at.elapsed(), sent);
        });
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
    recorder
}

/// Waits until no job of `tenant` is left for a worker to settle. Counting rows costs the
/// pipeline CPU while it is busy, so Postgres is asked when the stream holds no job, and
/// otherwise every few seconds only (in case the backlog cannot be read).
async fn wait_settled(
    stack: &mut Stack,
    backlog: &Backlog,
    tenant: &str,
    within: Duration,
) -> Result<(), LoadError> {
    let unfinished: Vec<&str> = UNFINISHED.iter().map(|s| s.as_str()).collect();
    let deadline = Instant::now() + within;
    let mut asked: Option<Instant> = None;
    loop {
        stack.check_alive()?;
        let overdue = asked.is_none_or(|at| at.elapsed() >= Duration::from_secs(10));
        if backlog.get() == Some(0) || overdue {
            asked = Some(Instant::now());
            // A scan of the table: asked once the stream is empty, rarely before.
            let left: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE type = $1 AND status = ANY($2) AND tenant = $3",
            )
            .bind(LEDGER_POST)
            .bind(&unfinished)
            .bind(tenant)
            .fetch_one(&stack.pool)
            .await
            .map_err(|e| LoadError::postgres("counting unfinished jobs", e))?;
            if left == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LoadError::Invalid(format!(
                    "{left} jobs of {tenant} still unfinished after {} s",
                    within.as_secs()
                )));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A job of B's as its row says: state, `created_at`, `finished_at`.
type BJob = (JobState, OffsetDateTime, Option<OffsetDateTime>);

/// When each phase ran: A alone and the flood with B from start to settled, the limited
/// flood from its start.
struct Windows {
    alone: (OffsetDateTime, OffsetDateTime),
    flooded: (OffsetDateTime, OffsetDateTime),
    limited: OffsetDateTime,
}

/// A's succeeded jobs created within `window`, with their rate from the first one's creation
/// to the last one's finish.
async fn a_rate(
    pool: &PgPool,
    (from, until): (OffsetDateTime, OffsetDateTime),
) -> Result<(u64, Option<f64>), LoadError> {
    let (jobs, first, last): (i64, Option<OffsetDateTime>, Option<OffsetDateTime>) =
        sqlx::query_as(
            "SELECT count(*), min(created_at), max(finished_at) FROM jobs
              WHERE tenant = $1 AND status = $2 AND created_at >= $3 AND created_at < $4",
        )
        .bind(TENANT_A)
        .bind(JobState::Succeeded.as_str())
        .bind(from)
        .bind(until)
        .fetch_one(pool)
        .await
        .map_err(|e| LoadError::postgres("reading tenant A's jobs", e))?;
    let jobs = u64::try_from(jobs).unwrap_or(0);
    Ok((jobs, rate(jobs, first, last)))
}

/// A's jobs finished per second over [`LIMIT_WINDOW`], from [`LIMIT_SKIP`] after the first job
/// of the limited flood finished (the burst and the lead-in left out).
async fn limited_rate(pool: &PgPool, from: OffsetDateTime) -> Result<f64, LoadError> {
    let first: Option<OffsetDateTime> = sqlx::query_scalar(
        "SELECT min(finished_at) FROM jobs WHERE tenant = $1 AND created_at >= $2",
    )
    .bind(TENANT_A)
    .bind(from)
    .fetch_one(pool)
    .await
    .map_err(|e| LoadError::postgres("reading the limited flood", e))?;
    let start = first
        .ok_or_else(|| LoadError::Invalid("no job of the limited flood finished".into()))?
        + LIMIT_SKIP;
    let end = start + LIMIT_WINDOW;
    let finished: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE tenant = $1 AND created_at >= $2
            AND finished_at >= $3 AND finished_at < $4",
    )
    .bind(TENANT_A)
    .bind(from)
    .bind(start)
    .bind(end)
    .fetch_one(pool)
    .await
    .map_err(|e| LoadError::postgres("counting the limited flood's window", e))?;
    #[allow(clippy::cast_precision_loss)]
    Ok(finished as f64 / LIMIT_WINDOW.as_secs_f64())
}

/// Reads the rows of every phase, once every job of both tenants is settled.
async fn measure(
    pool: &PgPool,
    alone: &Recorder,
    flooded: &Recorder,
    floods: [&Report; 3],
    windows: Windows,
) -> Result<NoisySample, LoadError> {
    let succeeded = JobState::Succeeded.as_str();
    let (_, a_alone) = a_rate(pool, windows.alone).await?;
    let (a_jobs, a_flooded) = a_rate(pool, windows.flooded).await?;
    let a_last: Option<OffsetDateTime> = sqlx::query_scalar(
        "SELECT max(finished_at) FROM jobs WHERE tenant = $1 AND created_at >= $2 AND created_at < $3",
    )
    .bind(TENANT_A)
    .bind(windows.flooded.0)
    .bind(windows.flooded.1)
    .fetch_one(pool)
    .await
    .map_err(|e| LoadError::postgres("reading tenant A's last job", e))?;
    let (rows, rows_not_succeeded): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE status <> $1) FROM jobs")
            .bind(succeeded)
            .fetch_one(pool)
            .await
            .map_err(|e| LoadError::postgres("counting jobs that did not succeed", e))?;
    let b_rows = async |recorder: &Recorder| -> Result<Vec<BJob>, LoadError> {
        let ids: Vec<Uuid> = recorder.take_ids();
        sqlx::query_as("SELECT status, created_at, finished_at FROM jobs WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(pool)
            .await
            .map_err(|e| LoadError::postgres("reading tenant B's jobs", e))
    };
    let (alone_counts, flooded_counts) = (alone.counts(), flooded.counts());
    let b_alone = latency(&b_rows(alone).await?, None).ok_or_else(|| {
        LoadError::Invalid("no job of tenant B succeeded on the idle system".into())
    })?;
    let b_flooded = latency(&b_rows(flooded).await?, a_last).ok_or_else(|| {
        LoadError::Invalid("no job of tenant B succeeded during tenant A's flood".into())
    })?;
    let none = |what: &str| LoadError::Invalid(format!("no job of tenant A's {what} succeeded"));
    let (flood_rejected, flood_accepted) = floods.iter().fold((0, 0), |(r, a), f| {
        (r + f.jobs.rejected, a + f.jobs.accepted)
    });
    Ok(NoisySample {
        a_alone_jobs_per_sec: a_alone.ok_or_else(|| none("flood alone"))?,
        a_limited_jobs_per_sec: limited_rate(pool, windows.limited).await?,
        b_alone,
        b_flooded,
        a_jobs,
        a_jobs_per_sec: a_flooded.ok_or_else(|| none("flood"))?,
        not_succeeded: not_succeeded(
            alone_counts.rejected + flooded_counts.rejected + flood_rejected,
            alone_counts.accepted + flooded_counts.accepted + flood_accepted,
            u64::try_from(rows).unwrap_or(0),
            u64::try_from(rows_not_succeeded).unwrap_or(0),
        ),
    })
}

/// End-to-end latency (`finished_at - created_at`) of the succeeded `jobs` created no later
/// than `until`.
fn latency(jobs: &[BJob], until: Option<OffsetDateTime>) -> Option<Latency> {
    let mut histogram = stats::histogram();
    for (state, created, finished) in jobs {
        if *state != JobState::Succeeded || until.is_some_and(|until| *created > until) {
            continue;
        }
        if let Some(finished) = finished {
            let micros = (*finished - *created).whole_microseconds();
            histogram.saturating_record(u64::try_from(micros).unwrap_or(0).max(1));
        }
    }
    Latency::of(&histogram)
}

/// Jobs per second from the first one's creation to the last one's finish.
fn rate(
    jobs: u64,
    first_created: Option<OffsetDateTime>,
    last_finished: Option<OffsetDateTime>,
) -> Option<f64> {
    let secs = (last_finished? - first_created?).as_seconds_f64();
    #[allow(clippy::cast_precision_loss)]
    (jobs > 0 && secs > 0.0).then(|| jobs as f64 / secs)
}

/// Jobs that did not succeed: refused at ingest, accepted yet without a row, or with a row
/// that does not say `succeeded`.
fn not_succeeded(rejected: u64, accepted: u64, rows: u64, rows_not_succeeded: u64) -> u64 {
    rejected + accepted.saturating_sub(rows) + rows_not_succeeded
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn latency_counts_succeeded_jobs_created_before_the_cut() {
        let at = datetime!(2026-12-07 12:00:00 UTC);
        let ms = |n: i64| time::Duration::milliseconds(n);
        let jobs: Vec<BJob> = (1..=100)
            .map(|n| (JobState::Succeeded, at + ms(n), Some(at + ms(n) + ms(n))))
            .chain([
                (JobState::DeadLettered, at, Some(at + ms(10_000))),
                (JobState::Succeeded, at + ms(50_000), Some(at + ms(90_000))),
            ])
            .collect();
        let cut = latency(&jobs, Some(at + ms(1_000))).expect("jobs before the cut");
        assert_eq!(
            cut.count, 100,
            "neither the dead letter nor the late job: {cut:?}"
        );
        assert!((cut.p50_ms - 50.0).abs() < 0.1, "{cut:?}");
        assert!((cut.p99_ms - 99.0).abs() < 0.1, "{cut:?}");
        let all = latency(&jobs, None).expect("every job");
        assert_eq!(all.count, 101);
        assert!((all.max_ms - 40_000.0).abs() < 40.0, "{all:?}");
        assert!(
            latency(&jobs[100..101], None).is_none(),
            "a dead letter has no latency"
        );
    }

    #[test]
    fn the_rate_runs_from_first_created_to_last_finished() {
        let at = datetime!(2026-12-07 12:00:00 UTC);
        let end = at + time::Duration::seconds(4);
        assert_eq!(rate(20_000, Some(at), Some(end)), Some(5_000.0));
        assert_eq!(rate(0, Some(at), Some(end)), None);
        assert_eq!(rate(10, Some(at), Some(at)), None);
        assert_eq!(rate(10, None, Some(end)), None);
        assert_eq!(not_succeeded(0, 1_000, 1_000, 0), 0);
        assert_eq!(not_succeeded(3, 1_000, 998, 1), 6);
    }
}
