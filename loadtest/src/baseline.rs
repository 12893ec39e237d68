//! The bare baseline: what async-nats and sqlx alone get out of the same NATS and Postgres,
//! with no HTTP, no validation and no per-job machinery. The pipeline's throughput is
//! reported as a share of it.
//!
//! Four measurements, each over `jobs` jobs of the same size as the load run's:
//! JetStream publish with pipelined acks and `Nats-Msg-Id`; pull consume + ack; and the bare
//! pipeline (pull a batch, one transaction doing the ledger.post handler's SQL for the whole
//! batch, ack) both draining a full stream and while the jobs are being published.
use std::fmt::Write as _;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, Message};
use codigo_common::config::JetStreamArgs;
use codigo_common::contract::JobState;
use codigo_common::jetstream::{bind_job_consumer, ensure_topology, PullConsumer};
use codigo_consumer::handlers::ledger;
use codigo_schemas::{Envelope, LedgerPost, LEDGER_POST};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::error::LoadError;
use crate::payload::JobFactory;
use crate::scratch::{Scratch, Server};
use crate::stats::fmt_rate;

#[derive(Debug, Clone)]
pub struct BaselineSpec {
    pub jobs: u64,
    /// Concurrent fetch → transaction → ack loops.
    pub workers: usize,
    /// Most messages per fetch (and so per transaction).
    pub fetch_batch: usize,
    /// Publishes awaiting their ack at once.
    pub publish_window: usize,
    pub accounts: u64,
    pub job_bytes: usize,
    /// Replicas of its stream (3 on the production-profile cluster).
    pub replicas: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    pub jobs: u64,
    pub workers: usize,
    pub fetch_batch: usize,
    /// JetStream publishes acknowledged per second.
    pub publish_per_sec: f64,
    /// Messages pulled and acked per second from a full stream.
    pub consume_ack_per_sec: f64,
    /// Jobs committed per second while they are being published.
    pub pipeline_live_per_sec: f64,
    /// Jobs committed per second draining a full stream.
    pub pipeline_drain_per_sec: f64,
    /// The same drain with the handler's statements run once per job (still one transaction
    /// per batch): what batching the transaction alone buys.
    pub rowwise_drain_per_sec: f64,
}

/// How the bare pipeline writes a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Statements {
    /// Each of the handler's three statements once per batch, over arrays (`UNNEST`), with
    /// balance changes summed per account.
    Set,
    /// The handler's three statements once per job.
    Rows,
}

impl BaselineReport {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "  bare baseline: async-nats + sqlx, {} jobs, {} workers, {} per fetch",
            self.jobs, self.workers, self.fetch_batch
        );
        for (name, value, unit) in [
            (
                "bare_publish",
                self.publish_per_sec,
                "msgs/s (pipelined acks)",
            ),
            ("bare_consume_ack", self.consume_ack_per_sec, "msgs/s"),
            (
                "bare_pipeline_live",
                self.pipeline_live_per_sec,
                "jobs/s (while publishing)",
            ),
            (
                "bare_pipeline_drain",
                self.pipeline_drain_per_sec,
                "jobs/s (full stream)",
            ),
        ] {
            let dots = ".".repeat(22usize.saturating_sub(name.len()));
            let _ = writeln!(out, "     {name}{dots}: {} {unit}", fmt_rate(value));
        }
        out
    }
}

/// Default stream and consumer settings, as the services get them from their flags.
pub fn default_jetstream_args() -> JetStreamArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        jetstream: JetStreamArgs,
    }
    Defaults::try_parse_from(["codigo-loadtest"])
        .map(|d| d.jetstream)
        .unwrap_or_else(|_| unreachable!("every JetStream flag has a default"))
}

#[allow(clippy::cast_precision_loss)]
fn rate(jobs: u64, elapsed: Duration) -> f64 {
    jobs as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Runs the baseline in a namespace and database of its own, removed at the end.
pub async fn run(
    spec: &BaselineSpec,
    nats: &async_nats::Client,
    server: &Server,
) -> Result<BaselineReport, LoadError> {
    let js = jetstream::new(nats.clone());
    let scratch = server.create().await?;
    let result = measure(spec, nats, &scratch).await;
    server.destroy(&scratch, &js).await;
    result
}

async fn measure(
    spec: &BaselineSpec,
    nats: &async_nats::Client,
    scratch: &Scratch,
) -> Result<BaselineReport, LoadError> {
    let mut args = default_jetstream_args();
    args.stream_replicas = spec.replicas.max(1);
    // File storage reserves a stream's byte limit up front; ask only for what the run needs.
    args.stream_max_bytes = i64::try_from(spec.jobs.saturating_mul(4096))
        .unwrap_or(i64::MAX)
        .max(256 << 20);
    let setup = jetstream::new(nats.clone());
    ensure_topology(&setup, &scratch.names, &args, [LEDGER_POST]).await?;
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(spec.workers.max(1)).unwrap_or(8))
        .connect(&scratch.database_url)
        .await
        .map_err(|e| LoadError::postgres("connecting to the baseline database", e))?;
    codigo_common::db::migrate(&pool).await?;
    let consumer = bind_job_consumer(&setup, &scratch.names, &args, LEDGER_POST).await?;
    let publisher = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(30))
        .max_ack_inflight(spec.publish_window.max(1))
        .backpressure_on_inflight(true)
        .build(nats.clone());
    let subject = scratch.names.job_subject(LEDGER_POST);
    let factory = JobFactory::new(spec.accounts, spec.job_bytes, "baseline");
    let n = spec.jobs.max(1);

    let publish = publish_all(&publisher, &subject, &factory, n, spec.publish_window).await?;
    let consume = consume_ack(nats, &consumer, n, spec.fetch_batch).await?;
    // The pipelined pulls of that phase may still be open on the server and would swallow
    // the next messages until their ack wait: start over with a fresh consumer.
    setup
        .delete_consumer_from_stream(
            scratch.names.durable(LEDGER_POST),
            scratch.names.jobs_stream(),
        )
        .await
        .map_err(|e| LoadError::jetstream("resetting the baseline consumer", e))?;
    let consumer = bind_job_consumer(&setup, &scratch.names, &args, LEDGER_POST).await?;

    let full = || async { Ok(Duration::ZERO) };
    publish_all(&publisher, &subject, &factory, n, spec.publish_window).await?;
    let drain = pipeline(&consumer, &pool, spec, n, Statements::Set, full()).await?;
    // A quarter of the jobs is enough to see the per-job rate, which is several times slower.
    let quarter = (n / 4).max(1);
    publish_all(&publisher, &subject, &factory, quarter, spec.publish_window).await?;
    let rowwise = pipeline(&consumer, &pool, spec, quarter, Statements::Rows, full()).await?;
    let live = pipeline(
        &consumer,
        &pool,
        spec,
        n,
        Statements::Set,
        publish_all(&publisher, &subject, &factory, n, spec.publish_window),
    )
    .await?;
    // The three pipeline runs must have committed every job exactly once.
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
        .fetch_one(&pool)
        .await
        .map_err(|e| LoadError::postgres("counting the baseline's rows", e))?;
    pool.close().await;
    if u64::try_from(rows).unwrap_or(0) != 2 * n + quarter {
        return Err(LoadError::Invalid(format!(
            "the bare pipeline committed {rows} rows for {} jobs",
            2 * n + quarter
        )));
    }

    Ok(BaselineReport {
        jobs: n,
        workers: spec.workers,
        fetch_batch: spec.fetch_batch,
        publish_per_sec: rate(n, publish),
        consume_ack_per_sec: rate(n, consume),
        pipeline_live_per_sec: rate(n, live),
        pipeline_drain_per_sec: rate(n, drain),
        rowwise_drain_per_sec: rate(quarter, rowwise),
    })
}

/// Publishes `n` jobs with up to `window` acks outstanding; the time until the last ack.
async fn publish_all(
    js: &jetstream::Context,
    subject: &str,
    factory: &JobFactory,
    n: u64,
    window: usize,
) -> Result<Duration, LoadError> {
    let started = Instant::now();
    let mut acks = FuturesUnordered::new();
    for i in 0..n {
        let (_, message) = factory.message(i);
        let ack = js
            .send_publish(subject.to_owned(), message)
            .await
            .map_err(|e| LoadError::jetstream("baseline publish", e))?;
        acks.push(ack.into_future());
        while acks.len() >= window.max(1) {
            if let Some(stored) = acks.next().await {
                stored.map_err(|e| LoadError::jetstream("baseline publish ack", e))?;
            }
        }
    }
    while let Some(stored) = acks.next().await {
        stored.map_err(|e| LoadError::jetstream("baseline publish ack", e))?;
    }
    Ok(started.elapsed())
}

/// How long the consume phase waits for a message before it counts as stalled.
const CONSUME_IDLE: Duration = Duration::from_secs(30);

/// Pulls and acks `n` messages with pipelined pull requests.
async fn consume_ack(
    client: &async_nats::Client,
    consumer: &PullConsumer,
    n: u64,
    batch: usize,
) -> Result<Duration, LoadError> {
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(batch.max(1))
        .messages()
        .await
        .map_err(|e| LoadError::jetstream("baseline pull", e))?;
    let mut got = 0;
    while got < n {
        let next = tokio::time::timeout(CONSUME_IDLE, messages.next())
            .await
            .map_err(|_| LoadError::BaselineStalled {
                got,
                of: n,
                idle: CONSUME_IDLE,
            })?;
        let Some(message) = next else { break };
        let message = message.map_err(|e| LoadError::jetstream("baseline pull", e))?;
        message
            .ack()
            .await
            .map_err(|e| LoadError::jetstream("baseline ack", e))?;
        got += 1;
    }
    client
        .flush()
        .await
        .map_err(|e| LoadError::jetstream("flushing baseline acks", e))?;
    // The server applies acks asynchronously: done is when the stream is empty.
    let mut info = consumer.clone();
    loop {
        let pending = info
            .info()
            .await
            .map_err(|e| LoadError::jetstream("baseline consumer info", e))?;
        if pending.num_ack_pending == 0 && pending.num_pending == 0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(LoadError::Invalid(
                "acks of the baseline consume phase were not applied within 2 minutes".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(started.elapsed())
}

/// Runs `spec.workers` fetch → transaction → ack loops until `n` jobs are committed, while
/// `feed` runs (publishing, or nothing when the stream is already full). The time from the
/// start until the last commit.
async fn pipeline(
    consumer: &PullConsumer,
    pool: &PgPool,
    spec: &BaselineSpec,
    n: u64,
    statements: Statements,
    feed: impl std::future::Future<Output = Result<Duration, LoadError>>,
) -> Result<Duration, LoadError> {
    let started = Instant::now();
    let committed = Arc::new(AtomicU64::new(0));
    let deadline = started + Duration::from_secs(120) + Duration::from_millis(n / 2);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..spec.workers.max(1) {
        let (consumer, pool, committed) = (consumer.clone(), pool.clone(), committed.clone());
        let batch = spec.fetch_batch.max(1);
        workers.spawn(async move {
            while committed.load(Ordering::Relaxed) < n {
                if Instant::now() > deadline {
                    return Err(LoadError::Invalid(format!(
                        "the bare pipeline committed only {} of {n} jobs in time",
                        committed.load(Ordering::Relaxed)
                    )));
                }
                let mut fetched = consumer
                    .fetch()
                    .max_messages(batch)
                    .messages()
                    .await
                    .map_err(|e| LoadError::jetstream("baseline fetch", e))?;
                let mut messages = Vec::with_capacity(batch);
                while let Some(message) = fetched.next().await {
                    messages.push(message.map_err(|e| LoadError::jetstream("baseline fetch", e))?);
                }
                if messages.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                commit_batch(&pool, &messages, statements).await?;
                for message in &messages {
                    message
                        .ack()
                        .await
                        .map_err(|e| LoadError::jetstream("baseline ack", e))?;
                }
                committed.fetch_add(messages.len() as u64, Ordering::Relaxed);
            }
            Ok(Instant::now())
        });
    }
    feed.await?;
    let mut last = started;
    while let Some(joined) = workers.join_next().await {
        let finished =
            joined.map_err(|e| LoadError::Invalid(format!("a baseline worker failed: {e}")))??;
        last = last.max(finished);
    }
    Ok(last - started)
}

/// The tenant a job's ledger rows belong to, as the handler books it.
fn tenant(envelope: &Envelope) -> &str {
    envelope.tenant.as_deref().unwrap_or_default()
}

/// What the `jobs` row upserts of both pipelines do with a row that exists: the consumer's
/// `record` (consumers/src/store.rs), which never overwrites a success.
macro_rules! jobs_row_conflict {
    () => {
        "ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status,
    attempts = GREATEST(jobs.attempts, EXCLUDED.attempts),
    result = EXCLUDED.result,
    error = EXCLUDED.error,
    started_at = COALESCE(jobs.started_at, EXCLUDED.started_at),
    finished_at = EXCLUDED.finished_at
WHERE jobs.status <> 'succeeded'"
    };
}

/// The jobs row as consumers/src/store.rs writes it, once per job; the ledger statements are
/// the worker's own ([`ledger::sql`]).
const UPSERT_JOB: &str = concat!(
    "
INSERT INTO jobs (id, type, status, attempts, payload, result, error, idempotency_key, tenant,
                  created_at, started_at, finished_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
",
    jobs_row_conflict!()
);

async fn commit_batch(
    pool: &PgPool,
    messages: &[Message],
    statements: Statements,
) -> Result<(), LoadError> {
    let jobs: Vec<(Envelope, LedgerPost)> = messages
        .iter()
        .filter_map(|m| {
            let envelope: Envelope = serde_json::from_slice(&m.payload).ok()?;
            let entry: LedgerPost = serde_json::from_value(envelope.payload.clone()).ok()?;
            Some((envelope, entry))
        })
        .collect();
    // Concurrent batches touch the same balances: a deadlock between two of them is retried.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let committed = match statements {
            Statements::Set => commit_set(pool, &jobs).await,
            Statements::Rows => commit_rows(pool, &jobs).await,
        };
        match committed {
            Ok(()) => return Ok(()),
            Err(error) if attempt < 5 && is_conflict(&error) => {
                tokio::time::sleep(Duration::from_millis(5 * attempt)).await;
            }
            Err(error) => return Err(LoadError::postgres("baseline transaction", error)),
        }
    }
}

fn is_conflict(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

async fn commit_rows(pool: &PgPool, jobs: &[(Envelope, LedgerPost)]) -> Result<(), sqlx::Error> {
    let started = OffsetDateTime::now_utc();
    let mut tx = pool.begin().await?;
    let mut applied = vec![false; jobs.len()];
    for ((envelope, entry), applied) in jobs.iter().zip(applied.iter_mut()) {
        *applied = ledger::sql::insert_entry(&mut tx, envelope.id, tenant(envelope), entry).await?;
    }
    // Balances in one order for every batch, so that two batches never wait on each other
    // in a cycle.
    let mut balances: Vec<(&str, &LedgerPost)> = jobs
        .iter()
        .zip(&applied)
        .filter(|(_, applied)| **applied)
        .map(|((envelope, entry), _)| (tenant(envelope), entry))
        .collect();
    balances.sort_by(|(ta, a), (tb, b)| {
        (ta, &a.account, &a.currency).cmp(&(tb, &b.account, &b.currency))
    });
    for (tenant, entry) in balances {
        ledger::sql::add_to_balance(&mut tx, tenant, entry).await?;
    }
    for ((envelope, _), applied) in jobs.iter().zip(&applied) {
        sqlx::query(UPSERT_JOB)
            .bind(envelope.id)
            .bind(&envelope.job_type)
            .bind(JobState::Succeeded)
            .bind(1_i32)
            .bind(&envelope.payload)
            .bind(serde_json::json!({ "applied": applied }))
            .bind(None::<String>)
            .bind(envelope.idempotency_key.as_deref())
            .bind(envelope.tenant.as_deref())
            .bind(envelope.created_at)
            .bind(started)
            .bind(OffsetDateTime::now_utc())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// The jobs rows over arrays: with [`ledger::sql`]'s array statements, one round trip each per
/// batch.
const UPSERT_JOBS: &str = concat!(
    "
INSERT INTO jobs (id, type, status, attempts, payload, result, error, idempotency_key, tenant,
                  created_at, started_at, finished_at)
SELECT id, type, 'succeeded', 1, payload, result, NULL, idempotency_key, tenant,
       created_at, $7, clock_timestamp()
  FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::jsonb[], $5::text[], $6::text[],
              $8::timestamptz[])
       AS t(id, type, payload, result, idempotency_key, tenant, created_at)
",
    jobs_row_conflict!()
);

/// One array parameter of the batch statements: `f` of every job.
fn column<'a, T>(
    jobs: &'a [(Envelope, LedgerPost)],
    f: impl Fn(&'a (Envelope, LedgerPost)) -> T,
) -> Vec<T> {
    jobs.iter().map(f).collect()
}

async fn commit_set(pool: &PgPool, jobs: &[(Envelope, LedgerPost)]) -> Result<(), sqlx::Error> {
    let started = OffsetDateTime::now_utc();
    let mut tx = pool.begin().await?;
    let applied: std::collections::HashSet<uuid::Uuid> =
        sqlx::query_scalar(ledger::sql::INSERT_ENTRIES)
            .bind(column(jobs, |(e, _)| e.id))
            .bind(column(jobs, |(e, _)| tenant(e)))
            .bind(column(jobs, |(_, p)| p.account.as_str()))
            .bind(column(jobs, |(_, p)| p.currency.as_str()))
            .bind(column(jobs, |(_, p)| p.amount_cents))
            .bind(column(jobs, |(_, p)| p.memo.as_deref()))
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    // One row per account (an upsert may not touch a row twice), in one order for every
    // batch so that two batches never wait on each other in a cycle.
    let mut deltas = std::collections::BTreeMap::<(&str, &str, &str), i64>::new();
    for (envelope, entry) in jobs {
        if applied.contains(&envelope.id) {
            *deltas
                .entry((
                    tenant(envelope),
                    entry.account.as_str(),
                    entry.currency.as_str(),
                ))
                .or_default() += entry.amount_cents;
        }
    }
    if !deltas.is_empty() {
        sqlx::query(ledger::sql::UPSERT_BALANCES)
            .bind(deltas.keys().map(|k| k.0).collect::<Vec<_>>())
            .bind(deltas.keys().map(|k| k.1).collect::<Vec<_>>())
            .bind(deltas.keys().map(|k| k.2).collect::<Vec<_>>())
            .bind(deltas.values().copied().collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(UPSERT_JOBS)
        .bind(column(jobs, |(e, _)| e.id))
        .bind(column(jobs, |(e, _)| e.job_type.as_str()))
        .bind(column(jobs, |(e, _)| &e.payload))
        .bind(column(
            jobs,
            |(e, _)| serde_json::json!({ "applied": applied.contains(&e.id) }),
        ))
        .bind(column(jobs, |(e, _)| e.idempotency_key.as_deref()))
        .bind(column(jobs, |(e, _)| e.tenant.as_deref()))
        .bind(started)
        .bind(column(jobs, |(e, _)| e.created_at))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
