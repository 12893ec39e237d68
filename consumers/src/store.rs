//! The `jobs` table: one row per job id, written in the same transaction as a job's effects
//! on success, and on its own for retries and dead letters.
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

/// What is known about a job when its row is written.
#[derive(Debug, Clone)]
pub struct JobRecord<'a> {
    pub id: Uuid,
    pub job_type: &'a str,
    pub payload: Option<&'a Value>,
    pub idempotency_key: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub created_at: OffsetDateTime,
    pub started_at: OffsetDateTime,
    pub attempts: i32,
}

/// Final states never regress: a late retry or dead letter of a job that already succeeded
/// leaves its row alone.
const UPSERT: &str = "
INSERT INTO jobs (id, type, status, attempts, payload, result, error, idempotency_key, tenant,
                  created_at, started_at, finished_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status,
    attempts = GREATEST(jobs.attempts, EXCLUDED.attempts),
    result = EXCLUDED.result,
    error = EXCLUDED.error,
    started_at = COALESCE(jobs.started_at, EXCLUDED.started_at),
    finished_at = EXCLUDED.finished_at
WHERE jobs.status <> 'succeeded'";

async fn upsert(
    executor: impl PgExecutor<'_>,
    job: &JobRecord<'_>,
    status: &str,
    result: Option<&Value>,
    error: Option<&str>,
    finished: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(UPSERT)
        .bind(job.id)
        .bind(job.job_type)
        .bind(status)
        .bind(job.attempts)
        .bind(job.payload)
        .bind(result)
        .bind(error)
        .bind(job.idempotency_key)
        .bind(job.tenant)
        .bind(job.created_at)
        .bind(job.started_at)
        .bind(finished.then(OffsetDateTime::now_utc))
        .execute(executor)
        .await
        .map(drop)
}

pub async fn record_success(
    executor: impl PgExecutor<'_>,
    job: &JobRecord<'_>,
    result: Option<&Value>,
) -> Result<(), sqlx::Error> {
    upsert(executor, job, "succeeded", result, None, true).await
}

/// Marks a group of jobs succeeded in one statement (ids must be distinct).
pub async fn record_successes(
    executor: impl PgExecutor<'_>,
    jobs: &[&JobRecord<'_>],
    results: &[Value],
) -> Result<(), sqlx::Error> {
    let finished = OffsetDateTime::now_utc();
    sqlx::query(
        "INSERT INTO jobs (id, type, status, attempts, payload, result, error, idempotency_key,
                          tenant, created_at, started_at, finished_at)
         SELECT id, type, 'succeeded', attempts, payload, result, NULL, idempotency_key, tenant,
                created_at, started_at, $10
           FROM UNNEST($1::uuid[], $2::text[], $3::int[], $4::jsonb[], $5::jsonb[], $6::text[],
                       $7::text[], $8::timestamptz[], $9::timestamptz[])
                AS t(id, type, attempts, payload, result, idempotency_key, tenant, created_at,
                     started_at)
         ON CONFLICT (id) DO UPDATE SET
             status = 'succeeded',
             attempts = GREATEST(jobs.attempts, EXCLUDED.attempts),
             result = EXCLUDED.result,
             error = NULL,
             started_at = COALESCE(jobs.started_at, EXCLUDED.started_at),
             finished_at = EXCLUDED.finished_at
         WHERE jobs.status <> 'succeeded'",
    )
    .bind(jobs.iter().map(|j| j.id).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.job_type).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.attempts).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.payload.cloned()).collect::<Vec<_>>())
    .bind(results)
    .bind(jobs.iter().map(|j| j.idempotency_key).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.tenant).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.created_at).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.started_at).collect::<Vec<_>>())
    .bind(finished)
    .execute(executor)
    .await
    .map(drop)
}

pub async fn record_retry(
    pool: &PgPool,
    job: &JobRecord<'_>,
    error: &str,
) -> Result<(), sqlx::Error> {
    upsert(pool, job, "retrying", None, Some(error), false).await
}

pub async fn record_dead_letter(
    pool: &PgPool,
    job: &JobRecord<'_>,
    error: &str,
) -> Result<(), sqlx::Error> {
    upsert(pool, job, "dead_lettered", None, Some(error), true).await
}

pub async fn status_of(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as("SELECT status, error FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Whether a database error will go away by itself (connection trouble, deadlock, restart)
/// rather than fail the same way on every attempt.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 08 connection, 40 serialization/deadlock, 53 resources, 57 operator intervention
            // (e.g. admin shutdown), 58 system errors; and states of the database rather than
            // of the job: 25006 read-only (a failover in progress), 55P03 lock timeout, 55000
            // database not accepting connections, 28 credentials being rotated.
            ["08", "40", "53", "57", "58", "25006", "28", "55"]
                .iter()
                .any(|class| code.starts_with(class))
        }
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}
