//! Completion callbacks: a job submitted with a `callback_url` has its final state POSTed
//! there as a CloudEvent (binary mode: `ce-*` headers, the state as the JSON body), signed
//! with its tenant's Standard Webhooks secret. Every producer runs [`run_callbacks`]: it takes
//! the final jobs whose callback has not been handed over (row lock, `SKIP LOCKED`), publishes
//! one `webhook.deliver` job per callback, and marks the row, all in one transaction. The
//! delivery is then a webhook like any other: retries, private-address refusal, dead letters
//! and replay. The callback job's id derives from the job's id and state, so a callback
//! published twice (a producer that died before its commit) is the same job.
use std::time::Duration;

use codigo_common::shutdown::{self, Shutdown};
use codigo_common::webhook_secret::NO_TENANT;
use serde_json::{json, Value};
use sqlx::PgPool;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::events::CallbackHandedOver;
use crate::ingest::{Ingest, JobRequest};

/// How often final jobs with a callback are looked for.
const POLL: Duration = Duration::from_millis(500);
/// How long a state must have been final: a cancellation of a delayed job that fell due as it
/// was cancelled is taken back within this, and must not be announced.
const SETTLED: time::Duration = time::Duration::seconds(1);
/// Callbacks handed over per round.
const ROUND_ROWS: i64 = 200;
/// The CloudEvents `source` of every callback.
pub const EVENT_SOURCE: &str = "/codigo/jobs";

#[derive(Debug, sqlx::FromRow)]
struct Final {
    id: Uuid,
    #[sqlx(rename = "type")]
    job_type: String,
    tenant: Option<String>,
    status: String,
    attempts: i32,
    result: Option<Value>,
    error: Option<String>,
    finished_at: Option<OffsetDateTime>,
    callback_url: String,
}

/// The `webhook.deliver` payload announcing `job`'s final state.
fn delivery(job: &Final) -> Value {
    let finished_at = job
        .finished_at
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_default();
    let mut data = json!({
        "id": job.id,
        "type": job.job_type,
        "status": job.status,
        "attempts": job.attempts,
        "finished_at": finished_at,
    });
    if let Some(result) = &job.result {
        data["result"] = result.clone();
    }
    if let Some(error) = &job.error {
        data["error"] = json!(error);
    }
    json!({
        "url": job.callback_url,
        "headers": {
            "ce-specversion": "1.0",
            "ce-type": format!("dev.codigo.job.{}", job.status),
            "ce-source": EVENT_SOURCE,
            "ce-id": format!("{}.{}", job.id, job.status),
            "ce-subject": job.id.to_string(),
            "ce-time": finished_at,
        },
        "body": data,
    })
}

/// Hands callbacks over until `shutdown`.
pub async fn run_callbacks(pool: PgPool, ingest: Ingest, shutdown: Shutdown) {
    CallbackHandedOver::register();
    let failing = "cannot read the jobs awaiting callbacks; trying again shortly";
    shutdown::every(&shutdown, POLL, failing, || round(&pool, &ingest)).await;
}

async fn round(pool: &PgPool, ingest: &Ingest) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    let finals: Vec<Final> = sqlx::query_as(
        "SELECT id, type, tenant, status, attempts, result, error, finished_at, callback_url
           FROM jobs
          WHERE callback_url IS NOT NULL AND callback_sent_at IS NULL
            AND status IN ('succeeded', 'failed', 'dead_lettered', 'cancelled', 'expired')
            AND finished_at <= $1
          ORDER BY finished_at LIMIT $2
            FOR UPDATE SKIP LOCKED",
    )
    .bind(OffsetDateTime::now_utc() - SETTLED)
    .bind(ROUND_ROWS)
    .fetch_all(&mut *tx)
    .await?;
    let mut handed_over = Vec::with_capacity(finals.len());
    for job in &finals {
        let outcome = |result: &'static str| CallbackHandedOver {
            job_id: job.id,
            result,
        };
        let request = JobRequest::now(
            "webhook.deliver".to_owned(),
            delivery(job),
            Some(format!("callback:{}:{}", job.id, job.status)),
        );
        // A job published straight to JetStream without a tenant has no secret to sign with.
        let tenant = job.tenant.as_deref().unwrap_or(NO_TENANT);
        if tenant == NO_TENANT {
            outcome("invalid").emit("the job has no tenant whose secret could sign its callback");
            handed_over.push(job.id);
            continue;
        }
        match ingest.check_for_tenant(request, "/callback") {
            Err(problem) => {
                // Never deliverable (a URL a webhook may not have): given up, and said so.
                outcome("invalid").emit(&problem.detail);
                handed_over.push(job.id);
            }
            Ok(callback) => match ingest.publish_for(tenant, callback).await {
                Ok(_) => {
                    outcome("published").emit("");
                    handed_over.push(job.id);
                }
                // Stays due: tried again next round.
                Err(problem) => outcome("error").emit(&problem.detail),
            },
        }
    }
    if !handed_over.is_empty() {
        sqlx::query("UPDATE jobs SET callback_sent_at = now() WHERE id = ANY($1)")
            .bind(&handed_over)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn a_callback_is_a_binary_mode_cloudevent_of_the_final_state() {
        let job = Final {
            id: Uuid::nil(),
            job_type: "images.resize".into(),
            tenant: Some("acme".into()),
            status: "succeeded".into(),
            attempts: 2,
            result: Some(json!({"width": 640})),
            error: None,
            finished_at: Some(datetime!(2026-12-07 12:00 UTC)),
            callback_url: "https://example.com/done".into(),
        };
        let payload = delivery(&job);
        assert_eq!(payload["url"], "https://example.com/done");
        let headers = &payload["headers"];
        assert_eq!(headers["ce-specversion"], "1.0");
        assert_eq!(headers["ce-type"], "dev.codigo.job.succeeded");
        assert_eq!(headers["ce-subject"], Uuid::nil().to_string());
        assert_eq!(headers["ce-time"], "2026-12-07T12:00:00Z");
        assert_eq!(
            payload["body"],
            json!({"id": Uuid::nil(), "type": "images.resize", "status": "succeeded",
                   "attempts": 2, "finished_at": "2026-12-07T12:00:00Z",
                   "result": {"width": 640}})
        );
        let failed = Final {
            status: "dead_lettered".into(),
            result: None,
            error: Some("the function answered 400".into()),
            ..job
        };
        let payload = delivery(&failed);
        assert_eq!(
            payload["headers"]["ce-type"],
            "dev.codigo.job.dead_lettered"
        );
        assert_eq!(payload["body"]["error"], "the function answered 400");
        assert!(payload["body"].get("result").is_none());
    }
}
