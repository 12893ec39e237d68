//! Tenants' processing limits across every worker replica together, kept in a JetStream
//! key-value bucket (`<NS>_TENANT_LIMITS`) and changed only by compare-and-set:
//!
//! - `jobs_per_sec`: one key per scope holds the generic cell rate algorithm's theoretical
//!   arrival time. Starting `k` jobs moves it `k / rate` seconds on, allowed while it stays
//!   within a tenth of a second (at least one job) of now: the same as a token bucket of that
//!   burst, in one number that every replica updates.
//! - `concurrency`: one key per scope holds each replica's jobs in flight with a lease. A
//!   replica counts the others' unexpired leases before taking more; it renews its own while
//!   it holds jobs, so a replica that dies stops counting once its lease runs out.
//!
//! A scope is a tenant (`<tenant>`) or a tenant's job type (`<tenant>=<type>`). Only limited
//! tenants touch the bucket; unlimited ones cost nothing.
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use codigo_common::config::JetStreamArgs;
use codigo_common::tenants::Limits;
use codigo_common::Names;
use serde::{Deserialize, Serialize};

/// How long a replica's count of jobs in flight holds without being renewed.
const LEASE: Duration = Duration::from_secs(15);

/// The rate's burst: starts allowed ahead of the steady pace.
const BURST: Duration = Duration::from_millis(100);

/// Compare-and-set attempts before a scope is left for the next round.
const ATTEMPTS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("cannot open the tenant limits bucket {bucket}: {reason}; run `codigo-ctl setup` (and check that this NATS user may use $KV.{bucket}.>)")]
    Open { bucket: String, reason: String },
}

/// Opens the bucket, creating it where this process owns the topology.
async fn open(
    js: &jetstream::Context,
    names: &Names,
    args: &JetStreamArgs,
) -> Result<kv::Store, LimitsError> {
    let bucket = names.tenant_limits_bucket();
    let opened = if args.ensure_topology {
        js.create_or_update_key_value(codigo_common::jetstream::tenant_limits_bucket_config(
            names, args,
        ))
        .await
        .map_err(|e| e.to_string())
    } else {
        js.get_key_value(&bucket).await.map_err(|e| e.to_string())
    };
    opened.map_err(|reason| LimitsError::Open { bucket, reason })
}

/// Each replica's jobs in flight in one scope, with the time its lease ends (ms since the
/// epoch).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Leases(BTreeMap<String, (u32, u64)>);

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn now_ms() -> u64 {
    u64::try_from(now_ns() / 1_000_000).unwrap_or(u64::MAX)
}

/// What a scope allows now: the jobs that may start, and when to ask again if none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub jobs: usize,
    pub retry_after: Duration,
}

/// The generic cell rate algorithm on `tat` (ns): how many of `want` may start at `now` at
/// `rate` per second, the new arrival time, and when the next may start.
fn gcra(tat: u128, now: u128, rate: f64, want: usize) -> (usize, u128, Duration) {
    let interval = (1e9 / rate).max(1.0);
    let tolerance = (BURST.as_nanos() as f64).max(interval);
    let tat = tat.max(now) as f64;
    let room = ((now as f64 + tolerance - tat) / interval).floor().max(0.0);
    let jobs = (room as usize).min(want);
    if jobs == 0 {
        let wait = (tat - tolerance + interval - now as f64).max(1e6);
        return (0, tat as u128, Duration::from_nanos(wait as u64));
    }
    (jobs, (tat + jobs as f64 * interval) as u128, Duration::ZERO)
}

/// How many of `want` fit beside the others' unexpired leases, this replica holding `mine`.
fn lease_room(leases: &Leases, me: &str, limit: u32, want: usize, now: u64) -> usize {
    let others: u64 = leases
        .0
        .iter()
        .filter(|(replica, (_, until))| *replica != me && *until > now)
        .map(|(_, (n, _))| u64::from(*n))
        .sum();
    let mine = leases.0.get(me).map_or(0, |(n, _)| u64::from(*n));
    let room = u64::from(limit).saturating_sub(others + mine);
    usize::try_from(room).unwrap_or(usize::MAX).min(want)
}

pub struct Limiter {
    js: jetstream::Context,
    names: Names,
    args: JetStreamArgs,
    /// Opened on first use: NATS may not be reachable when the process starts.
    store: tokio::sync::OnceCell<kv::Store>,
    replica: String,
    /// Jobs in flight this replica holds, by concurrency key: renewed while held, given back
    /// at shutdown.
    held: Mutex<BTreeMap<String, u32>>,
}

impl Limiter {
    pub fn new(js: jetstream::Context, names: Names, args: JetStreamArgs) -> Self {
        Self {
            js,
            names,
            args,
            store: tokio::sync::OnceCell::new(),
            replica: uuid::Uuid::new_v4().simple().to_string(),
            held: Mutex::new(BTreeMap::new()),
        }
    }

    async fn store(&self) -> Option<&kv::Store> {
        let opened = self
            .store
            .get_or_try_init(|| open(&self.js, &self.names, &self.args))
            .await;
        match opened {
            Ok(store) => Some(store),
            Err(error) => {
                tracing::warn!(%error, "holding limited tenants' jobs back");
                None
            }
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u32>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The scopes of `tenant`'s jobs of `job_type` with their limits.
    fn scopes(tenant: &str, job_type: &str, limits: (Limits, Limits)) -> [(String, Limits); 2] {
        [
            (tenant.to_owned(), limits.0),
            (format!("{tenant}={job_type}"), limits.1),
        ]
    }

    /// Takes up to `want` starts for `tenant`'s jobs of `job_type` under every limit that
    /// applies: what one scope refuses is given back to those before it.
    pub async fn admit(
        &self,
        tenant: &str,
        job_type: &str,
        limits: (Limits, Limits),
        want: usize,
    ) -> Grant {
        let scopes = Self::scopes(tenant, job_type, limits);
        let mut granted = want;
        let mut retry_after = Duration::ZERO;
        let mut taken: Vec<(String, Option<f64>, usize)> = Vec::new();
        for (scope, limits) in &scopes {
            if granted == 0 {
                break;
            }
            if let Some(limit) = limits.concurrency {
                let key = format!("inflight.{scope}");
                let got = self.acquire(&key, limit, granted).await;
                taken.push((key, None, got));
                if got < granted {
                    retry_after = retry_after.max(Duration::from_millis(50));
                }
                granted = got;
            }
            if let Some(rate) = limits.jobs_per_sec {
                let key = format!("rate.{scope}");
                let (got, wait) = self.reserve(&key, rate, granted).await;
                taken.push((key, Some(rate), got));
                retry_after = retry_after.max(wait);
                granted = got;
            }
        }
        for (key, rate, got) in taken {
            if got > granted {
                self.give_back(&key, rate, got - granted).await;
            }
        }
        Grant {
            jobs: granted,
            retry_after,
        }
    }

    /// Gives back starts taken by [`admit`](Self::admit) for jobs that did not start.
    pub async fn unadmit(
        &self,
        tenant: &str,
        job_type: &str,
        limits: (Limits, Limits),
        jobs: usize,
    ) {
        if jobs == 0 {
            return;
        }
        for (scope, limits) in Self::scopes(tenant, job_type, limits) {
            if limits.concurrency.is_some() {
                self.give_back(&format!("inflight.{scope}"), None, jobs)
                    .await;
            }
            if let Some(rate) = limits.jobs_per_sec {
                self.give_back(&format!("rate.{scope}"), Some(rate), jobs)
                    .await;
            }
        }
    }

    /// Jobs of `tenant` of `job_type` that ended: their places in flight are free again,
    /// whatever the limits say now (they may have changed while the jobs ran).
    pub async fn finished(&self, tenant: &str, job_type: &str, jobs: usize) {
        for key in [
            format!("inflight.{tenant}"),
            format!("inflight.{tenant}={job_type}"),
        ] {
            if self.held().contains_key(&key) {
                self.release(&key, jobs).await;
            }
        }
    }

    async fn give_back(&self, key: &str, rate: Option<f64>, jobs: usize) {
        match rate {
            Some(rate) => self.refund(key, rate, jobs).await,
            None => self.release(key, jobs).await,
        }
    }

    /// Compare-and-set of `key` from what `change` makes of its current value (`None` when
    /// absent); `change` answers the new value and a result, or `None` to leave it as is.
    async fn cas<T: Default>(
        &self,
        key: &str,
        mut change: impl FnMut(Option<&[u8]>) -> Option<(Vec<u8>, T)>,
    ) -> T {
        let Some(store) = self.store().await else {
            return T::default();
        };
        for _ in 0..ATTEMPTS {
            let entry = match store.entry(key).await {
                Ok(entry) => entry.filter(|e| e.operation == kv::Operation::Put),
                Err(error) => {
                    tracing::warn!(key, %error, "tenant limits not readable; holding the jobs back");
                    return T::default();
                }
            };
            let Some((value, result)) = change(entry.as_ref().map(|e| e.value.as_ref())) else {
                return T::default();
            };
            let written = match &entry {
                Some(entry) => store
                    .update(key, value.into(), entry.revision)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                None => store
                    .create(key, value.into())
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
            };
            match written {
                Ok(()) => return result,
                Err(error) => {
                    tracing::debug!(key, %error, "tenant limits changed meanwhile; again")
                }
            }
        }
        T::default()
    }

    async fn reserve(&self, key: &str, rate: f64, want: usize) -> (usize, Duration) {
        let mut wait = Duration::ZERO;
        let jobs = self
            .cas(key, |current| {
                let tat = current
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u128>().ok())
                    .unwrap_or(0);
                let (jobs, tat, retry) = gcra(tat, now_ns(), rate, want);
                wait = retry;
                (jobs > 0).then(|| (tat.to_string().into_bytes(), jobs))
            })
            .await;
        (jobs, if jobs == 0 { wait } else { Duration::ZERO })
    }

    async fn refund(&self, key: &str, rate: f64, jobs: usize) {
        let back = (jobs as f64 * 1e9 / rate) as u128;
        self.cas(key, |current| {
            let tat = current.and_then(|v| std::str::from_utf8(v).ok()?.parse::<u128>().ok())?;
            Some((tat.saturating_sub(back).to_string().into_bytes(), ()))
        })
        .await;
    }

    async fn acquire(&self, key: &str, limit: u32, want: usize) -> usize {
        let me = self.replica.clone();
        let got = self
            .cas(key, |current| {
                let mut leases: Leases = current
                    .and_then(|v| serde_json::from_slice(v).ok())
                    .unwrap_or_default();
                let now = now_ms();
                let room = lease_room(&leases, &me, limit, want, now);
                if room == 0 {
                    return None;
                }
                leases
                    .0
                    .retain(|replica, (_, until)| *until > now || *replica == me);
                let mine = leases.0.entry(me.clone()).or_insert((0, 0));
                mine.0 += u32::try_from(room).unwrap_or(u32::MAX);
                mine.1 = now + u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX);
                Some((serde_json::to_vec(&leases).unwrap_or_default(), room))
            })
            .await;
        if got > 0 {
            *self.held().entry(key.to_owned()).or_default() +=
                u32::try_from(got).unwrap_or(u32::MAX);
        }
        got
    }

    async fn release(&self, key: &str, jobs: usize) {
        let jobs = u32::try_from(jobs).unwrap_or(u32::MAX);
        {
            let mut held = self.held();
            if let Some(n) = held.get_mut(key) {
                *n = n.saturating_sub(jobs);
                if *n == 0 {
                    held.remove(key);
                }
            }
        }
        let me = self.replica.clone();
        self.cas(key, |current| {
            let mut leases: Leases = serde_json::from_slice(current?).ok()?;
            let mine = leases.0.get_mut(&me)?;
            mine.0 = mine.0.saturating_sub(jobs);
            if mine.0 == 0 {
                leases.0.remove(&me);
            }
            Some((serde_json::to_vec(&leases).unwrap_or_default(), ()))
        })
        .await;
    }

    /// Renews this replica's leases on the jobs it holds, every third of a lease, until
    /// `shutdown` (jobs drained after it give their places back as they end).
    pub async fn renew(&self, shutdown: codigo_common::shutdown::Shutdown) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(LEASE / 3) => {}
                () = shutdown.cancelled() => break,
            }
            let held: Vec<(String, u32)> =
                self.held().iter().map(|(k, n)| (k.clone(), *n)).collect();
            for (key, n) in held {
                let me = self.replica.clone();
                self.cas(&key, |current| {
                    let mut leases: Leases = current
                        .and_then(|v| serde_json::from_slice(v).ok())
                        .unwrap_or_default();
                    let until = now_ms() + u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX);
                    leases.0.insert(me.clone(), (n, until));
                    Some((serde_json::to_vec(&leases).unwrap_or_default(), ()))
                })
                .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cell_rate_allows_its_burst_then_its_pace() {
        let second = 1_000_000_000u128;
        let now = 100 * second;
        // 200/s: a burst of a tenth of a second (20 jobs), then one every 5 ms.
        let (jobs, tat, _) = gcra(0, now, 200.0, 1000);
        assert_eq!(jobs, 20);
        let (jobs, _, wait) = gcra(tat, now, 200.0, 1000);
        assert_eq!(jobs, 0);
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(6),
            "{wait:?}"
        );
        let (jobs, _, _) = gcra(tat, now + second, 200.0, 1000);
        assert_eq!(jobs, 20, "idle time banks no more than the burst");
        let (jobs, _, _) = gcra(tat, now + 5_000_000, 200.0, 1000);
        assert_eq!(jobs, 1, "5 ms later, one more");
        // Over a long run the pace holds whatever the asks.
        let (mut tat, mut started) = (0, 0);
        for ms in 0..30_000u128 {
            let (jobs, next, _) = gcra(tat, now + ms * 1_000_000, 200.0, 7);
            started += jobs;
            tat = next;
        }
        assert!(
            (5_990..=6_030).contains(&started),
            "{started} in 30 s at 200/s"
        );
    }

    #[test]
    fn leases_count_the_others_until_they_expire() {
        let mut leases = Leases::default();
        leases.0.insert("a".into(), (3, 1_000));
        leases.0.insert("b".into(), (4, 5_000));
        assert_eq!(lease_room(&leases, "b", 10, 100, 500), 3);
        assert_eq!(lease_room(&leases, "b", 10, 2, 500), 2);
        // a's lease ran out: it no longer counts.
        assert_eq!(lease_room(&leases, "b", 10, 100, 2_000), 6);
        assert_eq!(lease_room(&leases, "c", 7, 100, 500), 0);
    }
}
