//! The `jobs` table: one row per job id, written in the same transaction as a job's effects
//! on success, and on its own for retries and dead letters.
use codigo_common::contract::JobState;
use codigo_schemas::Envelope;
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
    pub callback_url: Option<&'a str>,
    pub expires_at: Option<OffsetDateTime>,
}

/// What a job's envelope says of it, as far as it is known: a body that failed its schema, or
/// a job rebuilt from its row, may lack parts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Submitted<'a> {
    pub payload: Option<&'a Value>,
    pub idempotency_key: Option<&'a str>,
    pub tenant: Option<&'a str>,
    /// Unknown means now.
    pub created_at: Option<OffsetDateTime>,
    pub callback_url: Option<&'a str>,
    pub expires_at: Option<OffsetDateTime>,
}

impl<'a> Submitted<'a> {
    pub fn of_envelope(envelope: &'a Envelope) -> Self {
        Self {
            payload: Some(&envelope.payload),
            idempotency_key: envelope.idempotency_key.as_deref(),
            tenant: envelope.tenant.as_deref(),
            created_at: Some(envelope.created_at),
            callback_url: envelope.callback_url.as_deref(),
            expires_at: envelope.expires_at,
        }
    }

    /// From a body that is JSON but not a valid envelope.
    pub fn of_value(body: &'a Value) -> Self {
        Self {
            payload: body.get("payload"),
            idempotency_key: body.get("idempotency_key").and_then(Value::as_str),
            tenant: body.get("tenant").and_then(Value::as_str),
            created_at: None,
            callback_url: body.get("callback_url").and_then(Value::as_str),
            expires_at: None,
        }
    }

    pub fn of_stored(job: &'a StoredJob) -> Self {
        Self {
            payload: job.payload.as_ref(),
            idempotency_key: job.idempotency_key.as_deref(),
            tenant: job.tenant.as_deref(),
            created_at: Some(job.created_at),
            // Kept in the row, which the statements never overwrite with `NULL`.
            callback_url: None,
            expires_at: None,
        }
    }
}

impl<'a> JobRecord<'a> {
    /// The record of delivery number `attempt` of a job, started now.
    pub fn new(id: Uuid, job_type: &'a str, attempt: u64, submitted: Submitted<'a>) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            id,
            job_type,
            payload: submitted.payload,
            idempotency_key: submitted.idempotency_key,
            tenant: submitted.tenant,
            created_at: submitted.created_at.unwrap_or(now),
            started_at: now,
            attempts: i32::try_from(attempt).unwrap_or(i32::MAX),
            callback_url: submitted.callback_url,
            expires_at: submitted.expires_at,
        }
    }
}

/// Final states never regress: a late retry or dead letter of a job that already succeeded
/// leaves its row alone. A retry of a job whose cancellation came while it ran becomes its
/// cancellation instead. A new state is announced again (a dead letter replayed, say): its
/// callback is due once more.
///
/// No index covers a column these statements change (migration 0010), so the update of a row
/// the gateway wrote stays on its page and touches no index.
const UPSERT: &str = "
INSERT INTO jobs (id, type, status, attempts, payload, result, error, idempotency_key, tenant,
                  created_at, started_at, finished_at, stream_sequence, retry_at, callback_url,
                  expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
ON CONFLICT (id) DO UPDATE SET
    callback_url = COALESCE(jobs.callback_url, EXCLUDED.callback_url),
    callback_sent_at = CASE WHEN jobs.status = EXCLUDED.status THEN jobs.callback_sent_at END,
    expires_at = COALESCE(jobs.expires_at, EXCLUDED.expires_at),
    status = CASE WHEN jobs.cancel_requested AND EXCLUDED.status = 'retrying'
                  THEN 'cancelled' ELSE EXCLUDED.status END,
    attempts = GREATEST(jobs.attempts, EXCLUDED.attempts),
    result = EXCLUDED.result,
    error = EXCLUDED.error,
    started_at = COALESCE(jobs.started_at, EXCLUDED.started_at),
    finished_at = CASE WHEN jobs.cancel_requested AND EXCLUDED.status = 'retrying'
                       THEN now() ELSE EXCLUDED.finished_at END,
    stream_sequence = COALESCE(EXCLUDED.stream_sequence, jobs.stream_sequence),
    retry_at = CASE WHEN jobs.cancel_requested THEN NULL ELSE EXCLUDED.retry_at END
WHERE jobs.status <> 'succeeded'
RETURNING status";

/// How a job's row ended up: `None` when it had succeeded already and was left alone.
#[allow(clippy::too_many_arguments)]
async fn upsert(
    executor: impl PgExecutor<'_>,
    job: &JobRecord<'_>,
    status: JobState,
    result: Option<&Value>,
    error: Option<&str>,
    finished: bool,
    stream_sequence: Option<u64>,
    retry_at: Option<OffsetDateTime>,
) -> Result<Option<JobState>, sqlx::Error> {
    sqlx::query_scalar(UPSERT)
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
        .bind(stream_sequence.and_then(|seq| i64::try_from(seq).ok()))
        .bind(retry_at)
        .bind(job.callback_url)
        .bind(job.expires_at)
        .fetch_optional(executor)
        .await
}

pub async fn record_success(
    executor: impl PgExecutor<'_>,
    job: &JobRecord<'_>,
    result: Option<&Value>,
) -> Result<(), sqlx::Error> {
    upsert(
        executor,
        job,
        JobState::Succeeded,
        result,
        None,
        true,
        None,
        None,
    )
    .await
    .map(drop)
}

/// Marks a group of jobs succeeded in one statement (ids must be distinct), in id order as the
/// gateway writes its `queued` rows: two groups sharing ids then cannot deadlock. Success is
/// always a new state here, so its callback is due even where another state's was sent.
pub async fn record_successes(
    executor: impl PgExecutor<'_>,
    jobs: &[&JobRecord<'_>],
    results: &[Option<Value>],
) -> Result<(), sqlx::Error> {
    let finished = OffsetDateTime::now_utc();
    sqlx::query(
        "INSERT INTO jobs (id, type, status, attempts, payload, result, error, idempotency_key,
                          tenant, created_at, started_at, finished_at, callback_url, expires_at)
         SELECT id, type, 'succeeded', attempts, payload, result, NULL, idempotency_key, tenant,
                created_at, started_at, $10, callback_url, expires_at
           FROM UNNEST($1::uuid[], $2::text[], $3::int[], $4::jsonb[], $5::jsonb[], $6::text[],
                       $7::text[], $8::timestamptz[], $9::timestamptz[], $11::text[],
                       $12::timestamptz[])
                AS t(id, type, attempts, payload, result, idempotency_key, tenant, created_at,
                     started_at, callback_url, expires_at)
          ORDER BY id
         ON CONFLICT (id) DO UPDATE SET
             callback_url = COALESCE(jobs.callback_url, EXCLUDED.callback_url),
             callback_sent_at = NULL,
             expires_at = COALESCE(jobs.expires_at, EXCLUDED.expires_at),
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
    .bind(jobs.iter().map(|j| j.callback_url).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.expires_at).collect::<Vec<_>>())
    .execute(executor)
    .await
    .map(drop)
}

/// Records a dead letter (`DeadLettered`) with the work-stream sequence of its message: a
/// max-deliveries advisory for a message that has left the stream finds the job by it, and a
/// late one finds the job finished.
pub async fn record_failure(
    pool: &PgPool,
    job: &JobRecord<'_>,
    state: JobState,
    error: &str,
    stream_sequence: u64,
) -> Result<(), sqlx::Error> {
    let finished = state.is_final();
    upsert(
        pool,
        job,
        state,
        None,
        Some(error),
        finished,
        Some(stream_sequence),
        None,
    )
    .await
    .map(drop)
}

/// Records a failed delivery to be retried at `retry_at`; answers `Cancelled` when the job's
/// cancellation came while it ran: then it must not be retried.
pub async fn record_retry(
    pool: &PgPool,
    job: &JobRecord<'_>,
    error: &str,
    stream_sequence: u64,
    retry_at: OffsetDateTime,
) -> Result<Option<JobState>, sqlx::Error> {
    upsert(
        pool,
        job,
        JobState::Retrying,
        None,
        Some(error),
        false,
        Some(stream_sequence),
        Some(retry_at),
    )
    .await
}

/// Marks the jobs of a fetched group `running` (those queued, delayed and due, or waiting for
/// a retry: a worker has them now) and answers which of them were cancelled before: they must
/// not run. `marks` commits without waiting for the WAL flush (`db::lazy_marks_pool`): the
/// mark matters while Postgres runs (its row lock orders it against a cancellation); after a
/// crash, the job's own commit says what happened.
pub async fn claim(marks: &PgPool, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "WITH claimed AS (
             UPDATE jobs SET status = 'running', retry_at = NULL,
                             started_at = COALESCE(started_at, now())
              WHERE id = ANY($1) AND status IN ('queued', 'scheduled', 'retrying'))
         SELECT id FROM jobs WHERE id = ANY($1) AND status = 'cancelled'",
    )
    .bind(ids)
    .fetch_all(marks)
    .await
}

/// Records a job whose deadline passed before it could start (or be retried): never started,
/// so no `started_at`. A final row stays as it is.
pub async fn record_expired(pool: &PgPool, job: &JobRecord<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO jobs (id, type, status, attempts, payload, error, idempotency_key, tenant,
                           created_at, finished_at, callback_url, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO UPDATE SET
             callback_url = COALESCE(jobs.callback_url, EXCLUDED.callback_url),
             expires_at = COALESCE(jobs.expires_at, EXCLUDED.expires_at),
             status = EXCLUDED.status,
             error = EXCLUDED.error,
             finished_at = EXCLUDED.finished_at
         WHERE jobs.status NOT IN ('succeeded', 'dead_lettered', 'cancelled', 'expired')",
    )
    .bind(job.id)
    .bind(job.job_type)
    .bind(JobState::Expired)
    .bind(job.attempts)
    .bind(job.payload)
    .bind("its deadline passed before a worker could start it")
    .bind(job.idempotency_key)
    .bind(job.tenant)
    .bind(job.created_at)
    .bind(OffsetDateTime::now_utc())
    .bind(job.callback_url)
    .bind(job.expires_at)
    .execute(pool)
    .await
    .map(drop)
}

/// A jobs row, as much as rebuilding its envelope needs.
#[derive(Debug, Clone)]
pub struct StoredJob {
    pub id: Uuid,
    pub job_type: String,
    pub status: JobState,
    pub payload: Option<Value>,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    pub tenant: Option<String>,
    pub created_at: OffsetDateTime,
}

impl StoredJob {
    /// The envelope the job was published with, rebuilt from its row.
    pub fn envelope(&self) -> Value {
        let mut envelope = serde_json::json!({
            "id": self.id.to_string(),
            "type": self.job_type,
            "payload": self.payload.clone().unwrap_or(Value::Null),
            "created_at": self.created_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        });
        if let Some(key) = &self.idempotency_key {
            envelope["idempotency_key"] = Value::from(key.as_str());
        }
        if let Some(tenant) = &self.tenant {
            envelope["tenant"] = Value::from(tenant.as_str());
        }
        envelope
    }
}

type StoredRow = (
    Uuid,
    String,
    JobState,
    Option<Value>,
    Option<String>,
    Option<String>,
    Option<String>,
    OffsetDateTime,
);

/// The job whose last failed delivery had this work-stream sequence (the newest, should the
/// stream have been recreated and its sequences begun again).
pub async fn job_at_sequence(
    pool: &PgPool,
    stream_sequence: u64,
) -> Result<Option<StoredJob>, sqlx::Error> {
    let Ok(sequence) = i64::try_from(stream_sequence) else {
        return Ok(None);
    };
    let row: Option<StoredRow> = sqlx::query_as(
        "SELECT id, type, status, payload, error, idempotency_key, tenant, created_at
           FROM jobs WHERE stream_sequence = $1
          ORDER BY created_at DESC LIMIT 1",
    )
    .bind(sequence)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(
        |(id, job_type, status, payload, error, idempotency_key, tenant, created_at)| StoredJob {
            id,
            job_type,
            status,
            payload,
            error,
            idempotency_key,
            tenant,
            created_at,
        },
    ))
}

pub async fn status_of(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<(JobState, Option<String>)>, sqlx::Error> {
    sqlx::query_as("SELECT status, error FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}
