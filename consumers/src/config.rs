use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use codigo_common::config::{at_least, millis, secs, ServiceArgs, SettingsError, SigningKeys};
use codigo_schemas::registry;
use secrecy::ExposeSecret as _;

const MILLISECOND: Duration = Duration::from_millis(1);

/// The CODIGO_JOB_TYPES entry that stands for every declared HTTP function.
pub const FUNCTIONS: &str = "functions";

/// Codigo workers: pull jobs from JetStream, run their handlers, record outcomes in Postgres.
#[derive(Debug, Clone, Parser)]
#[command(name = "codigo-consumer", version, args_override_self = true)]
pub struct Config {
    /// HTTP listen address (health, readiness, metrics).
    #[arg(long, env = "CODIGO_HTTP_ADDR", default_value = "0.0.0.0:9464")]
    pub http_addr: SocketAddr,
    /// Job types this replica serves, comma separated; empty serves every built-in type.
    /// `functions` serves every declared HTTP function (`codigo-ctl types apply`), alone or
    /// beside built-in types.
    #[arg(long, env = "CODIGO_JOB_TYPES", value_delimiter = ',')]
    pub job_types: Vec<String>,
    /// Jobs in flight at once, per job type, handled in groups of up to 128: deep enough that
    /// the pulls, transactions and acks of several groups overlap (make bench: 64 → 512 took
    /// batch ingest from 42 % to 65 % of the bare pipeline).
    #[arg(long, env = "CODIGO_CONCURRENCY", default_value_t = 512, value_parser = at_least(1usize))]
    pub concurrency: usize,
    #[command(flatten)]
    pub signing: SigningKeys,
    /// Allow webhooks to private, loopback and link-local addresses (local use and tests).
    #[arg(long, env = "CODIGO_WEBHOOK_ALLOW_PRIVATE", default_value_t = false)]
    pub webhook_allow_private: bool,
    /// How long a webhook target gets to answer (a number is seconds).
    #[arg(long = "webhook-timeout-secs", env = "CODIGO_WEBHOOK_TIMEOUT_SECS", default_value = "10s",
          value_parser = secs().at_least(MILLISECOND))]
    pub webhook_timeout: Duration,
    /// Most webhook requests in flight to one target host, per consumer: a slow or
    /// black-holed host ties up this many connections, not all of them.
    #[arg(long, env = "CODIGO_WEBHOOK_MAX_PER_HOST", default_value_t = 16,
          value_parser = at_least(1usize))]
    pub webhook_max_per_host: usize,
    /// First retry delay (a number is milliseconds); doubles per attempt, with jitter.
    #[arg(long = "retry-base-ms", env = "CODIGO_RETRY_BASE_MS", default_value = "1s",
          value_parser = millis().at_least(MILLISECOND))]
    pub retry_base: Duration,
    /// Longest retry delay (a number is seconds).
    #[arg(long = "retry-max-secs", env = "CODIGO_RETRY_MAX_SECS", default_value = "5m",
          value_parser = secs().at_least(MILLISECOND))]
    pub retry_max: Duration,
    /// How long in-flight jobs get to finish after SIGTERM before they are handed back (a
    /// number is seconds). The whole shutdown takes at most fetch expiry + this + 7 s (see
    /// `Config::shutdown_budget`).
    #[arg(long = "shutdown-timeout-secs", env = "CODIGO_SHUTDOWN_TIMEOUT_SECS",
          default_value = "25s", value_parser = secs())]
    pub shutdown_timeout: Duration,
    /// How often each replica looks for messages that ran out of deliveries but are still in
    /// the work stream, their max-deliveries advisory lost, and dead-letters them (a number is
    /// seconds). Such a message is dead-lettered within two intervals.
    #[arg(long = "orphan-sweep-secs", env = "CODIGO_ORPHAN_SWEEP_SECS", default_value = "30s",
          value_parser = secs().at_least(Duration::from_millis(100)))]
    pub orphan_sweep: Duration,
    /// Fault injection for the chaos suite (see `faults`); never set in production.
    #[arg(long, env = "CODIGO_FAULTS", default_value = "", hide = true)]
    pub faults: String,
    /// How long one pull request waits for jobs (a number is milliseconds).
    #[arg(long = "fetch-expires-ms", env = "CODIGO_FETCH_EXPIRES_MS", default_value = "5s",
          value_parser = millis().at_least(Duration::from_millis(500)), hide = true)]
    pub fetch_expires: Duration,
    /// Pull requests in flight per job type, each feeding the same slots. More than one split
    /// the free slots into smaller pulls and groups: on a single server (make bench, 200,000
    /// jobs, interleaved) 2 loops drained 63-78 % of the bare pipeline's rate, 1 loop 84-101 %.
    #[arg(long, env = "CODIGO_PULL_LOOPS", default_value_t = 1,
          value_parser = at_least(1usize), hide = true)]
    pub pull_loops: usize,
    #[command(flatten)]
    pub service: ServiceArgs,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<SettingsError> for ConfigError {
    fn from(error: SettingsError) -> Self {
        Self(error.to_string())
    }
}

impl Config {
    /// Whether CODIGO_JOB_TYPES asks for the declared HTTP functions.
    pub fn serves_functions(&self) -> bool {
        self.job_types.iter().any(|t| t.trim() == FUNCTIONS)
    }

    /// The built-in job types to serve, checked against the registry.
    pub fn served_job_types(&self) -> Result<Vec<&'static str>, ConfigError> {
        let wanted: Vec<&str> = self
            .job_types
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty() && *t != FUNCTIONS)
            .collect();
        if wanted.is_empty() && !self.serves_functions() {
            return Ok(registry().names().collect());
        }
        wanted
            .into_iter()
            .map(|name| {
                registry().job_type(name).map(|t| t.name).map_err(|_| {
                    ConfigError(format!(
                        "CODIGO_JOB_TYPES names {name:?}, which is not built in; known: {} \
                         (and `functions` for the declared ones)",
                        registry().names().collect::<Vec<_>>().join(", ")
                    ))
                })
            })
            .collect()
    }

    pub fn validate(&self) -> Result<Vec<&'static str>, ConfigError> {
        self.service.jetstream.validate()?;
        crate::faults::Faults::parse(&self.faults).map_err(ConfigError)?;
        let served = self.served_job_types()?;
        let signs = served.contains(&codigo_schemas::WEBHOOK_DELIVER) || self.serves_functions();
        if signs
            && self
                .signing
                .webhook_signing_key
                .as_ref()
                .map_or(0, |key| key.expose_secret().len())
                < 16
        {
            return Err(ConfigError(
                "serving webhook.deliver or functions needs CODIGO_WEBHOOK_SIGNING_KEY (at least 16 \
                 characters; functions' secrets derive from it too), or leave them out of \
                 CODIGO_JOB_TYPES"
                    .into(),
            ));
        }
        if self
            .signing
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

    /// Longest time from SIGTERM to exit: the pull under way ends (fetch expiry), in-flight
    /// jobs finish or are handed back (CODIGO_SHUTDOWN_TIMEOUT_SECS, then
    /// [`HAND_BACK_SECS`]), and acks and naks are flushed ([`FLUSH_SECS`]). The chart's
    /// terminationGracePeriodSeconds must be at least this (helm/codigo, check_deploy.py).
    pub fn shutdown_budget(&self) -> Duration {
        self.fetch_expires
            + self.shutdown_timeout
            + Duration::from_secs(HAND_BACK_SECS + FLUSH_SECS)
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

    #[test]
    fn durations_take_units_and_bounds_name_the_setting() {
        let config = Config::try_parse_from([
            "codigo-consumer",
            "--retry-base-ms=250",
            "--retry-max-secs=2m",
            "--webhook-timeout-secs=1500ms",
        ])
        .expect("parses");
        assert_eq!(config.retry_base, Duration::from_millis(250));
        assert_eq!(config.retry_max, Duration::from_secs(120));
        assert_eq!(config.webhook_timeout, Duration::from_millis(1500));
        for (args, expected) in [
            (
                ["--concurrency", "0"],
                "CODIGO_CONCURRENCY (--concurrency): must be a whole number, at least 1",
            ),
            (
                ["--fetch-expires-ms", "100"],
                "CODIGO_FETCH_EXPIRES_MS (--fetch-expires-ms): must be at least 500ms",
            ),
            (
                ["--max-deliver", "0"],
                "CODIGO_MAX_DELIVER (--max-deliver): must be a whole number, at least 1",
            ),
        ] {
            let error = Config::try_parse_from(["codigo-consumer", args[0], args[1]])
                .expect_err(args[0])
                .to_string();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn more_backoff_steps_than_deliveries_are_refused() {
        let config = Config::try_parse_from([
            "codigo-consumer",
            "--max-deliver",
            "2",
            "--backoff-secs",
            "1,2,3",
            "--job-types",
            "ledger.post",
        ])
        .expect("parses");
        let error = config
            .validate()
            .expect_err("3 steps, 2 deliveries")
            .to_string();
        assert!(
            error.contains("CODIGO_BACKOFF_SECS has 3 entries"),
            "{error}"
        );
    }
}
