//! Counters and HDR latency histograms of a run, and the percentiles the summary shows.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use uuid::Uuid;

use crate::target::Sent;

/// Latencies are recorded in microseconds, from 1 µs to one hour, at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits are valid"))
    })
}

pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Shared by every request task of a run.
#[derive(Debug)]
pub struct Recorder {
    ingest: Mutex<Histogram<u64>>,
    sent: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    requests: AtomicU64,
    ids: Mutex<Vec<Uuid>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            ingest: Mutex::new(histogram()),
            sent: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            ids: Mutex::new(Vec::new()),
            errors: Mutex::new(BTreeMap::new()),
        }
    }
}

/// A point-in-time view of the counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub requests: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking request task cannot leave a histogram half-written in a way that matters.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Recorder {
    /// Records one answered request and its latency.
    pub fn record(&self, latency: Duration, sent: Sent) {
        lock(&self.ingest).saturating_record(micros(latency).max(1));
        self.requests.fetch_add(1, Ordering::Relaxed);
        let accepted = u64::try_from(sent.accepted.len()).unwrap_or(u64::MAX);
        let rejected: u64 = sent.rejected.iter().map(|(_, n)| n).sum();
        if !sent.accepted.is_empty() {
            lock(&self.ids).extend(sent.accepted);
        }
        if !sent.rejected.is_empty() {
            let mut errors = lock(&self.errors);
            for (why, n) in sent.rejected {
                *errors.entry(why).or_default() += n;
            }
        }
        self.accepted.fetch_add(accepted, Ordering::Relaxed);
        self.rejected.fetch_add(rejected, Ordering::Relaxed);
        // Jobs the answer accounted for neither way (should not happen) are rejected too,
        // so that sent = accepted + rejected always holds.
        let unaccounted = sent.jobs.saturating_sub(accepted + rejected);
        if unaccounted > 0 {
            self.rejected.fetch_add(unaccounted, Ordering::Relaxed);
            *lock(&self.errors).entry("unaccounted".into()).or_default() += unaccounted;
        }
        self.sent
            .fetch_add(sent.jobs.max(accepted + rejected), Ordering::Relaxed);
    }

    pub fn counts(&self) -> Counts {
        Counts {
            sent: self.sent.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
        }
    }

    pub fn ingest_histogram(&self) -> Histogram<u64> {
        lock(&self.ingest).clone()
    }

    pub fn take_ids(&self) -> Vec<Uuid> {
        std::mem::take(&mut *lock(&self.ids))
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        lock(&self.errors).clone()
    }
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[allow(clippy::cast_precision_loss)]
fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Latency {
    pub fn of(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        Some(Self {
            count: histogram.len(),
            min_ms: ms(histogram.min()),
            mean_ms: histogram.mean() / 1000.0,
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p95_ms: ms(histogram.value_at_quantile(0.95)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
        })
    }

    /// `avg=1.20ms min=0.41ms med=1.02ms p(90)=… max=…`, as k6 prints trends.
    pub fn line(&self) -> String {
        format!(
            "avg={} min={} med={} p(90)={} p(95)={} p(99)={} max={}",
            fmt_ms(self.mean_ms),
            fmt_ms(self.min_ms),
            fmt_ms(self.p50_ms),
            fmt_ms(self.p90_ms),
            fmt_ms(self.p95_ms),
            fmt_ms(self.p99_ms),
            fmt_ms(self.max_ms),
        )
    }
}

/// Milliseconds with a precision that suits their size, or seconds past ten of them.
pub fn fmt_ms(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.2}s", value / 1000.0)
    } else if value >= 100.0 {
        format!("{value:.0}ms")
    } else if value >= 10.0 {
        format!("{value:.1}ms")
    } else {
        format!("{value:.2}ms")
    }
}

/// A rate with a precision that suits its size.
pub fn fmt_rate(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_always_add_up() {
        let recorder = Recorder::default();
        recorder.record(
            Duration::from_millis(2),
            Sent {
                jobs: 3,
                accepted: vec![Uuid::now_v7()],
                rejected: vec![("http 429".into(), 1)],
            },
        );
        let counts = recorder.counts();
        assert_eq!(counts.sent, 3);
        assert_eq!(counts.accepted, 1);
        assert_eq!(counts.rejected, 2);
        assert_eq!(counts.requests, 1);
        assert_eq!(recorder.errors().get("unaccounted"), Some(&1));
        assert_eq!(recorder.take_ids().len(), 1);
    }

    #[test]
    fn percentiles_come_out_in_milliseconds() {
        let mut h = histogram();
        for us in 1..=1000 {
            h.record(us * 10).expect("in range");
        }
        let latency = Latency::of(&h).expect("not empty");
        assert_eq!(latency.count, 1000);
        assert!((latency.p50_ms - 5.0).abs() < 0.01, "{latency:?}");
        assert!((latency.p99_ms - 9.9).abs() < 0.01, "{latency:?}");
        assert!((latency.max_ms - 10.0).abs() < 0.01, "{latency:?}");
        let line = latency.line();
        assert!(
            line.contains("min=0.01ms med=5.00ms") && line.ends_with("max=10.0ms"),
            "{line}"
        );
        assert!(Latency::of(&histogram()).is_none());
        assert_eq!(fmt_ms(12_345.0), "12.35s");
        assert_eq!(fmt_rate(1234.56), "1235");
    }
}
