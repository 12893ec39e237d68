//! Retry delays for failed jobs. The consumer computes them itself because a nak with a delay
//! is the only way to space out retries: a plain nak redelivers at once, ignoring BackOff.
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// Exponential in the attempt number, with jitter so that jobs failing together do not
    /// come back together.
    pub fn delay(&self, attempt: u64) -> Duration {
        let steps = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        ExponentialBuilder::default()
            .with_min_delay(self.base)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(steps.min(64))
            .unwrap_or(self.max)
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_and_stays_capped() {
        let policy = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        for attempt in 1..=3u64 {
            let floor = Duration::from_millis(100 * (1 << (attempt - 1)));
            for _ in 0..20 {
                let d = policy.delay(attempt);
                assert!(d >= floor && d <= floor * 2, "attempt {attempt}: {d:?}");
            }
        }
        assert!(policy.delay(50) <= Duration::from_secs(5));
        let samples: std::collections::BTreeSet<_> = (0..20).map(|_| policy.delay(2)).collect();
        assert!(samples.len() > 1, "jitter varies the delay");
    }
}
