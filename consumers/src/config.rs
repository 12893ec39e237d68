use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use codigo_common::config::{DatabaseArgs, JetStreamArgs, NatsArgs, TelemetryArgs};
use codigo_schemas::registry;
use secrecy::{ExposeSecret as _, SecretString};

/// Codigo workers: pull jobs from JetStream, run their handlers, record outcomes in Postgres.
#[derive(Debug, Clone, Parser)]
#[command(name = "codigo-consumer", version, args_override_self = true)]
pub struct Config {
    /// HTTP listen address (health, readiness, metrics).
    #[arg(long, env = "CODIGO_HTTP_ADDR", default_value = "0.0.0.0:9464")]
    pub http_addr: SocketAddr,
    /// Job types this replica serves, comma separated; empty serves every registered type.
    #[arg(long, env = "CODIGO_JOB_TYPES", value_delimiter = ',')]
    pub job_types: Vec<String>,
    /// Jobs in flight at once, per job type, handled in groups of up to 128: deep enough that
    /// the pulls, transactions and acks of several groups overlap (make bench: 64 → 512 took
    /// batch ingest from 42 % to 65 % of the bare pipeline).
    #[arg(long, env = "CODIGO_CONCURRENCY", default_value_t = 512)]
    pub concurrency: usize,
    /// Master key each tenant's webhook secret is derived from (Standard Webhooks, see
    /// `codigo-ctl webhooks secret`); required when webhook.deliver is served.
    #[arg(long, env = "CODIGO_WEBHOOK_SIGNING_KEY", hide_env_values = true,
          value_parser = codigo_common::config::secret)]
    pub webhook_signing_key: Option<SecretString>,
    /// The master key before a rotation: while set, deliveries carry a signature from each
    /// key, so receivers still on the old secret keep verifying.
    #[arg(long, env = "CODIGO_WEBHOOK_PREVIOUS_SIGNING_KEY", hide_env_values = true,
          value_parser = codigo_common::config::secret)]
    pub webhook_previous_signing_key: Option<SecretString>,
    /// Allow webhooks to private, loopback and link-local addresses (local use and tests).
    #[arg(long, env = "CODIGO_WEBHOOK_ALLOW_PRIVATE", default_value_t = false)]
    pub webhook_allow_private: bool,
    /// Seconds a webhook target gets to answer.
    #[arg(long, env = "CODIGO_WEBHOOK_TIMEOUT_SECS", default_value_t = 10)]
    pub webhook_timeout_secs: u64,
    /// Most webhook requests in flight to one target host, per consumer: a slow or
    /// black-holed host ties up this many connections, not all of them.
    #[arg(long, env = "CODIGO_WEBHOOK_MAX_PER_HOST", default_value_t = 16)]
    pub webhook_max_per_host: usize,
    /// First retry delay in milliseconds; doubles per attempt, with jitter.
    #[arg(long, env = "CODIGO_RETRY_BASE_MS", default_value_t = 1000)]
    pub retry_base_ms: u64,
    /// Longest retry delay in seconds.
    #[arg(long, env = "CODIGO_RETRY_MAX_SECS", default_value_t = 300)]
    pub retry_max_secs: u64,
    /// Seconds in-flight jobs get to finish after SIGTERM before they are handed back. The whole
    /// shutdown takes at most fetch expiry + this + 7 s (see `Config::shutdown_budget`).
    #[arg(long, env = "CODIGO_SHUTDOWN_TIMEOUT_SECS", default_value_t = 25)]
    pub shutdown_timeout_secs: u64,
    /// Fault injection for the chaos suite (see `faults`); never set in production.
    #[arg(long, env = "CODIGO_FAULTS", default_value = "", hide = true)]
    pub faults: String,
    /// How long one pull request waits for jobs, in milliseconds.
    #[arg(
        long,
        env = "CODIGO_FETCH_EXPIRES_MS",
        default_value_t = 5000,
        hide = true
    )]
    pub fetch_expires_ms: u64,
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
#[error("{0}")]
pub struct ConfigError(pub String);

impl Config {
    /// The job types to serve, checked against the registry.
    pub fn served_job_types(&self) -> Result<Vec<&'static str>, ConfigError> {
        let wanted: Vec<&str> = self
            .job_types
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .collect();
        if wanted.is_empty() {
            return Ok(registry().names().collect());
        }
        wanted
            .into_iter()
            .map(|name| {
                registry().job_type(name).map(|t| t.name).map_err(|_| {
                    ConfigError(format!(
                        "CODIGO_JOB_TYPES names {name:?}, which is not registered; known: {}",
                        registry().names().collect::<Vec<_>>().join(", ")
                    ))
                })
            })
            .collect()
    }

    pub fn validate(&self) -> Result<Vec<&'static str>, ConfigError> {
        self.jetstream.validate().map_err(ConfigError)?;
        if self.concurrency == 0 {
            return Err(ConfigError("CODIGO_CONCURRENCY must be at least 1".into()));
        }
        if self.webhook_max_per_host == 0 {
            return Err(ConfigError(
                "CODIGO_WEBHOOK_MAX_PER_HOST must be at least 1".into(),
            ));
        }
        crate::faults::Faults::parse(&self.faults).map_err(ConfigError)?;
        let served = self.served_job_types()?;
        if served.contains(&codigo_schemas::WEBHOOK_DELIVER)
            && self
                .webhook_signing_key
                .as_ref()
                .map_or(0, |key| key.expose_secret().len())
                < 16
        {
            return Err(ConfigError(
                "serving webhook.deliver needs CODIGO_WEBHOOK_SIGNING_KEY (at least 16 characters), \
                 or leave webhook.deliver out of CODIGO_JOB_TYPES"
                    .into(),
            ));
        }
        if self
            .webhook_previous_signing_key
            .as_ref()
            .is_some_and(|key| key.expose_secret().len() < 16)
        {
            return Err(ConfigError(
                "CODIGO_WEBHOOK_PREVIOUS_SIGNING_KEY is shorter than 16 characters; set it to the \
                 master key used before the rotation, or unset it once receivers have the new secret"
                    .into(),
            ));
        }
        Ok(served)
    }

    pub fn fetch_expires(&self) -> Duration {
        Duration::from_millis(self.fetch_expires_ms.max(500))
    }

    /// Longest time from SIGTERM to exit: the pull under way ends (fetch expiry), in-flight
    /// jobs finish or are handed back (CODIGO_SHUTDOWN_TIMEOUT_SECS, then
    /// [`HAND_BACK_SECS`]), and acks and naks are flushed ([`FLUSH_SECS`]). The chart's
    /// terminationGracePeriodSeconds must be at least this (helm/codigo, check_deploy.py).
    pub fn shutdown_budget(&self) -> Duration {
        self.fetch_expires()
            + Duration::from_secs(self.shutdown_timeout_secs + HAND_BACK_SECS + FLUSH_SECS)
    }
}

/// Seconds jobs get to nak after the drain timeout before the worker tasks are dropped.
pub const HAND_BACK_SECS: u64 = 2;

/// Seconds the last acks and naks get to reach NATS, and the health server and the pool to
/// close, before the process exits.
pub const FLUSH_SECS: u64 = 5;

impl Config {
    /// What is left of the budget once the workers have stopped: flush and close.
    pub fn flush_timeout(&self) -> Duration {
        Duration::from_secs(FLUSH_SECS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_holds_no_signing_key() {
        let config = Config::try_parse_from([
            "codigo-consumer",
            "--webhook-signing-key",
            "signing-key-that-must-not-show",
        ])
        .expect("parses");
        let debug = format!("{config:?}");
        assert!(!debug.contains("signing-key-that-must-not-show"), "{debug}");
        assert!(debug.contains("webhook_signing_key"), "{debug}");
    }

    #[test]
    fn shutdown_budget_adds_fetch_expiry_drain_hand_back_and_flush() {
        let config = Config::try_parse_from([
            "codigo-consumer",
            "--fetch-expires-ms",
            "5000",
            "--shutdown-timeout-secs",
            "18",
        ])
        .expect("parses");
        // The chart's default terminationGracePeriodSeconds (30) is this budget.
        assert_eq!(config.shutdown_budget(), Duration::from_secs(30));
    }
}
