//! Fault injection for the chaos suite: only in builds with the `chaos` feature, and off
//! unless `CODIGO_FAULTS` turns it on. Its only purpose is to crash and stall workers on
//! purpose, so no deployed build contains it. It wraps a kind's worker ([`Chaotic`]).
//!
//! `CODIGO_FAULTS` is a comma-separated list:
//! - `crash_after_commit=P` — with probability P, abort the process after a job's transaction
//!   committed and before its ack (the redelivery must then change nothing);
//! - `memo` — `ledger.post` jobs obey directives in their memo: `chaos:sleep=<ms>` (a slow job,
//!   which must signal progress rather than be redelivered), `chaos:permanent` (the worker
//!   rejects it), `chaos:crash` (the worker dies on it every time, so it ends after MaxDeliver).
use async_trait::async_trait;
use codigo_schemas::{JobKind, LedgerPost, WebhookDeliver};

use crate::runtime::{Done, JobCtx, JobError, JobTx, Worker};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    pub crash_after_commit: f64,
    pub memo_directives: bool,
}

/// What a memo directive asks of the ledger handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    Sleep(std::time::Duration),
    Permanent,
    Crash,
}

impl Faults {
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut faults = Faults::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once('=') {
                Some(("crash_after_commit", p)) => {
                    faults.crash_after_commit = p
                        .parse()
                        .ok()
                        .filter(|p: &f64| (0.0..=1.0).contains(p))
                        .ok_or_else(|| format!("CODIGO_FAULTS: crash_after_commit wants a probability in 0..=1, not {p:?}"))?;
                }
                None if item == "memo" => faults.memo_directives = true,
                _ => {
                    return Err(format!(
                        "CODIGO_FAULTS: unknown fault {item:?}; known: crash_after_commit=P, memo"
                    ))
                }
            }
        }
        Ok(faults)
    }

    pub fn enabled(&self) -> bool {
        *self != Faults::default()
    }

    /// Dies like `kill -9` would: no drain, no flush, no ack.
    pub fn after_commit(&self) {
        if self.crash_after_commit > 0.0 && fastrand::f64() < self.crash_after_commit {
            eprintln!("fault injection: aborting between commit and ack");
            std::process::abort();
        }
    }

    /// `worker`, subject to these faults.
    pub fn wrap<W>(&self, worker: W) -> Chaotic<W> {
        Chaotic {
            inner: worker,
            faults: self.clone(),
        }
    }

    pub fn directive(&self, memo: Option<&str>) -> Option<Directive> {
        if !self.memo_directives {
            return None;
        }
        let rest = memo?.strip_prefix("chaos:")?;
        match rest {
            "permanent" => Some(Directive::Permanent),
            "crash" => Some(Directive::Crash),
            _ => rest
                .strip_prefix("sleep=")
                .and_then(|ms| ms.parse().ok())
                .map(|ms| Directive::Sleep(std::time::Duration::from_millis(ms))),
        }
    }
}

/// A payload that may carry a memo directive.
pub trait Memo {
    fn memo(&self) -> Option<&str>;
}

impl Memo for LedgerPost {
    fn memo(&self) -> Option<&str> {
        self.memo.as_deref()
    }
}

impl Memo for WebhookDeliver {
    fn memo(&self) -> Option<&str> {
        None
    }
}

/// A worker with faults injected around it.
pub struct Chaotic<W> {
    inner: W,
    faults: Faults,
}

#[async_trait]
impl<K: JobKind + Memo, W: Worker<K>> Worker<K> for Chaotic<W> {
    const OUTSIDE_EFFECTS: bool = W::OUTSIDE_EFFECTS;
    const GROUPS: bool = W::GROUPS;

    async fn work(&self, job: &JobCtx<'_, K>, tx: &mut JobTx) -> Result<Done, JobError> {
        match self.faults.directive(job.payload.memo()) {
            Some(Directive::Sleep(duration)) => tokio::time::sleep(duration).await,
            Some(Directive::Permanent) => {
                return Err(JobError::permanent(
                    "rejected by fault injection (chaos:permanent)",
                ))
            }
            Some(Directive::Crash) => {
                eprintln!("fault injection: crashing on a chaos:crash job");
                std::process::abort();
            }
            None => {}
        }
        self.inner.work(job, tx).await
    }

    async fn work_group(
        &self,
        jobs: &[&JobCtx<'_, K>],
        tx: &mut JobTx,
    ) -> Result<Vec<Done>, JobError> {
        self.inner.work_group(jobs, tx).await
    }

    /// Jobs with a directive go one by one, where it applies.
    fn may_group(&self, job: &JobCtx<'_, K>) -> bool {
        self.faults.directive(job.payload.memo()).is_none() && self.inner.may_group(job)
    }

    fn committed(&self, job: &JobCtx<'_, K>) {
        self.faults.after_commit();
        self.inner.committed(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(Faults::parse("").expect("empty"), Faults::default());
        let f = Faults::parse("crash_after_commit=0.25, memo").expect("valid");
        assert!(f.enabled() && f.memo_directives);
        assert!((f.crash_after_commit - 0.25).abs() < f64::EPSILON);
        assert!(Faults::parse("crash_after_commit=2").is_err());
        assert!(Faults::parse("explode").is_err());
    }

    #[test]
    fn memo_directives_only_when_enabled() {
        let on = Faults::parse("memo").expect("valid");
        assert_eq!(
            on.directive(Some("chaos:permanent")),
            Some(Directive::Permanent)
        );
        assert_eq!(on.directive(Some("chaos:crash")), Some(Directive::Crash));
        assert_eq!(
            on.directive(Some("chaos:sleep=1500")),
            Some(Directive::Sleep(std::time::Duration::from_millis(1500)))
        );
        assert_eq!(on.directive(Some("refund")), None);
        assert_eq!(Faults::default().directive(Some("chaos:crash")), None);
    }
}
