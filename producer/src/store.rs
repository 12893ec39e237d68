//! Read side: a job's status as the consumers recorded it.
use codigo_common::contract::JobState;
use codigo_schemas::Envelope;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct JobStatus {
    pub id: Uuid,
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub job_type: String,
    /// queued, scheduled, running, retrying, succeeded, failed, dead_lettered, cancelled or
    /// expired.
    pub status: String,
    pub attempts: i32,
    #[schema(value_type = Object)]
    pub result: Option<Value>,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// When a delayed job is due.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[sqlx(default)]
    pub run_at: Option<OffsetDateTime>,
    /// The job's deadline: not started by then, it is not run (`expired`).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[sqlx(default)]
    pub expires_at: Option<OffsetDateTime>,
    /// When a `retrying` job's next attempt is due.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub retry_at: Option<OffsetDateTime>,
    /// A `running` job was cancelled: it may still succeed, but it is not retried.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
}

impl JobStatus {
    /// A delayed job whose time has come waits in the work stream like any other: `queued`
    /// until a worker takes it.
    fn seen_now(mut self) -> Self {
        let due = self
            .run_at
            .is_some_and(|run_at| run_at <= OffsetDateTime::now_utc());
        if due && self.status == JobState::Scheduled.as_str() {
            self.status = JobState::Queued.as_str().to_owned();
        }
        self
    }

    /// A delayed job that waits for its time: no worker has seen it yet.
    pub fn scheduled(envelope: Envelope) -> Self {
        Self {
            id: envelope.id,
            job_type: envelope.job_type,
            status: "scheduled".into(),
            attempts: 0,
            result: None,
            error: None,
            idempotency_key: envelope.idempotency_key,
            created_at: envelope.created_at,
            started_at: None,
            finished_at: None,
            run_at: envelope.run_at,
            expires_at: envelope.expires_at,
            retry_at: None,
            cancel_requested: false,
        }
    }
}

/// Another tenant's job is indistinguishable from a missing one.
pub async fn job_status(
    pool: &PgPool,
    tenant: &str,
    id: Uuid,
) -> Result<Option<JobStatus>, sqlx::Error> {
    let status = sqlx::query_as::<_, JobStatus>(
        "SELECT id, type, status, attempts, result, error, idempotency_key, created_at,
                started_at, finished_at, run_at, expires_at, retry_at, cancel_requested
           FROM jobs WHERE id = $1 AND tenant = $2",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    Ok(status.map(JobStatus::seen_now))
}

/// A cancellation's effect on a job's row.
#[derive(Debug, sqlx::FromRow)]
pub struct Cancellation {
    /// `Cancelled`, or `Running`: a worker holds the job, and no retry will follow.
    pub status: JobState,
    /// Where its message is in the work stream, if it was published there.
    pub stream_sequence: Option<i64>,
    /// A delayed job's time: its message may still wait in the schedules stream.
    pub run_at: Option<OffsetDateTime>,
}

/// Cancels job `id` if no worker holds it (`queued`, `scheduled` or waiting for a retry). A
/// job a worker holds (`running`) is marked so that no retry follows. `None`: no job of this
/// tenant in any of these states.
pub async fn cancel(
    pool: &PgPool,
    tenant: &str,
    id: Uuid,
) -> Result<Option<Cancellation>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE jobs
            SET status = CASE WHEN status = 'running' THEN status ELSE 'cancelled' END,
                finished_at = CASE WHEN status = 'running' THEN finished_at ELSE now() END,
                retry_at = NULL,
                cancel_requested = true
          WHERE id = $1 AND tenant = $2
            AND status IN ('queued', 'scheduled', 'retrying', 'running')
      RETURNING status, stream_sequence, run_at",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await
}

/// Records a delayed job as cancelled, before its schedule is removed; `false` when the job
/// already has a row (a worker has it).
pub async fn record_cancelled(pool: &PgPool, envelope: &Envelope) -> Result<bool, sqlx::Error> {
    let now = OffsetDateTime::now_utc();
    sqlx::query(
        "INSERT INTO jobs (id, type, status, attempts, payload, idempotency_key, tenant,
                           created_at, finished_at, callback_url)
         VALUES ($1, $2, $3, 0, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(envelope.id)
    .bind(&envelope.job_type)
    .bind(JobState::Cancelled)
    .bind(&envelope.payload)
    .bind(&envelope.idempotency_key)
    .bind(&envelope.tenant)
    .bind(envelope.created_at)
    .bind(now)
    .bind(&envelope.callback_url)
    .execute(pool)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// Takes back a cancellation that came too late: the job fell due first. A worker that has
/// started it since owns the row, and it is left alone.
pub async fn undo_cancelled(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM jobs WHERE id = $1 AND status = $2")
        .bind(id)
        .bind(JobState::Cancelled)
        .execute(pool)
        .await
        .map(drop)
}
