//! Declared job types: a type named, versioned and given a schema at run time, served by an
//! HTTP function, with its own retry policy, concurrency and rate. Declarations are checked
//! here, once, by whoever stores them (`codigo-ctl types apply`, `PUT /v1/job-types/{type}`)
//! and again by whoever loads them, so a broken one is never half-used.
use std::collections::BTreeSet;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::registry::{registry, JobType};

/// Longest type name: it becomes a NATS subject token and a durable consumer name.
pub const MAX_NAME_LEN: usize = 128;
/// The answer a function may give as a job's result.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const DEFAULT_ATTEMPTS: u32 = 5;
const MAX_ATTEMPTS: u32 = 100;
const DEFAULT_FIRST_DELAY: Duration = Duration::from_secs(1);
const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(5 * 60);
const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_CONCURRENCY: u32 = 32;
const MAX_CONCURRENCY: u32 = 10_000;
const MAX_JOBS_PER_SEC: f64 = 1_000_000.0;

/// A job type's declaration, as stored and as written in a declaration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Declaration {
    #[serde(rename = "type")]
    pub name: String,
    pub version: u32,
    /// The payload's JSON Schema (draft 2020-12).
    pub schema: Value,
    pub target: Target,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Jobs of this type in flight at once, per consumer replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Jobs of this type started per second, per consumer replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs_per_sec: Option<f64>,
}

/// What runs a declared type's jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// A worker compiled into the consumer.
    Builtin(String),
    /// An HTTP function.
    Http(HttpTarget),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTarget {
    pub url: String,
    /// How long the function gets to answer; 30 s unless said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Span>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Deliveries in all, the first included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_delay: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<Span>,
}

/// A duration written with its unit (`5s`, `2m`, `150ms`), as people write them in files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map(Span)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a duration with a unit, such as 500ms, 5s or 2m ({e})"
                ))
            })
    }
}

/// What runs a declared type's jobs, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Runner {
    Http {
        url: url::Url,
        timeout: Duration,
    },
    /// The worker of this built-in type, on the declared type's payloads.
    Builtin(&'static str),
}

/// How a declared type's jobs are run, with every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub runner: Runner,
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub concurrency: u32,
    pub jobs_per_sec: Option<f64>,
}

/// A declaration that passed every check, with its schema compiled.
#[derive(Debug)]
pub struct DeclaredType {
    pub declaration: Declaration,
    pub job_type: JobType,
    pub policy: Policy,
}

/// Why a declaration was refused; each says which field and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeclarationError {
    #[error("type {0:?} is not a job type name: lower-case words joined by dots, such as `images.resize` (`[a-z0-9]+(\\.[a-z0-9_-]+)+`, at most 128 characters)")]
    BadName(String),
    #[error("type {0:?} is built into Codigo and cannot be declared; choose another name")]
    BuiltIn(String),
    #[error("the declaration is for {declared:?} but was sent for {path:?}; make them the same")]
    NameMismatch { path: String, declared: String },
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("target.builtin: {name:?} is not a built-in job type; use one of {known}")]
    UnknownBuiltin { name: String, known: String },
}

fn field(field: &'static str, reason: impl Into<String>) -> DeclarationError {
    DeclarationError::Field {
        field,
        reason: reason.into(),
    }
}

/// Whether `name` is a well-formed job type name (declared or not).
pub fn is_type_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let mut words = name.split('.');
    let first_ok = words.next().is_some_and(|w| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    let mut rest = 0;
    let rest_ok = words.all(|w| {
        rest += 1;
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
    });
    first_ok && rest_ok && rest > 0
}

static NAMES: LazyLock<Mutex<BTreeSet<&'static str>>> =
    LazyLock::new(|| Mutex::new(BTreeSet::new()));

/// The name, if this process has seen it declared (see [`intern`]).
pub fn interned(name: &str) -> Option<&'static str> {
    NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(name)
        .copied()
}

/// The `&'static` name of a declared type. Job type names are few, made by operators and
/// seen once per process each, while the runtime, metrics and subjects hold names as
/// `&'static str`; each distinct name is kept for the life of the process.
pub fn intern(name: &str) -> &'static str {
    if let Ok(builtin) = registry().job_type(name) {
        return builtin.name;
    }
    let mut names = NAMES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

impl Declaration {
    /// Parses one declaration from JSON, as stored.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DeclarationError> {
        serde_json::from_slice(bytes).map_err(|e| field("declaration", e.to_string()))
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A declaration is plain data (no maps with non-string keys): it always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Checks every field and compiles the schema.
    pub fn check(self) -> Result<DeclaredType, DeclarationError> {
        if !is_type_name(&self.name) {
            return Err(DeclarationError::BadName(self.name));
        }
        if registry().job_type(&self.name).is_ok() {
            return Err(DeclarationError::BuiltIn(self.name));
        }
        if !(1..=1000).contains(&self.version) {
            return Err(field("version", "must be a whole number from 1 to 1000"));
        }
        let runner = match &self.target {
            Target::Http(http) => http_runner(http)?,
            Target::Builtin(name) => match registry().job_type(name) {
                Ok(builtin) => Runner::Builtin(builtin.name),
                Err(_) => {
                    return Err(DeclarationError::UnknownBuiltin {
                        name: name.clone(),
                        known: registry().names().collect::<Vec<_>>().join(", "),
                    })
                }
            },
        };
        let retry = self.retry.clone().unwrap_or(RetrySpec {
            attempts: None,
            first_delay: None,
            max_delay: None,
        });
        let attempts = retry.attempts.unwrap_or(DEFAULT_ATTEMPTS);
        if !(1..=MAX_ATTEMPTS).contains(&attempts) {
            return Err(field("retry.attempts", "must be from 1 to 100"));
        }
        let first_delay = retry.first_delay.map_or(DEFAULT_FIRST_DELAY, |s| s.0);
        let max_delay = retry
            .max_delay
            .map_or(DEFAULT_MAX_DELAY.max(first_delay), |s| s.0);
        if first_delay < Duration::from_millis(1) || first_delay > MAX_DELAY {
            return Err(field("retry.first_delay", "must be from 1ms to 24h"));
        }
        if max_delay < first_delay || max_delay > MAX_DELAY {
            return Err(field(
                "retry.max_delay",
                "must be at least retry.first_delay and at most 24h",
            ));
        }
        let concurrency = self.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(field("concurrency", "must be from 1 to 10000"));
        }
        if let Some(rate) = self.jobs_per_sec {
            if !(rate.is_finite() && rate > 0.0 && rate <= MAX_JOBS_PER_SEC) {
                return Err(field(
                    "jobs_per_sec",
                    "must be a number of jobs per second above 0 and at most 1000000; leave it out for no limit",
                ));
            }
        }
        let job_type = JobType::compile_declared(intern(&self.name), self.version, &self.schema)
            .map_err(|e| {
                field(
                    "schema",
                    format!(
                        "does not compile as a JSON Schema: {}; fix the schema",
                        e.reason
                    ),
                )
            })?;
        let policy = Policy {
            runner,
            attempts,
            first_delay,
            max_delay,
            concurrency,
            jobs_per_sec: self.jobs_per_sec,
        };
        Ok(DeclaredType {
            declaration: self,
            job_type,
            policy,
        })
    }
}

fn http_runner(http: &HttpTarget) -> Result<Runner, DeclarationError> {
    let url = url::Url::parse(&http.url).map_err(|e| {
        field(
            "target.http.url",
            format!(
                "{:?} is not a URL ({e}); write it as http://host:port/path",
                http.url
            ),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(field(
            "target.http.url",
            format!("{:?} must be an http or https URL with a host", http.url),
        ));
    }
    let timeout = http.timeout.map_or(DEFAULT_TIMEOUT, |s| s.0);
    if timeout < Duration::from_millis(1) || timeout > MAX_TIMEOUT {
        return Err(field("target.http.timeout", "must be from 1ms to 15m"));
    }
    Ok(Runner::Http { url, timeout })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn declaration(changes: Value) -> Result<DeclaredType, DeclarationError> {
        let mut base = json!({
            "type": "images.resize",
            "version": 1,
            "schema": {"type": "object", "required": ["url"]},
            "target": {"http": {"url": "http://resize.default.svc:8080/", "timeout": "5s"}},
        });
        if let (Some(base), Some(changes)) = (base.as_object_mut(), changes.as_object()) {
            for (key, value) in changes {
                base.insert(key.clone(), value.clone());
            }
        }
        let declaration: Declaration =
            serde_json::from_value(base).map_err(|e| field("declaration", e.to_string()))?;
        declaration.check()
    }

    #[test]
    fn names_follow_the_contract() {
        for good in ["images.resize", "a.b", "acme2.pdf_render-v2", "x.y.z"] {
            assert!(is_type_name(good), "{good}");
        }
        for bad in [
            "images",
            "Images.resize",
            "images.",
            ".resize",
            "a..b",
            "a.b c",
            "a_b.c",
            "",
        ] {
            assert!(!is_type_name(bad), "{bad}");
        }
        assert!(!is_type_name(&format!("a.{}", "b".repeat(MAX_NAME_LEN))));
    }

    #[test]
    fn defaults_fill_the_policy() {
        let declared = declaration(json!({})).expect("valid");
        assert!(matches!(
            declared.policy.runner,
            Runner::Http { timeout, .. } if timeout == Duration::from_secs(5)
        ));
        assert_eq!(declared.policy.attempts, DEFAULT_ATTEMPTS);
        assert_eq!(declared.policy.first_delay, DEFAULT_FIRST_DELAY);
        assert_eq!(declared.policy.max_delay, DEFAULT_MAX_DELAY);
        assert_eq!(declared.policy.concurrency, DEFAULT_CONCURRENCY);
        assert_eq!(declared.job_type.name, "images.resize");
        assert!(declared.job_type.validate(&json!({"url": "x"})).is_ok());
        assert!(declared.job_type.validate(&json!({})).is_err());
    }

    #[test]
    fn a_built_in_worker_may_serve_a_declared_type() {
        let declared = declaration(json!({"target": {"builtin": "ledger.post"}})).expect("valid");
        assert_eq!(declared.policy.runner, Runner::Builtin("ledger.post"));
    }

    #[test]
    fn round_trips_through_json_with_durations_as_text() {
        let declared = declaration(json!({
            "retry": {"attempts": 3, "first_delay": "250ms", "max_delay": "2m"},
            "concurrency": 4,
            "jobs_per_sec": 20.0,
        }))
        .expect("valid");
        let stored = declared.declaration.to_json();
        let text = String::from_utf8(stored.clone()).expect("utf-8");
        assert!(text.contains(r#""first_delay":"250ms""#), "{text}");
        assert!(text.contains(r#""max_delay":"2m""#), "{text}");
        let again = Declaration::from_json(&stored)
            .expect("parses")
            .check()
            .expect("valid");
        assert_eq!(again.policy, declared.policy);
        assert_eq!(again.policy.first_delay, Duration::from_millis(250));
    }

    #[test]
    fn refusals_name_the_field() {
        let refused = [
            (json!({"type": "Images"}), "not a job type name"),
            (json!({"type": "ledger.post"}), "built into Codigo"),
            (json!({"version": 0}), "version"),
            (json!({"schema": {"type": "no-such-type"}}), "schema"),
            (
                json!({"target": {"http": {"url": "not a url"}}}),
                "target.http.url",
            ),
            (
                json!({"target": {"http": {"url": "ftp://host/x"}}}),
                "target.http.url",
            ),
            (
                json!({"target": {"http": {"url": "http://h/", "timeout": "5"}}}),
                "duration with a unit",
            ),
            (
                json!({"target": {"http": {"url": "http://h/", "timeout": "1h"}}}),
                "target.http.timeout",
            ),
            (
                json!({"target": {"builtin": "ledger.psot"}}),
                "not a built-in job type",
            ),
            (json!({"retry": {"attempts": 0}}), "retry.attempts"),
            (
                json!({"retry": {"first_delay": "10s", "max_delay": "1s"}}),
                "retry.max_delay",
            ),
            (json!({"concurrency": 0}), "concurrency"),
            (json!({"jobs_per_sec": -1.0}), "jobs_per_sec"),
            (json!({"colour": "red"}), "unknown field"),
        ];
        for (changes, expected) in refused {
            let error = declaration(changes.clone())
                .expect_err(&changes.to_string())
                .to_string();
            assert!(error.contains(expected), "{changes}: {error}");
        }
    }

    #[test]
    fn interned_names_are_shared() {
        let first = intern("reports.weekly");
        let second = intern(&String::from("reports.weekly"));
        assert!(std::ptr::eq(first, second));
        let builtin = registry().job_type("ledger.post").expect("built in").name;
        assert!(std::ptr::eq(intern("ledger.post"), builtin));
        assert_eq!(interned("reports.weekly"), Some(first));
        assert_eq!(interned("reports.monthly"), None);
    }
}
