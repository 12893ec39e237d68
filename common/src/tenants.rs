//! The tenants given lanes of their own (`lanes`), with their share of the workers and their
//! processing limits: `CODIGO_TENANTS`, or `CODIGO_TENANTS_FILE` to change them without a
//! restart (the file is read again within seconds of a change; in Kubernetes a ConfigMap).
//!
//! An entry is `name[;weight=W][;concurrency=N][;jobs_per_sec=R][;<type>:concurrency=N]
//! [;<type>:jobs_per_sec=R]`; entries are separated by commas or lines, `#` starts a comment.
//! `concurrency` caps the tenant's jobs in flight and `jobs_per_sec` its starts per second,
//! across every worker replica together; a `<type>:` limit applies to that job type alone,
//! beside the tenant's own.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::sync::watch;

use crate::lanes::{Lane, Priority};
use crate::shutdown::Shutdown;

/// Highest weight a tenant may have: beyond it one tenant's turn is a whole group of jobs.
pub const MAX_WEIGHT: u32 = 100;

/// How often `CODIGO_TENANTS_FILE` is looked at for changes.
const FILE_POLL: Duration = Duration::from_secs(2);

/// A cap on a tenant's jobs (all its job types, or one).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    /// Jobs in flight at once, across every worker replica.
    pub concurrency: Option<u32>,
    /// Jobs started per second, across every worker replica.
    pub jobs_per_sec: Option<f64>,
}

impl Limits {
    pub fn is_none(&self) -> bool {
        self.concurrency.is_none() && self.jobs_per_sec.is_none()
    }
}

/// A tenant given lanes of its own, with its share of the workers and its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantShare {
    pub name: String,
    /// Jobs started per rotation while it has a backlog, against the others' weights.
    pub weight: u32,
    pub limits: Limits,
    /// Limits of one job type, beside the tenant's own.
    pub type_limits: BTreeMap<String, Limits>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CODIGO_TENANTS entry {entry:?}: {reason}; entries are `name[;weight=1..100][;concurrency=N][;jobs_per_sec=R][;<type>:concurrency=N][;<type>:jobs_per_sec=R]`")]
pub struct BadTenants {
    pub entry: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TenantsFileError {
    #[error("CODIGO_TENANTS_FILE {path}: {error}; check that the file (or its ConfigMap) is mounted and readable")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("CODIGO_TENANTS_FILE {path}: {error}")]
    Bad { path: PathBuf, error: BadTenants },
}

/// The tenants' settings, read once at start.
#[derive(Debug, Clone, Default, Args)]
pub struct TenantsArgs {
    /// Tenants given lanes of their own, a fair share of the workers and optional limits:
    /// `name[;weight=N][;concurrency=N][;jobs_per_sec=R]`, comma separated. Others share one
    /// lane.
    #[arg(long = "tenants", env = "CODIGO_TENANTS", value_parser = parse_tenants, default_value = "")]
    pub tenants: Tenants,
    /// A file holding the tenants' entries instead (one per line); read again when it changes,
    /// so that weights and limits change without a restart.
    #[arg(long, env = "CODIGO_TENANTS_FILE", conflicts_with = "tenants")]
    pub tenants_file: Option<PathBuf>,
}

impl TenantsArgs {
    /// The tenants now: from the file when there is one.
    pub fn load(&self) -> Result<Tenants, TenantsFileError> {
        match &self.tenants_file {
            Some(path) => read_file(path),
            None => Ok(self.tenants.clone()),
        }
    }

    /// The tenants, kept up to date with `CODIGO_TENANTS_FILE` until `shutdown`. A file that
    /// turns unreadable or invalid keeps the last good tenants in force, with an error logged.
    pub fn follow(&self, shutdown: Shutdown) -> Result<TenantsWatch, TenantsFileError> {
        // What the first load read, for the watcher to compare with.
        let mut last = self
            .tenants_file
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok());
        let first = self.load()?;
        let (send, receive) = watch::channel(Arc::new(first));
        if let Some(path) = self.tenants_file.clone() {
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(FILE_POLL) => {}
                        () = shutdown.cancelled() => return,
                    }
                    let now = std::fs::read_to_string(&path).ok();
                    if now.is_none() || now == last {
                        continue;
                    }
                    last = now;
                    match read_file(&path) {
                        Ok(tenants) => {
                            tracing::info!(path = %path.display(), tenants = tenants.0.len(), "tenants changed");
                            send.send_replace(Arc::new(tenants));
                        }
                        Err(error) => {
                            tracing::error!(%error, "keeping the tenants in force");
                        }
                    }
                }
            });
        }
        Ok(TenantsWatch {
            receive,
            _fixed: None,
        })
    }
}

/// The tenants in force, following their file.
#[derive(Debug, Clone)]
pub struct TenantsWatch {
    receive: watch::Receiver<Arc<Tenants>>,
    /// Fixed tenants hold their own sender, so that `changed` waits instead of failing.
    _fixed: Option<Arc<watch::Sender<Arc<Tenants>>>>,
}

impl TenantsWatch {
    /// Fixed tenants, for tests and for a process without a file.
    pub fn fixed(tenants: Tenants) -> Self {
        let (send, receive) = watch::channel(Arc::new(tenants));
        Self {
            receive,
            _fixed: Some(Arc::new(send)),
        }
    }

    pub fn current(&self) -> Arc<Tenants> {
        self.receive.borrow().clone()
    }

    /// Waits for the next change; `false` once no change can come.
    pub async fn changed(&mut self) -> bool {
        self.receive.changed().await.is_ok()
    }
}

impl Default for TenantsWatch {
    fn default() -> Self {
        Self::fixed(Tenants::default())
    }
}

fn read_file(path: &Path) -> Result<Tenants, TenantsFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| TenantsFileError::Read {
        path: path.to_owned(),
        error,
    })?;
    let entries: Vec<&str> = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .collect();
    parse_tenants(&entries.join(",")).map_err(|error| TenantsFileError::Bad {
        path: path.to_owned(),
        error,
    })
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tenants(BTreeMap<String, TenantShare>);

impl Tenants {
    pub fn get(&self, tenant: &str) -> Option<&TenantShare> {
        self.0.get(tenant)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The lane a job of `tenant` at `priority` goes to.
    pub fn lane(&self, tenant: Option<&str>, priority: Priority) -> Lane {
        Lane::new(tenant.filter(|t| self.0.contains_key(*t)), priority)
    }

    /// Every lane: the shared ones and each listed tenant's.
    pub fn lanes(&self) -> Vec<Lane> {
        Lane::all(self.names())
    }

    /// A tenant's weight (1 for the shared lanes and tenants no longer listed).
    pub fn weight_of(&self, tenant: Option<&str>) -> u32 {
        tenant
            .and_then(|t| self.0.get(t))
            .map_or(1, |share| share.weight)
    }

    pub fn weight(&self, lane: &Lane) -> u32 {
        self.weight_of(lane.tenant.as_deref())
    }

    /// The limits on `tenant`'s jobs of `job_type`: the tenant's own and the type's, the
    /// second keyed by the type.
    pub fn limits(&self, tenant: &str, job_type: &str) -> (Limits, Limits) {
        self.0.get(tenant).map_or_else(Default::default, |share| {
            (
                share.limits,
                share.type_limits.get(job_type).copied().unwrap_or_default(),
            )
        })
    }
}

/// Tenants share the API keys' alphabet (producer `auth`).
fn plain_identifier(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn set_limit(limits: &mut Limits, key: &str, value: &str) -> Result<(), String> {
    match key {
        "concurrency" => {
            limits.concurrency = Some(
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or("concurrency must be a whole number, at least 1")?,
            );
        }
        "jobs_per_sec" => {
            limits.jobs_per_sec = Some(
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && *r > 0.0 && *r <= 1_000_000.0)
                    .ok_or("jobs_per_sec must be a number above 0, at most 1000000")?,
            );
        }
        other => return Err(format!("unknown option {other:?}")),
    }
    Ok(())
}

pub fn parse_tenants(raw: &str) -> Result<Tenants, BadTenants> {
    let mut tenants = BTreeMap::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |reason: &str| BadTenants {
            entry: entry.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = entry.split(';');
        let name = parts.next().unwrap_or_default().trim();
        if !plain_identifier(name) {
            return Err(bad("the name must be 1-64 characters from A-Za-z0-9._-"));
        }
        let mut share = TenantShare {
            name: name.to_owned(),
            weight: 1,
            limits: Limits::default(),
            type_limits: BTreeMap::new(),
        };
        for option in parts.map(str::trim).filter(|o| !o.is_empty()) {
            let Some((key, value)) = option.split_once('=') else {
                return Err(bad(&format!("option {option:?} has no value")));
            };
            let (key, value) = (key.trim(), value.trim());
            if key == "weight" {
                share.weight = value
                    .parse::<u32>()
                    .ok()
                    .filter(|w| (1..=MAX_WEIGHT).contains(w))
                    .ok_or_else(|| bad("weight must be a whole number from 1 to 100"))?;
            } else if let Some((job_type, key)) = key.split_once(':') {
                if !codigo_schemas::is_type_name(job_type) {
                    return Err(bad(&format!("{job_type:?} is not a job type name")));
                }
                let limits = share.type_limits.entry(job_type.to_owned()).or_default();
                set_limit(limits, key, value).map_err(|reason| bad(&reason))?;
            } else {
                set_limit(&mut share.limits, key, value).map_err(|reason| bad(&reason))?;
            }
        }
        if tenants.insert(name.to_owned(), share).is_some() {
            return Err(bad("the tenant is listed twice"));
        }
    }
    Ok(Tenants(tenants))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_parse_with_weights_and_limits_and_refuse_what_is_wrong() {
        let tenants =
            parse_tenants(" acme;weight=3;jobs_per_sec=200;ledger.post:concurrency=5, beta ,")
                .unwrap();
        let acme = tenants.get("acme").unwrap();
        assert_eq!(acme.weight, 3);
        assert_eq!(acme.limits.jobs_per_sec, Some(200.0));
        assert_eq!(
            tenants.limits("acme", "ledger.post"),
            (
                Limits {
                    concurrency: None,
                    jobs_per_sec: Some(200.0)
                },
                Limits {
                    concurrency: Some(5),
                    jobs_per_sec: None
                }
            )
        );
        assert!(tenants.limits("acme", "webhook.deliver").1.is_none());
        assert_eq!(tenants.get("beta").map(|s| s.weight), Some(1));
        assert_eq!(tenants.lanes().len(), 9);
        assert_eq!(
            tenants.lane(Some("other"), Priority::High),
            Lane::new(None, Priority::High)
        );
        assert_eq!(
            tenants.lane(Some("acme"), Priority::Low),
            Lane::new(Some("acme"), Priority::Low)
        );
        assert_eq!(parse_tenants("").unwrap(), Tenants::default());
        for (raw, says) in [
            ("a;weight=0", "weight"),
            ("a;weight=101", "weight"),
            ("a;speed=2", "unknown option"),
            ("a;concurrency=0", "concurrency"),
            ("a;jobs_per_sec=-1", "jobs_per_sec"),
            ("a;ledger:concurrency=1", "job type"),
            ("a;weight", "no value"),
            ("a b", "name"),
            ("a,a", "twice"),
        ] {
            let error = parse_tenants(raw).unwrap_err().to_string();
            assert!(error.contains(says), "{raw}: {error}");
        }
    }

    #[tokio::test]
    async fn a_changed_file_is_followed_and_a_broken_one_ignored() {
        let dir = std::env::temp_dir().join(format!("codigo-tenants-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tenants");
        std::fs::write(&path, "# tenants\nacme;weight=2\n").unwrap();
        let args = TenantsArgs {
            tenants: Tenants::default(),
            tenants_file: Some(path.clone()),
        };
        let shutdown = Shutdown::new();
        let mut watch = args.follow(shutdown.clone()).unwrap();
        assert_eq!(watch.current().weight_of(Some("acme")), 2);
        std::fs::write(&path, "acme;weight=5\nbeta # new\n").unwrap();
        tokio::time::timeout(Duration::from_secs(10), watch.changed())
            .await
            .expect("noticed within seconds");
        assert_eq!(watch.current().weight_of(Some("acme")), 5);
        assert!(watch.current().get("beta").is_some());
        std::fs::write(&path, "acme;weight=500\n").unwrap();
        tokio::time::sleep(FILE_POLL * 2).await;
        assert_eq!(watch.current().weight_of(Some("acme")), 5, "kept");
        shutdown.cancel();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
