//! `webhook.deliver`: POST a JSON body to an http(s) URL, signed per the Standard Webhooks
//! specification with the tenant's own secret (see [`codigo_common::webhook_secret`]).
//!
//! 2xx succeeds and is never sent again for that job id: a recorded 2xx is looked for before
//! each POST, and a 2xx that cannot be recorded yet is remembered while the write is retried.
//! Timeouts, connection failures, 408, 429 and 5xx are retried with back-off;
//! any other status fails permanently. Targets on private, loopback or link-local addresses
//! are refused (checked on every resolved address, so DNS cannot smuggle them in) unless
//! explicitly allowed.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use codigo_common::webhook_secret::{TenantSecret, NO_TENANT};
use codigo_schemas::WebhookDeliver;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::{db_failure, typed, Handler, Job, Outcome, Unavailable};
use crate::store;

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
    #[error("no handler is registered for job type {0:?}")]
    NoHandler(String),
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

/// Whether webhooks may reach `ip`: not private, loopback, link-local, shared (CGNAT),
/// benchmarking, reserved, multicast or documentation space, nor an IPv6 form that embeds
/// such an IPv4 address (mapped, compatible, NAT64, 6to4), through which that address could
/// be reached all the same.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && c == 0)
                // 198.18.0.0/15: benchmarking, often routed to lab networks.
                || (a == 198 && (b & 0xfe) == 18)
                // 240.0.0.0/4: reserved; some stacks route it internally.
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            let [first, second, ..] = segments;
            let [.., a, b, c, d] = v6.octets();
            // ::a.b.c.d, IPv4-compatible: deprecated, no public use, still routed by some
            // stacks to the embedded (often private) address.
            if segments[..6].iter().all(|s| *s == 0) {
                return false;
            }
            // 64:ff9b::/96, NAT64: a gateway forwards it to the embedded IPv4 address.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            // 64:ff9b:1::/48, local-use NAT64 (RFC 8215): the operator's own translators.
            if first == 0x64 && second == 0xff9b && segments[2] == 1 {
                return false;
            }
            // 2002::/16, 6to4: the relay forwards it to the IPv4 address in bits 16..48.
            if first == 0x2002 {
                let [_, _, a, b, c, d, ..] = v6.octets();
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to private, loopback or link-local addresses, which webhooks may not reach (CODIGO_WEBHOOK_ALLOW_PRIVATE)")]
struct BlockedAddress {
    host: String,
}

/// Resolves names and drops every address webhooks may not reach.
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|addr| is_public(addr.ip()))
                .collect();
            if resolved.is_empty() {
                return Err(Box::new(BlockedAddress { host }) as Box<_>);
            }
            Ok(Box::new(resolved.into_iter()) as Addrs)
        })
    }
}

/// A webhook URL for messages: scheme, host and port only. Its user info, path and query often
/// hold the receiver's secret, and these messages reach logs, dead-letter headers and the
/// jobs table.
fn target_of(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

fn blocked(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<BlockedAddress>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// Caps the requests in flight per target host, so that a slow or black-holed host holds a
/// few connections and the deliveries to every other host go on.
struct HostSlots {
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HostSlots {
    /// Beyond this many hosts, idle ones are forgotten.
    const REMEMBERED: usize = 1024;

    fn new(per_host: usize) -> Self {
        Self {
            per_host: per_host.max(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    fn of(&self, host: &str) -> Arc<Semaphore> {
        let mut hosts = self
            .hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if hosts.len() >= Self::REMEMBERED && !hosts.contains_key(host) {
            let per_host = self.per_host;
            hosts.retain(|_, slots| {
                Arc::strong_count(slots) > 1 || slots.available_permits() < per_host
            });
        }
        hosts
            .entry(host.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone()
    }

    /// Waits up to `patience` for a slot of `host`.
    async fn acquire(&self, host: &str, patience: Duration) -> Option<OwnedSemaphorePermit> {
        let slots = self.of(host);
        tokio::time::timeout(patience, slots.acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

pub struct WebhookHandler {
    pool: PgPool,
    client: reqwest::Client,
    settings: WebhookSettings,
    /// Jobs whose target answered 2xx while the record of it could not be written yet: the
    /// worker holds such a job and calls again, and then only the write is retried.
    delivered: Mutex<HashMap<Uuid, u16>>,
    hosts: HostSlots,
}

impl WebhookHandler {
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
        job: &Job<'_>,
        url: &str,
        target: &str,
        status: u16,
    ) -> Result<Outcome, Unavailable> {
        match self.record(job, url, status).await {
            Ok(()) => {
                self.remember_delivered(job.record.id, None);
                Ok(Outcome::Succeeded)
            }
            Err(error) => Err(Unavailable(format!(
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
        job: &Job<'_>,
        request: &WebhookDeliver,
        url: reqwest::Url,
        target: &str,
    ) -> Result<(reqwest::StatusCode, Option<Duration>), Outcome> {
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
        let id = job.record.id.to_string();
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let signature = self.signature(job.envelope.tenant.as_deref(), &id, timestamp, &body);
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
            return Err(Outcome::Retry {
                after: None,
                error: format!(
                    "{target} already has {} requests in flight (CODIGO_WEBHOOK_MAX_PER_HOST), \
                     none of which finished within {:?}",
                    self.hosts.per_host, self.settings.timeout
                ),
            });
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
                return Err(Outcome::Permanent {
                    error: format!("refused target {target}: {}", error.without_url()),
                })
            }
            Err(error) => {
                return Err(Outcome::Retry {
                    after: None,
                    error: format!("delivery to {target} failed: {}", error.without_url()),
                })
            }
        };
        Ok((response.status(), retry_after(response.headers())))
    }

    #[tracing::instrument(name = "postgres_tx", skip_all)]
    async fn record(&self, job: &Job<'_>, url: &str, status: u16) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_deliveries (job_id, url, status_code, attempts)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (job_id) DO UPDATE
               SET status_code = EXCLUDED.status_code, attempts = EXCLUDED.attempts,
                   delivered_at = now()",
        )
        .bind(job.record.id)
        .bind(url)
        .bind(i32::from(status))
        .bind(job.record.attempts)
        .execute(&mut *tx)
        .await?;
        let result = serde_json::json!({"status_code": status});
        store::record_success(&mut *tx, &job.record, Some(&result)).await?;
        tx.commit().await
    }
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
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
impl Handler for WebhookHandler {
    fn job_type(&self) -> &'static str {
        codigo_schemas::WEBHOOK_DELIVER
    }

    fn has_outside_effects(&self) -> bool {
        true
    }

    #[tracing::instrument(name = "webhook_deliver", skip_all, fields(job_id = %job.record.id))]
    async fn handle(&self, job: &Job<'_>) -> Result<Outcome, Unavailable> {
        let request: WebhookDeliver = match typed(&job.envelope.payload) {
            Ok(r) => r,
            Err(outcome) => return Ok(outcome),
        };
        let url = match reqwest::Url::parse(&request.url) {
            Ok(url) => url,
            Err(e) => {
                return Ok(Outcome::Permanent {
                    error: format!("url does not parse: {e}"),
                })
            }
        };
        if let Err(error) = self.check_target(&url) {
            return Ok(Outcome::Permanent { error });
        }
        let target = target_of(&url);
        if let Some(status) = self.delivered_in_memory(job.record.id) {
            return self.finish(job, &request.url, &target, status).await;
        }
        match self.recorded_delivery(job.record.id).await {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!("webhook already delivered; not sending it again");
                return Ok(Outcome::Succeeded);
            }
            Err(error) => return db_failure(error),
        }
        let (status, after) = match self.post(job, &request, url, &target).await {
            Ok(answer) => answer,
            Err(outcome) => return Ok(outcome),
        };
        if status.is_success() {
            self.remember_delivered(job.record.id, Some(status.as_u16()));
            return self
                .finish(job, &request.url, &target, status.as_u16())
                .await;
        }
        let code = status.as_u16();
        if code == 408 || code == 429 || status.is_server_error() {
            Ok(Outcome::Retry {
                after,
                error: format!("target answered {status}"),
            })
        } else {
            Ok(Outcome::Permanent {
                error: format!("target answered {status}, which retrying will not change"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:10.0.0.1",
            "::",
        ] {
            assert!(!is_public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(ip.parse().expect("ip")), "{ip}");
        }
    }

    fn refused(ip: &str) -> bool {
        !is_public(ip.parse().expect("ip"))
    }

    #[test]
    fn nat64_of_private_ipv4_is_refused() {
        for ip in [
            "64:ff9b::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::192.168.0.1",
            "64:ff9b:1::8.8.8.8",
        ] {
            assert!(refused(ip), "{ip}");
        }
        // NAT64 of a public address is how IPv6-only clusters reach IPv4 receivers.
        assert!(!refused("64:ff9b::8.8.8.8"));
    }

    #[test]
    fn ipv4_compatible_ipv6_is_refused() {
        for ip in [
            "::10.0.0.1",
            "::127.0.0.1",
            "::169.254.169.254",
            "::8.8.8.8",
            "::a00:1",
        ] {
            assert!(refused(ip), "{ip}");
        }
    }

    #[test]
    fn six_to_four_of_private_ipv4_is_refused() {
        assert!(refused("2002:a00:1::1"));
        assert!(refused("2002:7f00:1::"));
        assert!(!refused("2002:808:808::1"));
    }

    #[test]
    fn benchmarking_range_is_refused() {
        for ip in ["198.18.0.0", "198.18.0.1", "198.19.255.255"] {
            assert!(refused(ip), "{ip}");
            assert!(refused(&format!("::ffff:{ip}")), "{ip} mapped");
        }
        for ip in ["198.17.255.255", "198.20.0.0"] {
            assert!(!refused(ip), "{ip}");
        }
    }

    #[test]
    fn reserved_class_e_is_refused() {
        for ip in [
            "240.0.0.1",
            "250.1.2.3",
            "255.255.255.254",
            "255.255.255.255",
        ] {
            assert!(refused(ip), "{ip}");
        }
        assert!(!refused("223.255.255.254"));
    }

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
        let handler = WebhookHandler::new(
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
        let envelope = codigo_schemas::Envelope {
            id: uuid::Uuid::nil(),
            job_type: codigo_schemas::WEBHOOK_DELIVER.into(),
            payload: serde_json::json!({
                "url": "http://hook:s3cret@127.0.0.1:9/T0/B1/XyZ?token=abc",
                "body": {}
            }),
            idempotency_key: None,
            created_at: time::OffsetDateTime::now_utc(),
            tenant: None,
        };
        let job = Job {
            envelope: &envelope,
            record: crate::store::JobRecord {
                id: envelope.id,
                job_type: codigo_schemas::WEBHOOK_DELIVER,
                payload: Some(&envelope.payload),
                idempotency_key: None,
                tenant: None,
                created_at: envelope.created_at,
                started_at: envelope.created_at,
                attempts: 1,
            },
            attempt: 1,
        };
        let request: WebhookDeliver = typed(&envelope.payload).expect("payload");
        let url = reqwest::Url::parse(&request.url).expect("url");
        let target = target_of(&url);
        match handler.post(&job, &request, url, &target).await {
            Err(Outcome::Retry { error, .. }) => {
                assert!(error.contains("http://127.0.0.1:9"), "{error}");
                for secret in ["s3cret", "hook:", "XyZ", "token"] {
                    assert!(!error.contains(secret), "{secret} in {error}");
                }
            }
            other => panic!("expected a retry, got {other:?}"),
        }
    }
}
