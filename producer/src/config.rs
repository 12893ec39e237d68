use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use codigo_common::config::{at_least, millis, secs, ServiceArgs, SettingsError};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::auth::{ApiKeys, ParseKeysError};

const MILLISECOND: Duration = Duration::from_millis(1);

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
    /// API keys from a JSON file (e.g. a mounted Secret) instead of CODIGO_API_KEYS: a list of
    /// `{"name", "token", "tenant"?, "types"?: [..], "rate"?}`; see README.
    #[arg(long, env = "CODIGO_API_KEYS_FILE", conflicts_with = "api_keys")]
    pub api_keys_file: Option<PathBuf>,
    /// Jobs accepted per second per API key (burst twice that; a batch costs one per job);
    /// 0 = unlimited.
    #[arg(long, env = "CODIGO_RATE_LIMIT_PER_KEY", default_value_t = 10_000)]
    pub rate_limit_per_key: u32,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "CODIGO_MAX_BODY_BYTES", default_value_t = 1_048_576,
          value_parser = at_least(1usize))]
    pub max_body_bytes: usize,
    /// Most items in one batch request.
    #[arg(long, env = "CODIGO_MAX_BATCH_ITEMS", default_value_t = 1000,
          value_parser = at_least(1usize))]
    pub max_batch_items: usize,
    /// How far ahead a job may be delayed with `run_at` or `delay` (a number is seconds).
    #[arg(long = "max-delay", env = "CODIGO_MAX_DELAY", default_value = "30d",
          value_parser = secs().at_least(Duration::from_secs(1)))]
    pub max_delay: Duration,
    /// How long to wait for JetStream's publish acknowledgement, repeats included, before
    /// answering 503 (a number is seconds).
    #[arg(long = "publish-timeout-secs", env = "CODIGO_PUBLISH_TIMEOUT_SECS", default_value = "5s",
          value_parser = secs().at_least(MILLISECOND))]
    pub publish_timeout: Duration,
    /// How long one publish attempt waits for its ack before the job is sent again (same
    /// Nats-Msg-Id, so stored at most once), within CODIGO_PUBLISH_TIMEOUT_SECS (a number is
    /// milliseconds).
    #[arg(long = "publish-attempt-timeout-ms", env = "CODIGO_PUBLISH_ATTEMPT_TIMEOUT_MS",
          default_value = "2s", value_parser = millis().at_least(MILLISECOND))]
    pub publish_attempt_timeout: Duration,
    /// How long a client has to send a request's headers (else its connection is closed, as
    /// is an idle keep-alive connection) and then as long for its body (else 408) (a number
    /// is seconds).
    #[arg(long = "request-read-timeout-secs", env = "CODIGO_REQUEST_READ_TIMEOUT_SECS",
          default_value = "10s", value_parser = secs().at_least(MILLISECOND))]
    pub request_read_timeout: Duration,
    /// Most API requests in progress at once; more are refused with 503 and Retry-After
    /// (health, readiness and metrics are not counted).
    #[arg(long, env = "CODIGO_MAX_CONCURRENT_REQUESTS", default_value_t = 1024,
          value_parser = at_least(1usize).at_most(tokio::sync::Semaphore::MAX_PERMITS))]
    pub max_concurrent_requests: usize,
    /// Most `GET /v1/jobs/{id}?wait=` requests held at once, apart from
    /// CODIGO_MAX_CONCURRENT_REQUESTS; more are refused with 503 and Retry-After.
    #[arg(long, env = "CODIGO_MAX_WAITING_REQUESTS", default_value_t = 50_000,
          value_parser = at_least(1usize))]
    pub max_waiting_requests: usize,
    /// How long in-flight requests get to finish after SIGTERM (a number is seconds).
    #[arg(long = "shutdown-timeout-secs", env = "CODIGO_SHUTDOWN_TIMEOUT_SECS",
          default_value = "25s", value_parser = secs())]
    pub shutdown_timeout: Duration,
    #[command(flatten)]
    pub service: ServiceArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Keys(#[from] ParseKeysError),
    #[error("CODIGO_API_KEYS_FILE {path}: {problem}")]
    KeysFile {
        path: PathBuf,
        problem: KeysFileError,
    },
    #[error("CODIGO_AUTH is required but no API key is set; set CODIGO_API_KEYS (name:token,...) or CODIGO_API_KEYS_FILE, or CODIGO_AUTH=disabled for local use")]
    NoKeys,
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

/// What is wrong with the keys file; never quotes a token.
#[derive(Debug, thiserror::Error)]
pub enum KeysFileError {
    #[error("cannot read it: {0}; check the path and that the Secret is mounted there")]
    Read(std::io::Error),
    #[error("is not a JSON list of keys ({0}); write `[{{\"name\": \"...\", \"token\": \"...\"}}, ...]`")]
    Json(serde_json::Error),
    #[error("entry #{index}: {reason}")]
    Entry { index: usize, reason: String },
    #[error("{0}")]
    Keys(ParseKeysError),
}

/// One key of the keys file: the fields of a `CODIGO_API_KEYS` entry, by name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileEntry {
    name: String,
    token: String,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    types: Option<Vec<String>>,
    #[serde(default)]
    rate: Option<u32>,
    #[serde(default)]
    admin: bool,
}

impl KeyFileEntry {
    /// The entry written as in `CODIGO_API_KEYS`, so that both forms go through one parser
    /// and yield the same keys.
    fn env_form(&self) -> Result<String, &'static str> {
        let fields = [&self.name, &self.token]
            .into_iter()
            .chain(&self.tenant)
            .chain(self.types.iter().flatten());
        if fields.into_iter().any(|f| f.contains([',', ';'])) {
            return Err("no field may hold ',' or ';'");
        }
        if self.name.contains(':') {
            return Err("the name must not hold ':'");
        }
        let mut entry = format!("{}:{}", self.name, self.token);
        if let Some(tenant) = &self.tenant {
            entry.push_str(&format!(";tenant={tenant}"));
        }
        if let Some(types) = &self.types {
            if types.iter().any(|t| t.contains('|')) {
                return Err("a job type must not hold '|'");
            }
            entry.push_str(&format!(";types={}", types.join("|")));
        }
        if let Some(rate) = self.rate {
            entry.push_str(&format!(";rate={rate}"));
        }
        if self.admin {
            entry.push_str(";admin=true");
        }
        Ok(entry)
    }
}

/// Reads the keys file into the `CODIGO_API_KEYS` form.
fn read_keys_file(path: &Path) -> Result<SecretString, KeysFileError> {
    let text = std::fs::read_to_string(path).map_err(KeysFileError::Read)?;
    let entries: Vec<KeyFileEntry> = serde_json::from_str(&text).map_err(KeysFileError::Json)?;
    let entries = entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            entry.env_form().map_err(|reason| KeysFileError::Entry {
                index: index + 1,
                reason: reason.to_owned(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SecretString::from(entries.join(",")))
}

impl Config {
    pub fn publish_timeouts(&self) -> crate::publish::PublishTimeouts {
        crate::publish::PublishTimeouts {
            budget: self.publish_timeout,
            attempt: self.publish_attempt_timeout.min(self.publish_timeout),
        }
    }

    pub fn request_read_timeout(&self) -> Duration {
        self.request_read_timeout
    }

    /// Validates what the flags cannot check one by one, and reads the API keys.
    pub fn api_keys(&self) -> Result<Option<ApiKeys>, ConfigError> {
        self.service.jetstream.validate()?;
        if self.auth == AuthMode::Disabled {
            return Ok(None);
        }
        let keys = match &self.api_keys_file {
            Some(path) => {
                let in_file = |problem| ConfigError::KeysFile {
                    path: path.clone(),
                    problem,
                };
                let raw = read_keys_file(path).map_err(in_file)?;
                // Entry numbers are the file's: the conversion keeps their order.
                ApiKeys::parse(raw.expose_secret(), self.rate_limit_per_key).map_err(|error| {
                    match error {
                        ParseKeysError::Entry { index, reason } => {
                            in_file(KeysFileError::Entry { index, reason })
                        }
                        other => in_file(KeysFileError::Keys(other)),
                    }
                })?
            }
            None => {
                let raw = self
                    .api_keys
                    .as_ref()
                    .map(ExposeSecret::expose_secret)
                    .unwrap_or_default();
                ApiKeys::parse(raw, self.rate_limit_per_key)?
            }
        };
        if keys.is_empty() {
            return Err(ConfigError::NoKeys);
        }
        Ok(Some(keys))
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn bad_limits_are_refused_with_the_setting_and_range_named() {
        for (flag, expected) in [
            (
                "--request-read-timeout-secs",
                "CODIGO_REQUEST_READ_TIMEOUT_SECS (--request-read-timeout-secs): must be at least 1ms",
            ),
            (
                "--max-concurrent-requests",
                "CODIGO_MAX_CONCURRENT_REQUESTS (--max-concurrent-requests): must be a whole number from 1 to",
            ),
            (
                "--publish-attempt-timeout-ms",
                "CODIGO_PUBLISH_ATTEMPT_TIMEOUT_MS (--publish-attempt-timeout-ms): must be at least 1ms",
            ),
            (
                "--max-batch-items",
                "CODIGO_MAX_BATCH_ITEMS (--max-batch-items): must be a whole number, at least 1",
            ),
            (
                "--stream-replicas",
                "CODIGO_STREAM_REPLICAS (--stream-replicas): must be a whole number from 1 to 5",
            ),
        ] {
            let error = Config::try_parse_from(["codigo-producer", flag, "0"]).expect_err(flag);
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    #[test]
    fn durations_take_units_and_plain_numbers_keep_theirs() {
        let config = Config::try_parse_from([
            "codigo-producer",
            "--publish-timeout-secs=3",
            "--publish-attempt-timeout-ms=750",
            "--shutdown-timeout-secs=1m",
            "--request-read-timeout-secs=1500ms",
        ])
        .expect("parses");
        assert_eq!(config.publish_timeouts().budget, Duration::from_secs(3));
        assert_eq!(
            config.publish_timeouts().attempt,
            Duration::from_millis(750)
        );
        assert_eq!(config.shutdown_timeout, Duration::from_secs(60));
        assert_eq!(config.request_read_timeout(), Duration::from_millis(1500));
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

    /// The keys a producer reads from a keys file holding `json`.
    fn keys_from_file(json: &str) -> Result<Option<ApiKeys>, ConfigError> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "codigo-keys-{}-{}.json",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, json).expect("write keys file");
        let config = Config::try_parse_from([
            OsString::from("codigo-producer"),
            OsString::from("--api-keys-file"),
            path.clone().into_os_string(),
        ])
        .expect("parses");
        let keys = config.api_keys();
        let _ = std::fs::remove_file(&path);
        keys
    }

    #[test]
    fn keys_file_gives_the_keys_of_the_env_form() {
        let keys = keys_from_file(
            r#"[
                {"name": "alpha", "token": "aaaaaaaaaaaaaaaa"},
                {"name": "beta", "token": "bbbbbbbbbbbbbbbb", "tenant": "acme",
                 "types": ["ledger.post"], "rate": 0, "admin": true}
            ]"#,
        )
        .expect("valid file")
        .expect("auth required");
        let alpha = keys.find("aaaaaaaaaaaaaaaa").expect("alpha");
        assert_eq!(
            (alpha.name.as_str(), alpha.tenant.as_str()),
            ("alpha", "alpha")
        );
        assert!(alpha.allows("webhook.deliver"));
        let beta = keys.find("bbbbbbbbbbbbbbbb").expect("beta");
        assert_eq!(beta.tenant, "acme");
        assert!(beta.allows("ledger.post") && !beta.allows("webhook.deliver"));
        assert!(beta.admin && !alpha.admin);
        // rate 0 is unlimited: far more than any default bucket holds.
        assert!(beta.charge(1_000_000).is_ok());
        assert!(alpha.charge(1_000_000).is_err());
        assert!(keys.find("cccccccccccccccc").is_none());
    }

    #[test]
    fn bad_keys_files_say_where_and_never_quote_a_token() {
        for (json, expected) in [
            ("", "is not a JSON list of keys"),
            (r#"{"name": "a"}"#, "is not a JSON list of keys"),
            (
                r#"[{"name": "a", "token": "aaaaaaaaaaaaaaaa", "colour": "red"}]"#,
                "unknown field `colour`",
            ),
            (
                r#"[{"name": "a", "token": "aaaaaaaaaaaaaaaa;rate=0"}]"#,
                "entry #1: no field may hold ',' or ';'",
            ),
            (
                r#"[{"name": "a", "token": "aaaaaaaaaaaaaaaa"},
                    {"name": "b", "token": "short"}]"#,
                "entry #2: token shorter than 16 characters",
            ),
            (
                r#"[{"name": "a", "token": "aaaaaaaaaaaaaaaa", "types": ["Ledger"]}]"#,
                "entry #1: types= names \"Ledger\"",
            ),
            (
                r#"[{"name": "a", "token": "aaaaaaaaaaaaaaaa"},
                    {"name": "b", "token": "aaaaaaaaaaaaaaaa"}]"#,
                "have the same token",
            ),
            ("[]", "no API key is set"),
        ] {
            let error = keys_from_file(json).expect_err(json).to_string();
            assert!(error.contains(expected), "{json}: {error}");
            assert!(!error.contains("aaaaaaaaaaaaaaaa"), "token leaked: {error}");
            if expected != "no API key is set" {
                assert!(error.starts_with("CODIGO_API_KEYS_FILE "), "{error}");
            }
        }
        let missing = Config::try_parse_from([
            "codigo-producer",
            "--api-keys-file",
            "/nonexistent/codigo/keys.json",
        ])
        .expect("parses")
        .api_keys()
        .expect_err("missing file");
        assert!(
            matches!(
                &missing,
                ConfigError::KeysFile {
                    problem: KeysFileError::Read(_),
                    ..
                }
            ),
            "{missing}"
        );
    }

    #[test]
    fn keys_come_from_the_env_form_or_the_file_not_both() {
        let error = Config::try_parse_from([
            "codigo-producer",
            "--api-keys",
            "a:aaaaaaaaaaaaaaaa",
            "--api-keys-file",
            "/etc/codigo/keys.json",
        ])
        .expect_err("both");
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
