//! Settings shared by several binaries, flattened into each binary's own clap config.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use secrecy::SecretString;

use crate::redact::redact_url;

mod values;

pub use values::{at_least, days, millis, secs, Bounded, DurationValue};

/// clap value parser for settings that hold a secret.
pub fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

#[derive(Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Path of a NATS credentials (.creds) file.
    #[arg(long, env = "NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// NATS user name (with NATS_PASSWORD).
    #[arg(long, env = "NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password (with NATS_USER).
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true, value_parser = secret)]
    pub nats_password: Option<SecretString>,
    /// Path of a file holding an NKey seed.
    #[arg(long, env = "NATS_NKEY_SEED_FILE")]
    pub nats_nkey_seed_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify the NATS servers; turns TLS on.
    #[arg(long, env = "NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with NATS_TLS_KEY).
    #[arg(long, env = "NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS (with NATS_TLS_CERT).
    #[arg(long, env = "NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
    /// Prefix of every NATS name (streams, subjects, consumers).
    #[arg(long, env = "CODIGO_NAMESPACE", default_value = "codigo")]
    pub namespace: String,
}

impl std::fmt::Debug for NatsArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsArgs")
            .field(
                "nats_url",
                &self
                    .nats_url
                    .split(',')
                    .map(redact_url)
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .field("nats_creds", &self.nats_creds)
            .field("nats_user", &self.nats_user)
            .field("nats_password", &self.nats_password)
            .field("nats_nkey_seed_file", &self.nats_nkey_seed_file)
            .field("nats_tls_ca", &self.nats_tls_ca)
            .field("nats_tls_cert", &self.nats_tls_cert)
            .field("nats_tls_key", &self.nats_tls_key)
            .field("namespace", &self.namespace)
            .finish()
    }
}

#[derive(Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL; TLS through `sslmode=` in the URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/codigo",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Largest number of Postgres connections this process opens.
    #[arg(long, env = "CODIGO_DB_MAX_CONNECTIONS", default_value_t = 16,
          value_parser = at_least(1u32).at_most(10_000))]
    pub db_max_connections: u32,
}

impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field("database_url", &redact_url(&self.database_url))
            .field("db_max_connections", &self.db_max_connections)
            .finish()
    }
}

/// Shape of the work stream, the dead-letter stream and the per-type consumers.
#[derive(Debug, Clone, Args)]
pub struct JetStreamArgs {
    /// JetStream de-duplication window on Nats-Msg-Id (a number is seconds).
    #[arg(long = "duplicate-window-secs", env = "CODIGO_DUPLICATE_WINDOW_SECS", default_value = "2m",
          value_parser = secs().at_least(Duration::from_secs(1)))]
    pub duplicate_window: Duration,
    /// Most messages the work stream holds before it refuses new ones (discard new); -1 for
    /// no limit.
    #[arg(long, env = "CODIGO_STREAM_MAX_MESSAGES", default_value_t = 10_000_000,
          value_parser = at_least(-1i64), allow_negative_numbers = true)]
    pub stream_max_messages: i64,
    /// Most bytes the work stream holds before it refuses new ones (discard new). JetStream
    /// reserves this much file storage up front, so size it to the NATS volume; -1 for no limit.
    #[arg(long, env = "CODIGO_STREAM_MAX_BYTES", default_value_t = 1024 * 1024 * 1024,
          value_parser = at_least(-1i64), allow_negative_numbers = true)]
    pub stream_max_bytes: i64,
    /// Replicas of each stream (3 in production clusters; JetStream allows at most 5).
    #[arg(long, env = "CODIGO_STREAM_REPLICAS", default_value_t = 1,
          value_parser = at_least(1usize).at_most(5))]
    pub stream_replicas: usize,
    /// Most bytes the dead-letter stream holds. When full it refuses new dead letters
    /// (discard new): the worker keeps the job and retries, nothing is dropped; the
    /// CodigoStreamNearlyFull alert fires at 80 %.
    #[arg(long, env = "CODIGO_DLQ_MAX_BYTES", default_value_t = 1024 * 1024 * 1024,
          value_parser = at_least(1i64))]
    pub dlq_max_bytes: i64,
    /// Most messages the dead-letter stream holds (discard new, as for its bytes).
    #[arg(long, env = "CODIGO_DLQ_MAX_MESSAGES", default_value_t = 1_000_000,
          value_parser = at_least(1i64))]
    pub dlq_max_messages: i64,
    /// Most bytes the max-deliveries advisory stream holds (discard new).
    #[arg(long, env = "CODIGO_ADVISORIES_MAX_BYTES", default_value_t = 64 * 1024 * 1024,
          value_parser = at_least(1i64))]
    pub advisories_max_bytes: i64,
    /// Most messages the max-deliveries advisory stream holds (discard new).
    #[arg(long, env = "CODIGO_ADVISORIES_MAX_MESSAGES", default_value_t = 100_000,
          value_parser = at_least(1i64))]
    pub advisories_max_messages: i64,
    /// How long dead letters (and pending max-deliveries advisories) are kept (a number is days).
    #[arg(long = "dlq-max-age-days", env = "CODIGO_DLQ_MAX_AGE_DAYS", default_value = "14d",
          value_parser = days().at_least(Duration::from_secs(60)))]
    pub dlq_max_age: Duration,
    /// Deliveries of one job before it is dead-lettered.
    #[arg(long, env = "CODIGO_MAX_DELIVER", default_value_t = 5, value_parser = at_least(1i64))]
    pub max_deliver: i64,
    /// How long a delivered job may go without ack or progress before it is redelivered (a
    /// number is seconds).
    #[arg(long = "ack-wait-secs", env = "CODIGO_ACK_WAIT_SECS", default_value = "30s",
          value_parser = secs().at_least(Duration::from_secs(1)))]
    pub ack_wait: Duration,
    /// Redelivery delays after an ack timeout (a crashed worker), comma separated (a number is
    /// seconds), used by JetStream instead of the ack wait.
    #[arg(long = "backoff-secs", env = "CODIGO_BACKOFF_SECS", value_delimiter = ',',
          default_value = "30s,1m,2m,5m", value_parser = secs().at_least(Duration::from_secs(1)))]
    pub backoff: Vec<Duration>,
    /// Create or update streams at start-up. Turn off where `codigo-ctl setup` owns them and
    /// the service's NATS user may only use them (least privilege).
    #[arg(long, env = "CODIGO_ENSURE_TOPOLOGY", default_value_t = true, action = clap::ArgAction::Set)]
    pub ensure_topology: bool,
    /// Most delivered-but-unacknowledged jobs per consumer.
    #[arg(long, env = "CODIGO_MAX_ACK_PENDING", default_value_t = 20_000,
          value_parser = at_least(1i64))]
    pub max_ack_pending: i64,
}

/// Settings that are valid one by one but not together.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "CODIGO_BACKOFF_SECS has {steps} entries but CODIGO_MAX_DELIVER is {max_deliver}; \
         JetStream needs no more back-off steps than deliveries: drop steps or raise CODIGO_MAX_DELIVER"
    )]
    BackoffLongerThanDeliveries { steps: usize, max_deliver: i64 },
}

impl JetStreamArgs {
    /// How long a delivery really has before JetStream redelivers it: with a BackOff list
    /// the first step replaces the ack wait.
    pub fn effective_ack_wait(&self) -> Duration {
        self.backoff
            .first()
            .map_or(self.ack_wait, |first| (*first).min(self.ack_wait))
    }

    /// Checks across settings that the value parsers, one setting each, cannot make.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let steps = self.backoff.len();
        if i64::try_from(steps).unwrap_or(i64::MAX) > self.max_deliver {
            return Err(SettingsError::BackoffLongerThanDeliveries {
                steps,
                max_deliver: self.max_deliver,
            });
        }
        Ok(())
    }
}

/// Settings every Codigo binary takes: where NATS and Postgres are, the shape of the JetStream
/// topology, and telemetry.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub jetstream: JetStreamArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log format; defaults to text on a terminal and JSON elsewhere.
    #[arg(long, env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// OTLP/HTTP endpoint for traces (e.g. http://otel-collector:4318); unset exports nothing.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_endpoint: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Settings {
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        database: DatabaseArgs,
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let settings = Settings::parse_from([
            "test",
            "--nats-url",
            "nats://n1:4222,nats://alice:nats-url-secret@n2:4222",
            "--nats-user",
            "bob",
            "--nats-password",
            "nats-password-secret",
            "--database-url",
            "postgres://app:db-url-secret@db/codigo",
        ]);
        let debug = format!("{settings:?}");
        for secret in ["nats-url-secret", "nats-password-secret", "db-url-secret"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(
            debug.contains("bob") && debug.contains("db/codigo"),
            "{debug}"
        );
    }
}

/// The master keys that tenants' webhook secrets and functions' secrets derive from (Standard
/// Webhooks; `codigo-ctl webhooks secret`, `codigo-ctl types secret`): read by the consumers,
/// which sign with them, and by `codigo-ctl`, which prints the derived secrets.
#[derive(Debug, Clone, Default, Args)]
pub struct SigningKeys {
    /// The consumers' master key; required where webhook.deliver or functions are served.
    #[arg(long, env = "CODIGO_WEBHOOK_SIGNING_KEY", hide_env_values = true,
          value_parser = secret)]
    pub webhook_signing_key: Option<SecretString>,
    /// The master key before a rotation: while set, deliveries carry a signature from each
    /// key, so receivers still on the old secret keep verifying.
    #[arg(long, env = "CODIGO_WEBHOOK_PREVIOUS_SIGNING_KEY", hide_env_values = true,
          value_parser = secret)]
    pub webhook_previous_signing_key: Option<SecretString>,
}
