//! Read side: a job's status as the consumers recorded it.
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
    /// running, retrying, succeeded, failed or dead_lettered.
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
}

/// Another tenant's job is indistinguishable from a missing one.
pub async fn job_status(
    pool: &PgPool,
    tenant: &str,
    id: Uuid,
) -> Result<Option<JobStatus>, sqlx::Error> {
    sqlx::query_as::<_, JobStatus>(
        "SELECT id, type, status, attempts, result, error, idempotency_key, created_at,
                started_at, finished_at
           FROM jobs WHERE id = $1 AND tenant = $2",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(pool)
    .await
}
