//! The two ways of offering load.
//!
//! Open loop: requests leave on a fixed schedule whatever the answers, and each latency is
//! measured from the time the request was *due*, so a server that stalls cannot hide its
//! stall by slowing the sender down (no coordinated omission). Closed loop: N clients each
//! send, wait for the answer and send again; latency is per request, and throughput is what
//! the system gives N patient clients.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::e2e::Backlog;
use crate::payload::JobFactory;
use crate::stats::Recorder;
use crate::target::Target;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum Load {
    /// A constant arrival rate, in jobs per second.
    Open { rate: f64 },
    /// Clients each with one request outstanding.
    Closed { concurrency: usize },
}

/// When sending stops: after `duration`, after `jobs` jobs, whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub duration: Option<Duration>,
    pub jobs: Option<u64>,
    /// Jobs per request (1 except for batch ingest).
    pub unit: u64,
    /// Open loop: most requests outstanding at once; past it requests wait (and their
    /// latency, counted from the due time, grows).
    pub max_in_flight: usize,
    /// Closed loop: clients pause while the work stream holds more than this many jobs, so
    /// that throughput measures what the whole pipeline sustains rather than how fast a
    /// backlog grows.
    pub max_backlog: Option<u64>,
}

impl Limits {
    fn units(&self) -> u64 {
        self.jobs
            .map_or(u64::MAX, |jobs| jobs.div_ceil(self.unit.max(1)))
    }

    /// Jobs in request `k` (the last one may be short).
    fn jobs_in(&self, k: u64) -> u64 {
        let unit = self.unit.max(1);
        self.jobs
            .map_or(unit, |jobs| unit.min(jobs.saturating_sub(k * unit)))
    }
}

pub struct Driver {
    pub target: Arc<Target>,
    pub factory: Arc<JobFactory>,
    pub recorder: Arc<Recorder>,
}

impl Driver {
    /// Offers the load until a limit is reached and every request has been answered; returns
    /// when the last answer came.
    pub async fn run(&self, load: Load, limits: Limits, backlog: Option<&Backlog>) -> Instant {
        match load {
            Load::Open { rate } => self.open(rate, limits).await,
            Load::Closed { concurrency } => self.closed(concurrency, limits, backlog).await,
        }
    }

    async fn open(&self, rate: f64, limits: Limits) -> Instant {
        let unit = limits.unit.max(1);
        #[allow(clippy::cast_precision_loss)]
        let interval = Duration::from_secs_f64(unit as f64 / rate.max(0.001));
        let units = limits.units();
        let slots = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
        let mut tasks = JoinSet::new();
        let start = Instant::now();
        let mut k: u64 = 0;
        while k < units {
            let due = start + interval.mul_f64(k as f64);
            if limits.duration.is_some_and(|d| due >= start + d) {
                break;
            }
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            // Waiting for a slot delays the request, never its due time.
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let jobs = limits.jobs_in(k);
            let (target, factory, recorder) = (
                self.target.clone(),
                self.factory.clone(),
                self.recorder.clone(),
            );
            tasks.spawn(async move {
                let sent = target.send(&factory, k * unit, jobs).await;
                recorder.record(due.elapsed(), sent);
                drop(permit);
            });
            k += 1;
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
        Instant::now()
    }

    async fn closed(
        &self,
        concurrency: usize,
        limits: Limits,
        backlog: Option<&Backlog>,
    ) -> Instant {
        let unit = limits.unit.max(1);
        let units = limits.units();
        let next = Arc::new(AtomicU64::new(0));
        let deadline = limits.duration.map(|d| Instant::now() + d);
        let mut tasks = JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let (target, factory, recorder, next) = (
                self.target.clone(),
                self.factory.clone(),
                self.recorder.clone(),
                next.clone(),
            );
            let backlog = backlog.cloned();
            tasks.spawn(async move {
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return;
                    }
                    if let (Some(limit), Some(backlog)) = (limits.max_backlog, &backlog) {
                        if backlog.get().is_some_and(|b| b > limit) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            continue;
                        }
                    }
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= units {
                        return;
                    }
                    let started = Instant::now();
                    let sent = target.send(&factory, k * unit, limits.jobs_in(k)).await;
                    recorder.record(started.elapsed(), sent);
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        Instant::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_request_carries_the_remainder() {
        let limits = Limits {
            duration: None,
            jobs: Some(250),
            unit: 100,
            max_in_flight: 1,
            max_backlog: None,
        };
        assert_eq!(limits.units(), 3);
        assert_eq!(
            (0..3).map(|k| limits.jobs_in(k)).collect::<Vec<_>>(),
            vec![100, 100, 50]
        );
        let endless = Limits {
            jobs: None,
            ..limits
        };
        assert_eq!(endless.units(), u64::MAX);
        assert_eq!(endless.jobs_in(7), 100);
    }
}
