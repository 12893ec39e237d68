//! Invoking an HTTP function: `POST <url>` with the payload as the JSON body, signed per
//! Standard Webhooks with the function's own secret, and the answer mapped onto the job:
//!
//! - `2xx`: success; a JSON answer up to 64 KiB is the job's result;
//! - `429` or `503` with `Retry-After`: retried after that delay;
//! - `408`, other `5xx`, timeouts and connection errors: retried with the type's back-off;
//! - any other status: a permanent failure, dead-lettered with the status and the answer's
//!   first bytes.
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use codigo_common::telemetry;
use codigo_common::webhook_secret::TenantSecret;
use codigo_schemas::{DeclaredType, MAX_RESULT_BYTES};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use secrecy::ExposeSecret as _;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::handlers::webhook::retry_after;
use crate::runtime::{Done, JobCtx, JobError, JobTx, Worker};

/// How much of a refusing answer goes into the dead letter and the jobs row.
const ANSWER_EXCERPT_BYTES: usize = 512;

/// The master keys functions' secrets derive from: the current one, and the one before a
/// rotation, while it lasts (invocations then carry a signature from each).
#[derive(Clone)]
pub struct SigningKeys {
    pub current: String,
    pub previous: Option<String>,
}

impl From<&codigo_common::config::SigningKeys> for SigningKeys {
    /// The configured keys as the signers hold them; no current key is an empty one, which
    /// configuration refuses wherever anything is signed.
    fn from(keys: &codigo_common::config::SigningKeys) -> Self {
        let exposed = |key: &secrecy::SecretString| key.expose_secret().to_owned();
        Self {
            current: keys
                .webhook_signing_key
                .as_ref()
                .map(exposed)
                .unwrap_or_default(),
            previous: keys.webhook_previous_signing_key.as_ref().map(exposed),
        }
    }
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKeys([REDACTED])")
    }
}

impl SigningKeys {
    /// The `webhook-signature` value for one invocation of `job_type`.
    pub fn signature(&self, job_type: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
        std::iter::once(&self.current)
            .chain(self.previous.as_ref())
            .map(|key| {
                TenantSecret::for_function(key.as_bytes(), job_type).sign(id, timestamp, body)
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The worker of one declared type served by an HTTP function, for as long as its declaration
/// stands.
pub struct FunctionWorker {
    declared: Arc<DeclaredType>,
    url: reqwest::Url,
    timeout: Duration,
    client: reqwest::Client,
    keys: SigningKeys,
    pool: PgPool,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Answers of jobs whose success could not be recorded yet: the runtime holds such a job
    /// and calls again, and then the function is not invoked a second time.
    answered: Mutex<HashMap<Uuid, Option<Value>>>,
}

impl FunctionWorker {
    pub fn new(
        declared: Arc<DeclaredType>,
        (url, timeout): (reqwest::Url, Duration),
        client: reqwest::Client,
        keys: SigningKeys,
        pool: PgPool,
    ) -> Self {
        let limiter = declared.policy.jobs_per_sec.and_then(rate_limiter);
        Self {
            declared,
            url,
            timeout,
            client,
            keys,
            pool,
            limiter,
            answered: Mutex::new(HashMap::new()),
        }
    }

    fn name(&self) -> &'static str {
        self.declared.job_type.name
    }

    fn answered(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Option<Value>>> {
        self.answered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The result of a job already recorded as succeeded (its ack was lost, or it was
    /// submitted again after the duplicate window).
    async fn recorded(&self, id: Uuid) -> Result<Option<Option<Value>>, sqlx::Error> {
        sqlx::query_scalar::<_, Option<Value>>(
            "SELECT result FROM jobs WHERE id = $1 AND status = 'succeeded'",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    fn headers(&self, job: &JobCtx<'_, Value>, body: &[u8]) -> HeaderMap {
        let id = job.id.to_string();
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = self.keys.signature(self.name(), &id, timestamp, body);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let fixed = [
            ("webhook-id", id),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
            ("codigo-job-type", self.name().to_owned()),
            ("codigo-attempt", job.attempt.to_string()),
        ];
        let trace = telemetry::trace_context_headers();
        for (name, value) in fixed
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v))
            .chain(trace)
        {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        }
        headers
    }

    async fn invoke(&self, job: &JobCtx<'_, Value>) -> Result<Option<Value>, JobError> {
        let body = serde_json::to_vec(&job.payload).unwrap_or_default();
        let target = self.url.origin().ascii_serialization();
        let sent = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .headers(self.headers(job, &body))
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                return Err(JobError::retry(format!(
                    "function {} at {target} did not answer within {:?} (its declared timeout)",
                    self.name(),
                    self.timeout
                )))
            }
            Err(error) => {
                return Err(JobError::retry(format!(
                    "function {} at {target} is unreachable: {}; is its Service up?",
                    self.name(),
                    error.without_url()
                )))
            }
        };
        let status = response.status();
        let after = retry_after(response.headers());
        let (answer, complete) = read_limited(&mut response, MAX_RESULT_BYTES).await;
        let code = status.as_u16();
        if status.is_success() {
            return Ok(self.result(job.id, &answer, complete));
        }
        let excerpt =
            String::from_utf8_lossy(&answer[..answer.len().min(ANSWER_EXCERPT_BYTES)]).into_owned();
        let said = format!("function {} answered {status}: {excerpt}", self.name());
        if matches!(code, 429 | 503) && after.is_some() {
            Err(JobError::retry_after(after, said))
        } else if code == 408 || status.is_server_error() {
            Err(JobError::retry(said))
        } else {
            Err(JobError::permanent(format!(
                "{said} (a {code} is final: fix the job or the function, then replay the dead letter)"
            )))
        }
    }

    /// A 2xx answer as the job's result: JSON up to 64 KiB; anything else is logged and the
    /// job succeeds without a result.
    fn result(&self, id: Uuid, answer: &[u8], complete: bool) -> Option<Value> {
        if answer.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        if !complete {
            tracing::warn!(job_type = self.name(), job_id = %id, "function answer is over 64 KiB; the job succeeds without a result");
            return None;
        }
        match serde_json::from_slice(answer) {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::warn!(job_type = self.name(), job_id = %id, %error, "function answer is not JSON; the job succeeds without a result");
                None
            }
        }
    }
}

pub(crate) fn rate_limiter(jobs_per_sec: f64) -> Option<DefaultDirectRateLimiter> {
    let period = Duration::from_secs_f64(1.0 / jobs_per_sec);
    let quota = Quota::with_period(period)?.allow_burst(NonZeroU32::MIN);
    Some(RateLimiter::direct(quota))
}

/// Reads at most `limit` bytes of the answer; `false` when there was more.
async fn read_limited(response: &mut reqwest::Response, limit: usize) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    body.extend_from_slice(&chunk[..limit - body.len()]);
                    return (body, false);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return (body, true),
            // The status is what counts; a body cut short is reported as incomplete.
            Err(_) => return (body, false),
        }
    }
}

#[async_trait]
impl Worker<Value> for FunctionWorker {
    const OUTSIDE_EFFECTS: bool = true;

    #[tracing::instrument(name = "function_invoke", skip_all, fields(job_type = self.name(), job_id = %job.id))]
    async fn work(&self, job: &JobCtx<'_, Value>, _tx: &mut JobTx) -> Result<Done, JobError> {
        let remembered = self.answered().get(&job.id).cloned();
        if let Some(result) = remembered {
            return Ok(done(result));
        }
        if job.attempt > 1 {
            if let Some(result) = self.recorded(job.id).await? {
                tracing::info!("function already answered this job; not invoking it again");
                return Ok(done(result));
            }
        }
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        let result = self.invoke(job).await?;
        self.answered().insert(job.id, result.clone());
        Ok(done(result))
    }

    /// Recorded: the answer need not be remembered any longer.
    fn committed(&self, job: &JobCtx<'_, Value>) {
        self.answered().remove(&job.id);
    }
}

fn done(result: Option<Value>) -> Done {
    result.map_or_else(Done::new, Done::with_result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_use_the_function_secret_and_both_keys_during_a_rotation() {
        let keys = SigningKeys {
            current: "current-master-key".into(),
            previous: Some("previous-master-key".into()),
        };
        let signature = keys.signature("images.resize", "id", 1_700_000_000, b"{}");
        let parts: Vec<&str> = signature.split(' ').collect();
        assert_eq!(parts.len(), 2);
        let expected = TenantSecret::for_function(b"current-master-key", "images.resize").sign(
            "id",
            1_700_000_000,
            b"{}",
        );
        assert_eq!(parts[0], expected);
        assert_ne!(
            keys.signature("images.crop", "id", 1_700_000_000, b"{}"),
            signature,
            "each function has its own secret"
        );
    }

    #[test]
    fn rates_below_one_per_second_still_limit() {
        let limiter = rate_limiter(0.5).expect("a limiter");
        assert!(limiter.check().is_ok());
        assert!(limiter.check().is_err());
    }
}
