//! API keys: `Authorization: Bearer <token>`, compared in constant time, each key with its
//! tenant, optional job-type scope and its own token bucket.
//!
//! `CODIGO_API_KEYS` holds comma-separated entries
//! `name:token[;tenant=T][;types=a.b|c.d][;rate=N][;admin=true]`.
//! A plain `name:token` has tenant `name`, every job type, and `CODIGO_RATE_LIMIT_PER_KEY`.
//! Names and tenants are 1-64 characters from `A-Za-z0-9._-`; tokens at least 16 characters,
//! one per key; `types=` names well-formed job type names (a declared type may come later);
//! `admin=true` may declare and delete job types (docs/SECURITY.md).
use std::collections::BTreeSet;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use codigo_schemas::{is_type_name, registry};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::problem::Problem;

#[derive(Debug, thiserror::Error)]
pub enum ParseKeysError {
    #[error("CODIGO_API_KEYS entry #{index} is not `name:token[;tenant=..][;types=..][;rate=..][;admin=true]`: {reason}")]
    Entry { index: usize, reason: String },
    #[error("CODIGO_API_KEYS has two keys named {0:?}; names must be unique")]
    DuplicateName(String),
    #[error("CODIGO_API_KEYS keys {first:?} and {second:?} have the same token; give every key its own token")]
    DuplicateToken { first: String, second: String },
}

/// Names and tenants end up in logs, envelopes and job rows: keep them to a plain alphabet.
fn plain_identifier(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

pub struct ApiKey {
    pub name: String,
    pub tenant: String,
    /// `None` allows every job type.
    pub job_types: Option<BTreeSet<String>>,
    /// May declare and delete job types.
    pub admin: bool,
    token_digest: [u8; 32],
    /// The bucket and its burst (twice the rate).
    limiter: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
}

impl fmt::Debug for ApiKey {
    // The token never appears, not even hashed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .field("job_types", &self.job_types)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

impl ApiKey {
    pub fn allows(&self, job_type: &str) -> bool {
        self.job_types
            .as_ref()
            .is_none_or(|types| types.contains(job_type))
    }

    /// Takes `jobs` tokens from the key's bucket, all or none: rates count jobs, so a batch
    /// costs one token per job.
    pub fn charge(&self, jobs: usize) -> Result<(), RateRefusal> {
        let Some((limiter, burst)) = &self.limiter else {
            return Ok(());
        };
        let n = u32::try_from(jobs)
            .ok()
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::MIN);
        match limiter.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(RateRefusal::Wait(
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            Err(_) => Err(RateRefusal::OverBurst(burst.get())),
        }
    }
}

/// Why a key's bucket refused some jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateRefusal {
    /// Over the rate now: retry after this long.
    Wait(Duration),
    /// More jobs at once than the bucket ever holds: never accepted as one request.
    OverBurst(u32),
}

#[derive(Debug, Default)]
pub struct ApiKeys {
    keys: Vec<Arc<ApiKey>>,
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn limiter(rate: u32) -> Option<(DefaultDirectRateLimiter, NonZeroU32)> {
    let per_second = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(rate.saturating_mul(2)).unwrap_or(per_second);
    Some((
        RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)),
        burst,
    ))
}

impl ApiKeys {
    pub fn parse(raw: &str, default_rate: u32) -> Result<Self, ParseKeysError> {
        let mut keys: Vec<Arc<ApiKey>> = Vec::new();
        for (index, entry) in raw
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let index = index + 1;
            let bad = |reason: &str| ParseKeysError::Entry {
                index,
                reason: reason.to_owned(),
            };
            let mut parts = entry.split(';');
            let head = parts.next().unwrap_or_default();
            let (name, token) = head
                .split_once(':')
                .ok_or_else(|| bad("missing ':' between name and token"))?;
            let (name, token) = (name.trim(), token.trim());
            if name.is_empty() || token.is_empty() {
                return Err(bad("name and token must not be empty"));
            }
            if !plain_identifier(name) {
                return Err(bad(
                    "the name must be 1-64 characters from A-Z, a-z, 0-9, '.', '_' and '-'",
                ));
            }
            if token.len() < 16 {
                return Err(bad("token shorter than 16 characters"));
            }
            let mut tenant = name.to_owned();
            let mut job_types = None;
            let mut rate = default_rate;
            let mut admin = false;
            for option in parts {
                let (key, value) = option
                    .split_once('=')
                    .ok_or_else(|| bad("options are key=value"))?;
                match key.trim() {
                    "tenant" => {
                        if !plain_identifier(value.trim()) {
                            return Err(bad("tenant must be 1-64 characters from A-Z, a-z, 0-9, '.', '_' and '-'"));
                        }
                        tenant = value.trim().to_owned();
                    }
                    "types" => {
                        let types: BTreeSet<String> = value
                            .split('|')
                            .map(|t| t.trim().to_owned())
                            .filter(|t| !t.is_empty())
                            .collect();
                        if types.is_empty() {
                            return Err(bad(
                                "types= lists no job type; drop it to allow every type",
                            ));
                        }
                        // A typo would otherwise yield a key that can submit nothing. Declared
                        // types come and go at run time, so only the name's form is checked.
                        if let Some(unknown) = types.iter().find(|t| !is_type_name(t)) {
                            return Err(bad(&format!(
                                "types= names {unknown:?}, which is not a job type name; built-in: {}",
                                registry().names().collect::<Vec<_>>().join(", ")
                            )));
                        }
                        job_types = Some(types);
                    }
                    "rate" => {
                        rate = value
                            .trim()
                            .parse()
                            .map_err(|_| bad("rate must be a whole number of jobs per second"))?;
                    }
                    "admin" => {
                        admin = match value.trim() {
                            "true" => true,
                            "false" => false,
                            _ => return Err(bad("admin must be true or false")),
                        };
                    }
                    _ => return Err(bad("unknown option; use tenant=, types=, rate= or admin=")),
                }
            }
            if keys.iter().any(|k| k.name == name) {
                return Err(ParseKeysError::DuplicateName(name.to_owned()));
            }
            // One token, two keys would make the tenant depend on the order of the entries.
            let token_digest = digest(token.as_bytes());
            if let Some(first) = keys.iter().find(|k| k.token_digest == token_digest) {
                return Err(ParseKeysError::DuplicateToken {
                    first: first.name.clone(),
                    second: name.to_owned(),
                });
            }
            keys.push(Arc::new(ApiKey {
                name: name.to_owned(),
                tenant,
                job_types,
                admin,
                token_digest,
                limiter: limiter(rate),
            }));
        }
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Finds the key for a presented token. Every key is compared, in constant time, so the
    /// answer's timing says nothing about how close a guess was.
    pub fn find(&self, token: &str) -> Option<&Arc<ApiKey>> {
        let presented = digest(token.as_bytes());
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.token_digest.ct_eq(&presented)) {
                found = Some(key);
            }
        }
        found
    }
}

/// Tenant of requests when auth is disabled.
pub const LOCAL_TENANT: &str = "local";

/// Who sent a request: the holder of an API key, or anyone at all while auth is disabled.
#[derive(Debug, Clone)]
pub struct Caller {
    key: Option<Arc<ApiKey>>,
}

impl Caller {
    /// The caller of every request while auth is disabled: tenant `local`, no scope, no rate.
    pub fn anonymous() -> Self {
        Self { key: None }
    }

    pub fn with_key(key: Arc<ApiKey>) -> Self {
        Self { key: Some(key) }
    }

    pub fn tenant(&self) -> &str {
        self.key.as_ref().map_or(LOCAL_TENANT, |key| &key.tenant)
    }

    /// Charges `jobs` to the key's rate, all or nothing.
    pub fn charge(&self, jobs: usize) -> Result<(), Problem> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        key.charge(jobs).map_err(|refusal| match refusal {
            RateRefusal::Wait(wait) => {
                Problem::rate_limited(wait.as_secs_f64().ceil().max(1.0) as u64)
            }
            RateRefusal::OverBurst(burst) => Problem::batch_over_burst(jobs, burst),
        })
    }

    /// 403 unless the key may declare and delete job types; with auth disabled, anyone may.
    pub fn may_administer(&self) -> Result<(), Problem> {
        match &self.key {
            Some(key) if !key.admin => Err(Problem::forbidden_admin()),
            _ => Ok(()),
        }
    }

    /// 403 unless the key's scope takes `job_type`.
    pub fn may_submit(&self, job_type: &str) -> Result<(), Problem> {
        match &self.key {
            Some(key) if !key.allows(job_type) => Err(Problem::forbidden_job_type(job_type)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_extended_entries() {
        let keys = ApiKeys::parse(
            "alpha:aaaaaaaaaaaaaaaa, beta:bbbbbbbbbbbbbbbb;tenant=acme;types=ledger.post;rate=0",
            10,
        )
        .expect("parses");
        let alpha = keys.find("aaaaaaaaaaaaaaaa").expect("alpha");
        assert_eq!(alpha.tenant, "alpha");
        assert!(alpha.allows("webhook.deliver"));
        let beta = keys.find("bbbbbbbbbbbbbbbb").expect("beta");
        assert_eq!(beta.tenant, "acme");
        assert!(beta.allows("ledger.post"));
        assert!(!beta.allows("webhook.deliver"));
        assert!(beta.limiter.is_none());
        assert!(!beta.admin);
        let ops = ApiKeys::parse("ops:oooooooooooooooo;admin=true", 10).expect("parses");
        assert!(ops.find("oooooooooooooooo").expect("ops").admin);
        assert!(keys.find("cccccccccccccccc").is_none());
        assert!(!format!("{alpha:?}").contains("aaaa"));
    }

    #[test]
    fn bad_entries_say_which() {
        for raw in [
            "nocolon",
            "a:short",
            "a:aaaaaaaaaaaaaaaa;rate=x",
            "a:aaaaaaaaaaaaaaaa;color=red",
            "a:aaaaaaaaaaaaaaaa,a:bbbbbbbbbbbbbbbb",
            "a:aaaaaaaaaaaaaaaa,b:aaaaaaaaaaaaaaaa",
            "a:aaaaaaaaaaaaaaaa;types=Ledger",
            "a:aaaaaaaaaaaaaaaa;admin=yes",
            "a:aaaaaaaaaaaaaaaa;types=|",
            "a:aaaaaaaaaaaaaaaa;tenant=",
            "a:aaaaaaaaaaaaaaaa;tenant=acme corp",
            "a b:aaaaaaaaaaaaaaaa",
        ] {
            let error = ApiKeys::parse(raw, 1).expect_err(raw).to_string();
            assert!(error.contains("CODIGO_API_KEYS"), "{error}");
            assert!(!error.contains("aaaaaaaaaaaaaaaa"), "token leaked: {error}");
        }
    }

    #[test]
    fn rate_limit_allows_burst_then_refuses() {
        let keys = ApiKeys::parse("a:aaaaaaaaaaaaaaaa;rate=1", 1).expect("parses");
        let key = keys.find("aaaaaaaaaaaaaaaa").expect("key");
        assert!(key.charge(1).is_ok());
        assert!(key.charge(1).is_ok());
        let refusal = key.charge(1).expect_err("third job within a second");
        assert!(matches!(refusal, RateRefusal::Wait(wait) if wait <= Duration::from_secs(1)));
    }

    #[test]
    fn a_batch_costs_one_token_per_job_all_or_nothing() {
        let keys = ApiKeys::parse("a:aaaaaaaaaaaaaaaa;rate=50", 1).expect("parses");
        let key = keys.find("aaaaaaaaaaaaaaaa").expect("key");
        assert_eq!(key.charge(101), Err(RateRefusal::OverBurst(100)));
        assert!(key.charge(80).is_ok());
        // 20 tokens left (plus what refilled meanwhile, far below 60): refused whole...
        assert!(matches!(key.charge(60), Err(RateRefusal::Wait(_))));
        // ...and nothing of it was taken.
        assert!(key.charge(20).is_ok());
    }
}
