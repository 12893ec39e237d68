//! `webhook.deliver`: POST a JSON body to an http(s) URL, signed per the Standard Webhooks
//! specification with the tenant's own secret (see [`codigo_common::webhook_secret`]).
//!
//! 2xx succeeds and is never sent again for that job id: a recorded 2xx is looked for before
//! each POST, and a 2xx that cannot be recorded yet is remembered while the write is retried.
//! Timeouts, connection failures, 408, 429 and 5xx are retried with back-off;
//! any other status fails permanently. Targets on private, loopback or link-local addresses
//! are refused (checked on every resolved address, so DNS cannot smuggle them in) unless
//! explicitly allowed.
mod address;
mod hosts;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use codigo_common::webhook_secret::{TenantSecret, NO_TENANT};
use codigo_schemas::WebhookDeliver;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use sqlx::PgPool;
use uuid::Uuid;

pub use address::is_public;
use address::{blocked, GuardedResolver};
use hosts::HostSlots;

use crate::runtime::{Done, JobCtx, JobError, JobTx, Worker};

#[derive(Clone)]
pub struct WebhookSettings {
    /// Master key of the tenants' secrets.
    pub signing_key: String,
    /// The master key before a rotation: deliveries are signed with both while it is set.
    pub previous_signing_key: Option<String>,
    pub allow_private: bool,
    pub timeout: Duration,
    /// Most requests in flight to one host.
    pub max_per_host: usize,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("allow_private", &self.allow_private)
            .field("timeout", &self.timeout)
            .field("max_per_host", &self.max_per_host)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookSetupError {
    #[error("webhook.deliver needs CODIGO_WEBHOOK_SIGNING_KEY")]
    NoKey,
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Longest Retry-After from a target we honour; beyond it the retry policy decides.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Headers a job may not set: they belong to the transport or to our signature (the last two
/// were our signature before Standard Webhooks; a receiver still reading them must not be
/// handed one a job chose).
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-codigo-job-id",
    "x-codigo-signature",
];

/// A webhook URL for messages: scheme, host and port only. Its user info, path and query often
/// hold the receiver's secret, and these messages reach logs, dead-letter headers and the
/// jobs table.
fn target_of(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

pub struct WebhookWorker {
    pool: PgPool,
    client: reqwest::Client,
    settings: WebhookSettings,
    /// Jobs whose target answered 2xx while the record of it could not be written yet: the
    /// runtime holds such a job and calls again, and then only the write is retried.
    delivered: Mutex<HashMap<Uuid, u16>>,
    hosts: HostSlots,
}

impl WebhookWorker {
    pub fn new(pool: PgPool, settings: WebhookSettings) -> Result<Self, WebhookSetupError> {
        let mut builder = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("codigo-webhook/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(settings.max_per_host)
            // A proxy from HTTP(S)_PROXY would make the connection, past the address checks.
            .no_proxy();
        if !settings.allow_private {
            builder = builder.dns_resolver(Arc::new(GuardedResolver));
        }
        let hosts = HostSlots::new(settings.max_per_host);
        Ok(Self {
            pool,
            client: builder.build()?,
            settings,
            delivered: Mutex::new(HashMap::new()),
            hosts,
        })
    }

    fn delivered_in_memory(&self, id: Uuid) -> Option<u16> {
        self.delivered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .copied()
    }

    fn remember_delivered(&self, id: Uuid, status: Option<u16>) {
        let mut delivered = self
            .delivered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match status {
            Some(status) => delivered.insert(id, status),
            None => delivered.remove(&id),
        };
    }

    /// Whether the job's webhook was already answered 2xx (recorded by an earlier delivery of
    /// the same job id: a redelivery after a lost ack, a dead letter replayed, a resubmission
    /// after the duplicate window).
    async fn recorded_delivery(&self, id: Uuid) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM webhook_deliveries
                             WHERE job_id = $1 AND status_code BETWEEN 200 AND 299)
                 OR EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND status = 'succeeded')",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
    }

    /// Records a 2xx. The POST happened: whatever the database answers, the job is held and
    /// the write retried, never dead-lettered (a replay would send it again) nor re-sent.
    async fn finish(
        &self,
        job: &JobCtx<'_, WebhookDeliver>,
        tx: &mut JobTx,
        target: &str,
        status: u16,
    ) -> Result<Done, JobError> {
        match record(job, tx, status).await {
            Ok(()) => Ok(Done::with_result(
                serde_json::json!({"status_code": status}),
            )),
            Err(error) => Err(JobError::unavailable(format!(
                "{target} answered {status}, but the delivery cannot be recorded: {error}; \
                 the write is retried and the webhook is not sent again (check Postgres and \
                 the consumer role's grants on webhook_deliveries and jobs)"
            ))),
        }
    }

    /// The `webhook-signature` value: one `v1,<base64>` per valid master key, current first.
    pub fn signature(&self, tenant: Option<&str>, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tenant = tenant.unwrap_or(NO_TENANT);
        std::iter::once(&self.settings.signing_key)
            .chain(self.settings.previous_signing_key.as_ref())
            .map(|key| TenantSecret::derive(key.as_bytes(), tenant).sign(id, timestamp, body))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn check_target(&self, url: &reqwest::Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("scheme {} is not http or https", url.scheme()));
        }
        if self.settings.allow_private {
            return Ok(());
        }
        // Literal addresses never reach the resolver, so they are checked here.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(domain)) if domain.eq_ignore_ascii_case("localhost") => {
                return Err("localhost is not a reachable webhook target".into())
            }
            _ => None,
        };
        match literal {
            Some(ip) if !is_public(ip) => Err(format!(
                "{ip} is a private, loopback or link-local address, which webhooks may not reach"
            )),
            _ => Ok(()),
        }
    }

    /// POSTs the signed body: the target's status and Retry-After, or the outcome of a
    /// request that got no answer.
    async fn post(
        &self,
        job: &JobCtx<'_, WebhookDeliver>,
        url: reqwest::Url,
        target: &str,
    ) -> Result<(reqwest::StatusCode, Option<Duration>), JobError> {
        let request = &job.payload;
        let body = serde_json::to_vec(&request.body).unwrap_or_default();
        let mut headers = HeaderMap::new();
        for (name, value) in request.headers.iter().flatten() {
            if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                continue;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // The job id is the message id: receivers de-duplicate on it.
        let id = job.id.to_string();
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = self.signature(job.tenant, &id, timestamp, &body);
        for (name, value) in [
            ("webhook-id", id),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ] {
            // Uuids, digits and base64: always valid header values.
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        }

        // A job over its host's cap waits for a slot of that host only; as long as a request
        // may take, after which it is retried like a timeout.
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let Some(_slot) = self.hosts.acquire(&host, self.settings.timeout).await else {
            return Err(JobError::retry(format!(
                "{target} already has {} requests in flight (CODIGO_WEBHOOK_MAX_PER_HOST), \
                 none of which finished within {:?}",
                self.hosts.per_host, self.settings.timeout
            )));
        };
        let response = match self
            .client
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(error) if blocked(&error) => {
                return Err(JobError::permanent(format!(
                    "refused target {target}: {}",
                    error.without_url()
                )))
            }
            Err(error) => {
                return Err(JobError::retry(format!(
                    "delivery to {target} failed: {}",
                    error.without_url()
                )))
            }
        };
        Ok((response.status(), retry_after(response.headers())))
    }
}

/// The 2xx of a job's webhook, in the job's transaction.
async fn record(
    job: &JobCtx<'_, WebhookDeliver>,
    tx: &mut JobTx,
    status: u16,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (job_id, url, status_code, attempts)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (job_id) DO UPDATE
           SET status_code = EXCLUDED.status_code, attempts = EXCLUDED.attempts,
               delivered_at = now()",
    )
    .bind(job.id)
    .bind(&job.payload.url)
    .bind(i32::from(status))
    .bind(i32::try_from(job.attempt).unwrap_or(i32::MAX))
    .execute(tx.conn().await?)
    .await
    .map(drop)
}

/// The delay a `Retry-After` of whole seconds asks for, capped.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

#[async_trait]
impl Worker<WebhookDeliver> for WebhookWorker {
    const OUTSIDE_EFFECTS: bool = true;

    #[tracing::instrument(name = "webhook_deliver", skip_all, fields(job_id = %job.id))]
    async fn work(
        &self,
        job: &JobCtx<'_, WebhookDeliver>,
        tx: &mut JobTx,
    ) -> Result<Done, JobError> {
        let url = reqwest::Url::parse(&job.payload.url)
            .map_err(|e| JobError::permanent(format!("url does not parse: {e}")))?;
        self.check_target(&url).map_err(JobError::permanent)?;
        let target = target_of(&url);
        if let Some(status) = self.delivered_in_memory(job.id) {
            return self.finish(job, tx, &target, status).await;
        }
        if self.recorded_delivery(job.id).await? {
            tracing::info!("webhook already delivered; not sending it again");
            return Ok(Done::new());
        }
        let (status, after) = self.post(job, url, &target).await?;
        if status.is_success() {
            self.remember_delivered(job.id, Some(status.as_u16()));
            return self.finish(job, tx, &target, status.as_u16()).await;
        }
        let code = status.as_u16();
        if code == 408 || code == 429 || status.is_server_error() {
            Err(JobError::retry_after(
                after,
                format!("target answered {status}"),
            ))
        } else {
            Err(JobError::permanent(format!(
                "target answered {status}, which retrying will not change"
            )))
        }
    }

    /// Recorded: the 2xx need not be remembered any longer.
    fn committed(&self, job: &JobCtx<'_, WebhookDeliver>) {
        self.remember_delivered(job.id, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_target_without_its_secrets() {
        let url =
            reqwest::Url::parse("https://hook:s3cret@hooks.example.com:8443/T0/B1/XyZ?token=abc")
                .expect("url");
        assert_eq!(target_of(&url), "https://hooks.example.com:8443");
    }

    /// A failed delivery's error (logged, dead-lettered, stored) carries no part of the URL
    /// that may be secret.
    #[tokio::test]
    async fn delivery_errors_do_not_repeat_the_url() {
        // Nothing listens on port 9 of the loopback address: the connection is refused.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("lazy pool");
        let handler = WebhookWorker::new(
            pool,
            WebhookSettings {
                signing_key: "key".into(),
                previous_signing_key: None,
                max_per_host: 16,
                allow_private: true,
                timeout: Duration::from_secs(2),
            },
        )
        .expect("handler");
        let job = JobCtx {
            id: uuid::Uuid::nil(),
            payload: WebhookDeliver {
                url: "http://hook:s3cret@127.0.0.1:9/T0/B1/XyZ?token=abc".into(),
                body: serde_json::json!({}),
                headers: None,
            },
            attempt: 1,
            tenant: None,
            idempotency_key: None,
            created_at: time::OffsetDateTime::now_utc(),
        };
        let url = reqwest::Url::parse(&job.payload.url).expect("url");
        let target = target_of(&url);
        match handler.post(&job, url, &target).await {
            Err(error) if matches!(error.kind(), crate::runtime::ErrorKind::Retry { .. }) => {
                let error = error.message();
                assert!(error.contains("http://127.0.0.1:9"), "{error}");
                for secret in ["s3cret", "hook:", "XyZ", "token"] {
                    assert!(!error.contains(secret), "{secret} in {error}");
                }
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }
}
