use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use codigo_common::config::{DatabaseArgs, JetStreamArgs, NatsArgs, TelemetryArgs};
use secrecy::{ExposeSecret, SecretString};

use crate::auth::{ApiKeys, ParseKeysError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    Required,
    Disabled,
}

/// Codigo ingest gateway: validates jobs and publishes them to JetStream.
#[derive(Debug, Clone, Parser)]
#[command(name = "codigo-producer", version, args_override_self = true)]
pub struct Config {
    /// HTTP listen address (API, health, metrics).
    #[arg(long, env = "CODIGO_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// API keys: `name:token` entries, comma separated; see README for scopes, tenant, rate.
    #[arg(long, env = "CODIGO_API_KEYS", hide_env_values = true,
          value_parser = codigo_common::config::secret)]
    pub api_keys: Option<SecretString>,
    /// `disabled` turns API-key auth off (local use only).
    #[arg(long, env = "CODIGO_AUTH", value_enum, default_value = "required")]
    pub auth: AuthMode,
    /// Jobs accepted per second per API key (burst twice that; a batch costs one per job);
    /// 0 = unlimited.
    #[arg(long, env = "CODIGO_RATE_LIMIT_PER_KEY", default_value_t = 10_000)]
    pub rate_limit_per_key: u32,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "CODIGO_MAX_BODY_BYTES", default_value_t = 1_048_576)]
    pub max_body_bytes: usize,
    /// Most items in one batch request.
    #[arg(long, env = "CODIGO_MAX_BATCH_ITEMS", default_value_t = 1000)]
    pub max_batch_items: usize,
    /// Seconds to wait for JetStream's publish acknowledgement before answering 503.
    #[arg(long, env = "CODIGO_PUBLISH_TIMEOUT_SECS", default_value_t = 5)]
    pub publish_timeout_secs: u64,
    /// Milliseconds one publish attempt waits for its ack before the job is sent again (same
    /// Nats-Msg-Id, so stored at most once), within CODIGO_PUBLISH_TIMEOUT_SECS.
    #[arg(
        long,
        env = "CODIGO_PUBLISH_ATTEMPT_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub publish_attempt_timeout_ms: u64,
    /// Seconds a client has to send a request's headers (else its connection is closed, as
    /// is an idle keep-alive connection) and then as long for its body (else 408).
    #[arg(long, env = "CODIGO_REQUEST_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub request_read_timeout_secs: u64,
    /// Most API requests in progress at once; more are refused with 503 and Retry-After
    /// (health, readiness and metrics are not counted).
    #[arg(long, env = "CODIGO_MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "CODIGO_SHUTDOWN_TIMEOUT_SECS", default_value_t = 25)]
    pub shutdown_timeout_secs: u64,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub jetstream: JetStreamArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Keys(#[from] ParseKeysError),
    #[error("CODIGO_AUTH is required but CODIGO_API_KEYS is empty; set keys (name:token,...) or CODIGO_AUTH=disabled for local use")]
    NoKeys,
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    pub fn publish_timeouts(&self) -> crate::publish::PublishTimeouts {
        let budget = Duration::from_secs(self.publish_timeout_secs);
        crate::publish::PublishTimeouts {
            budget,
            attempt: Duration::from_millis(self.publish_attempt_timeout_ms).min(budget),
        }
    }

    pub fn request_read_timeout(&self) -> Duration {
        Duration::from_secs(self.request_read_timeout_secs)
    }

    /// Validates everything that can be checked before touching the network.
    pub fn api_keys(&self) -> Result<Option<ApiKeys>, ConfigError> {
        self.jetstream.validate().map_err(ConfigError::Invalid)?;
        if self.max_body_bytes == 0 || self.max_batch_items == 0 {
            return Err(ConfigError::Invalid(
                "CODIGO_MAX_BODY_BYTES and CODIGO_MAX_BATCH_ITEMS must be positive".into(),
            ));
        }
        if self.publish_timeout_secs == 0 || self.publish_attempt_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "CODIGO_PUBLISH_TIMEOUT_SECS and CODIGO_PUBLISH_ATTEMPT_TIMEOUT_MS must be positive"
                    .into(),
            ));
        }
        if self.request_read_timeout_secs == 0 || self.max_concurrent_requests == 0 {
            return Err(ConfigError::Invalid(
                "CODIGO_REQUEST_READ_TIMEOUT_SECS and CODIGO_MAX_CONCURRENT_REQUESTS must be \
                 positive"
                    .into(),
            ));
        }
        match self.auth {
            AuthMode::Disabled => Ok(None),
            AuthMode::Required => {
                let raw = self
                    .api_keys
                    .as_ref()
                    .map(ExposeSecret::expose_secret)
                    .unwrap_or_default();
                let keys = ApiKeys::parse(raw, self.rate_limit_per_key)?;
                if keys.is_empty() {
                    return Err(ConfigError::NoKeys);
                }
                Ok(Some(keys))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_are_refused_with_the_setting_named() {
        for (flag, setting) in [
            (
                "--request-read-timeout-secs",
                "CODIGO_REQUEST_READ_TIMEOUT_SECS",
            ),
            (
                "--max-concurrent-requests",
                "CODIGO_MAX_CONCURRENT_REQUESTS",
            ),
            (
                "--publish-attempt-timeout-ms",
                "CODIGO_PUBLISH_ATTEMPT_TIMEOUT_MS",
            ),
        ] {
            let config =
                Config::try_parse_from(["codigo-producer", "--auth", "disabled", flag, "0"])
                    .expect("parses");
            let error = config.api_keys().expect_err(flag).to_string();
            assert!(error.contains(setting), "{error}");
        }
    }

    #[test]
    fn debug_output_holds_no_api_key() {
        let config = Config::try_parse_from([
            "codigo-producer",
            "--api-keys",
            "ops:token-that-must-not-show",
        ])
        .expect("parses");
        assert_eq!(
            config.api_keys().expect("valid keys").map(|k| k.is_empty()),
            Some(false)
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("token-that-must-not-show"), "{debug}");
    }
}
