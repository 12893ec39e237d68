//! The `jobs` table: one row per job id, written in the same transaction as a job's effects
//! on success, and on its own for retries and dead letters.
use codigo_common::contract::JobState;
use codigo_schemas::Envelope;
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::events::{self, DatabaseError};

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

/// What a job's envelope says of it, as far as it is known: a body that failed its schema, or
/// a job rebuilt from its row, may lack parts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Submitted<'a> {
    pub payload: Option<&'a Value>,
    pub idempotency_key: Option<&'a str>,
    pub tenant: Option<&'a str>,
    /// Unknown means now.
    pub created_at: Option<OffsetDateTime>,
}

impl<'a> Submitted<'a> {
    pub fn of_envelope(envelope: &'a Envelope) -> Self {
        Self {
            payload: Some(&envelope.payload),
            idempotency_key: envelope.idempotency_key.as_deref(),
            tenant: envelope.tenant.as_deref(),
            created_at: Some(envelope.created_at),
        }
    }

    /// From a body that is JSON but not a valid envelope.
    pub fn of_value(body: &'a Value) -> Self {
        Self {
            payload: body.get("payload"),
            idempotency_key: body.get("idempotency_key").and_then(Value::as_str),
            tenant: body.get("tenant").and_then(Value::as_str),
            created_at: None,
        }
    }

    pub fn of_stored(job: &'a StoredJob) -> Self {
        Self {
            payload: job.payload.as_ref(),
            idempotency_key: job.idempotency_key.as_deref(),
            tenant: job.tenant.as_deref(),
            created_at: Some(job.created_at),
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
        }
    }
}

/// Final states never regress: a late retry or dead letter of a job that already succeeded
/// leaves its row alone.
const UPSERT: &str = "
INSERT INTO jobs (id, type, status, attempts, payload, result, error, idempotency_key, tenant,
                  created_at, started_at, finished_at, stream_sequence)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status,
    attempts = GREATEST(jobs.attempts, EXCLUDED.attempts),
    result = EXCLUDED.result,
    error = EXCLUDED.error,
    started_at = COALESCE(jobs.started_at, EXCLUDED.started_at),
    finished_at = EXCLUDED.finished_at,
    stream_sequence = COALESCE(EXCLUDED.stream_sequence, jobs.stream_sequence)
WHERE jobs.status <> 'succeeded'";

async fn upsert(
    executor: impl PgExecutor<'_>,
    job: &JobRecord<'_>,
    status: JobState,
    result: Option<&Value>,
    error: Option<&str>,
    finished: bool,
    stream_sequence: Option<u64>,
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
        .bind(stream_sequence.and_then(|seq| i64::try_from(seq).ok()))
        .execute(executor)
        .await
        .map(drop)
}

pub async fn record_success(
    executor: impl PgExecutor<'_>,
    job: &JobRecord<'_>,
    result: Option<&Value>,
) -> Result<(), sqlx::Error> {
    upsert(executor, job, JobState::Succeeded, result, None, true, None).await
}

/// Marks a group of jobs succeeded in one statement (ids must be distinct).
pub async fn record_successes(
    executor: impl PgExecutor<'_>,
    jobs: &[&JobRecord<'_>],
    results: &[Option<Value>],
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

/// Records a failed delivery, with its work-stream sequence: a max-deliveries advisory for a
/// message that has left the stream finds the job by it.
pub async fn record_retry(
    pool: &PgPool,
    job: &JobRecord<'_>,
    error: &str,
    stream_sequence: u64,
) -> Result<(), sqlx::Error> {
    upsert(
        pool,
        job,
        JobState::Retrying,
        None,
        Some(error),
        false,
        Some(stream_sequence),
    )
    .await
}

/// Records a dead letter, with the work-stream sequence of the message: a late max-deliveries
/// advisory for it finds the job finished.
pub async fn record_dead_letter(
    pool: &PgPool,
    job: &JobRecord<'_>,
    error: &str,
    stream_sequence: u64,
) -> Result<(), sqlx::Error> {
    upsert(
        pool,
        job,
        JobState::DeadLettered,
        None,
        Some(error),
        true,
        Some(stream_sequence),
    )
    .await
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

/// What a database error means for the jobs that met it, judged by its SQLSTATE (or, for
/// errors that never reached Postgres, by what failed). Every place that judges a database
/// error goes through [`DbFailure::from`].
#[derive(Debug, thiserror::Error)]
pub enum DbFailure {
    /// Goes away by itself (connection trouble, serialization failure or deadlock, resources,
    /// operator intervention, a failover): hold the jobs and try again.
    #[error("Postgres unavailable{}: {source}", sqlstate_suffix(.sqlstate.as_deref()))]
    Transient {
        sqlstate: Option<String>,
        source: sqlx::Error,
    },
    /// The deployment is broken (missing privileges, a table or column that is not there, a
    /// database or schema that does not exist): no job can succeed until an operator fixes it.
    /// Hold the jobs, never dead-letter them, and raise the alert.
    #[error(
        "the database refuses the consumer's own statements{}: {source}; check the consumer \
         role's grants and that migrations ran (codigo-ctl setup), then the held jobs resume",
        sqlstate_suffix(.sqlstate.as_deref())
    )]
    Deployment {
        sqlstate: Option<String>,
        source: sqlx::Error,
    },
    /// Postgres refuses this job's data (class 22, a constraint): permanent for this job only.
    #[error("Postgres refused the job's writes{}: {source}", sqlstate_suffix(.sqlstate.as_deref()))]
    Job {
        sqlstate: Option<String>,
        source: sqlx::Error,
    },
}

fn sqlstate_suffix(sqlstate: Option<&str>) -> String {
    sqlstate.map_or_else(String::new, |code| format!(" (SQLSTATE {code})"))
}

/// The three ways a database error can be judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbErrorClass {
    Transient,
    Deployment,
    Job,
}

impl DbErrorClass {
    pub const ALL: [DbErrorClass; 3] = [Self::Transient, Self::Deployment, Self::Job];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Deployment => "deployment",
            Self::Job => "job",
        }
    }

    /// Judges a SQLSTATE.
    pub fn of_sqlstate(code: &str) -> Self {
        let class = code.get(..2).unwrap_or_default();
        match (class, code) {
            // 08 connection, 40 serialization failure / deadlock, 53 insufficient resources,
            // 57 operator intervention (admin shutdown, query cancelled), 58 system error;
            // states of the database rather than of the job: 25006 read-only (a failover in
            // progress), 55P03 lock not available, 55000 object not in prerequisite state.
            ("08" | "40" | "53" | "57" | "58", _) | (_, "25006" | "55P03" | "55000") => {
                Self::Transient
            }
            // 42 syntax or access rule (42501 insufficient privilege, 42P01 undefined table,
            // 42703 undefined column, ...): our statements are fixed, so no job's data causes
            // them. 28 bad credentials, 3D000 no such database, 3F000 no such schema.
            ("42" | "28", _) | (_, "3D000" | "3F000") => Self::Deployment,
            // 22 data exception, 23 integrity constraint and everything else: this job.
            _ => Self::Job,
        }
    }

    /// Judges an error that may not carry a SQLSTATE.
    pub fn of(error: &sqlx::Error) -> Self {
        match error {
            sqlx::Error::Database(db) => db
                .code()
                .map_or(Self::Job, |code| Self::of_sqlstate(code.as_ref())),
            // The connection or the pool failed, not the statement.
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => Self::Transient,
            // Rows that do not match what the code expects: schema and code disagree.
            sqlx::Error::Configuration(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. }
            | sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::TypeNotFound { .. }
            | sqlx::Error::RowNotFound
            | sqlx::Error::Decode(_) => Self::Deployment,
            _ => Self::Job,
        }
    }
}

impl From<sqlx::Error> for DbFailure {
    fn from(source: sqlx::Error) -> Self {
        let sqlstate = match &source {
            sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
            _ => None,
        };
        match DbErrorClass::of(&source) {
            DbErrorClass::Transient => Self::Transient { sqlstate, source },
            DbErrorClass::Deployment => Self::Deployment { sqlstate, source },
            DbErrorClass::Job => Self::Job { sqlstate, source },
        }
    }
}

impl DbFailure {
    pub fn class(&self) -> DbErrorClass {
        match self {
            Self::Transient { .. } => DbErrorClass::Transient,
            Self::Deployment { .. } => DbErrorClass::Deployment,
            Self::Job { .. } => DbErrorClass::Job,
        }
    }

    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Self::Transient { sqlstate, .. }
            | Self::Deployment { sqlstate, .. }
            | Self::Job { sqlstate, .. } => sqlstate.as_deref(),
        }
    }

    /// Counts the failure (`codigo_consumer_database_errors_total{class}`) and, for a broken
    /// deployment, logs it as the error it is.
    pub fn observed(self) -> Self {
        events::emit(DatabaseError(&self));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_judged_by_class() {
        for (code, class) in [
            ("08006", DbErrorClass::Transient),
            ("08P01", DbErrorClass::Transient),
            ("40001", DbErrorClass::Transient),
            ("40P01", DbErrorClass::Transient),
            ("53300", DbErrorClass::Transient),
            ("53100", DbErrorClass::Transient),
            ("57P01", DbErrorClass::Transient),
            ("57014", DbErrorClass::Transient),
            ("25006", DbErrorClass::Transient),
            ("55P03", DbErrorClass::Transient),
            ("42501", DbErrorClass::Deployment),
            ("42P01", DbErrorClass::Deployment),
            ("42703", DbErrorClass::Deployment),
            ("28P01", DbErrorClass::Deployment),
            ("3D000", DbErrorClass::Deployment),
            ("22003", DbErrorClass::Job),
            ("22P05", DbErrorClass::Job),
            ("23505", DbErrorClass::Job),
            ("", DbErrorClass::Job),
        ] {
            assert_eq!(DbErrorClass::of_sqlstate(code), class, "{code}");
        }
    }

    #[test]
    fn errors_outside_postgres_are_judged_by_what_failed() {
        assert_eq!(
            DbErrorClass::of(&sqlx::Error::PoolTimedOut),
            DbErrorClass::Transient
        );
        assert_eq!(
            DbErrorClass::of(&sqlx::Error::PoolClosed),
            DbErrorClass::Transient
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(
            DbErrorClass::of(&sqlx::Error::Io(io)),
            DbErrorClass::Transient
        );
        assert_eq!(
            DbErrorClass::of(&sqlx::Error::ColumnNotFound("status".into())),
            DbErrorClass::Deployment
        );
    }
}
