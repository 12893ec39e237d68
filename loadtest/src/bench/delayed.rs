//! Delayed jobs under load: while batch ingest keeps the pipeline busy, delayed jobs are
//! submitted through the gateway at a steady rate, each due a few seconds later; how late each
//! started (its row's `started_at`, set when a worker takes it, against its `run_at`) is the
//! measure.
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::LoadError;
use crate::run::{self, RunSpec};

use super::stack::Stack;
use super::Ctx;

/// Delayed jobs submitted per second beside the load.
const RATE: f64 = 20.0;
/// How far ahead each is due.
const DELAY: Duration = Duration::from_secs(2);

/// One repetition: how late the delayed jobs started, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct DelayedSample {
    pub(super) jobs: usize,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) max_ms: f64,
}

pub(super) async fn delayed_rep(ctx: &Ctx<'_>, load: &RunSpec) -> Result<DelayedSample, LoadError> {
    let sample = Stack::around(ctx, async |stack| {
        stack.start_producer(ctx).await?;
        stack.start_consumer(ctx).await?;
        let endpoints = stack.endpoints(ctx);
        // The last ones fall due before the load ends.
        let submitting = load
            .duration
            .unwrap_or(Duration::from_secs(10))
            .saturating_sub(DELAY + Duration::from_secs(1));
        let (outcome, ids) = tokio::join!(
            run::run(load, &endpoints),
            submit(&stack.producer_url, &ctx.token, submitting)
        );
        outcome?;
        let ids = ids?;
        lateness(&stack.pool, &ids).await
    })
    .await?;
    eprintln!(
        "      {} delayed jobs started late by p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        sample.jobs, sample.p50_ms, sample.p99_ms, sample.max_ms
    );
    Ok(sample)
}

/// Submits a delayed job every 1/[`RATE`] s for `period`; returns their ids.
async fn submit(producer: &str, token: &str, period: Duration) -> Result<Vec<Uuid>, LoadError> {
    let http = reqwest::Client::new();
    let url = format!("{producer}/v1/jobs");
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / RATE));
    let mut ids = Vec::new();
    while started.elapsed() < period {
        tick.tick().await;
        let n = ids.len();
        let job = json!({"type": "ledger.post", "delay": DELAY.as_secs_f64(),
                         "payload": {"account": format!("delayed-{}", n % 100),
                                     "amount_cents": 1, "currency": "EUR"}});
        let refused = |detail: String| LoadError::Invalid(format!("a delayed job: {detail}"));
        let reply = http
            .post(&url)
            .bearer_auth(token)
            .json(&job)
            .send()
            .await
            .map_err(|e| refused(e.to_string()))?;
        let status = reply.status();
        let body: serde_json::Value = reply.json().await.map_err(|e| refused(e.to_string()))?;
        let id = body["id"]
            .as_str()
            .and_then(|id| Uuid::parse_str(id).ok())
            .filter(|_| status.is_success())
            .ok_or_else(|| refused(format!("answered {status}: {body}")))?;
        ids.push(id);
    }
    Ok(ids)
}

/// Waits for every job of `ids` to have started, then reads how late each did.
async fn lateness(pool: &PgPool, ids: &[Uuid]) -> Result<DelayedSample, LoadError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let started: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM jobs WHERE id = ANY($1) AND started_at IS NOT NULL",
        )
        .bind(ids)
        .fetch_one(pool)
        .await
        .map_err(|e| LoadError::postgres("counting started delayed jobs", e))?;
        if usize::try_from(started).unwrap_or(0) >= ids.len() {
            break;
        }
        if Instant::now() > deadline {
            return Err(LoadError::Invalid(format!(
                "{started} of {} delayed jobs started within 2 minutes of the load",
                ids.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (p50, p99, max): (f64, f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY late),
                percentile_cont(0.99) WITHIN GROUP (ORDER BY late),
                max(late)
           FROM (SELECT extract(epoch FROM started_at - run_at)::float8 * 1000 AS late
                   FROM jobs WHERE id = ANY($1)) AS starts",
    )
    .bind(ids)
    .fetch_one(pool)
    .await
    .map_err(|e| LoadError::postgres("reading how late delayed jobs started", e))?;
    Ok(DelayedSample {
        jobs: ids.len(),
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
    })
}
