//! Where the CPU goes: time used by each part of the system, and the wait for a quiet
//! machine between measurements.
use std::time::Duration;

use tokio::time::Instant;

use crate::procfs::{cpu_time, pids_of};

use super::stack::Stack;
use super::Ctx;

/// CPU time used by each part of the system over a repetition.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Cpu {
    loadgen: Duration,
    producer: Duration,
    consumer: Duration,
    nats: Duration,
    /// The backends serving this repetition's database (Postgres' shared WAL writer and
    /// checkpointer are not included).
    postgres: Duration,
}

impl Cpu {
    pub(super) fn now(ctx: &Ctx<'_>, stack: &Stack) -> Self {
        let sum = |pids: &[u32]| pids.iter().filter_map(|p| cpu_time(*p)).sum::<Duration>();
        let consumers: Vec<u32> = stack.consumers.iter().map(|c| c.pid()).collect();
        Self {
            loadgen: cpu_time(std::process::id()).unwrap_or_default(),
            producer: stack
                .producer
                .as_ref()
                .and_then(|p| cpu_time(p.pid()))
                .unwrap_or_default(),
            consumer: sum(&consumers),
            nats: sum(&nats_pids(ctx)),
            postgres: sum(&pids_of("postgres", &[&stack.scratch.database])),
        }
    }

    pub(super) fn since(self, earlier: Self) -> Self {
        Self {
            loadgen: self.loadgen.saturating_sub(earlier.loadgen),
            producer: self.producer.saturating_sub(earlier.producer),
            consumer: self.consumer.saturating_sub(earlier.consumer),
            nats: self.nats.saturating_sub(earlier.nats),
            postgres: self.postgres.saturating_sub(earlier.postgres),
        }
    }

    pub(super) fn parts(self) -> [Duration; 5] {
        [
            self.loadgen,
            self.producer,
            self.consumer,
            self.nats,
            self.postgres,
        ]
    }
}

/// The nats-server at NATS_URL's port (the only one, when its port is not on its command
/// line).
pub(super) fn nats_pids(ctx: &Ctx<'_>) -> Vec<u32> {
    if let Some(pids) = &ctx.nats_pids {
        return pids.clone();
    }
    let first = ctx.args.nats.nats_url.split(',').next().unwrap_or_default();
    let port = first
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
        .unwrap_or(4222);
    let mut pids = pids_of("nats-server", &[&format!("-p {port}")]);
    pids.extend(pids_of("nats-server", &[&format!("--port {port}")]));
    if pids.is_empty() {
        let all = pids_of("nats-server", &[]);
        if all.len() == 1 {
            return all;
        }
    }
    pids
}

/// Lets the previous step's after-effects finish before the next measurement starts, so that
/// none pays for the one before it: Postgres checkpoints what the last run wrote, and NATS
/// finishes removing its streams' files. Waits for the machine's CPUs to fall under 15 % busy
/// (over half a second), for 30 s at most.
pub(super) async fn settle(ctx: &Ctx<'_>) {
    ctx.server.checkpoint().await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let Some(before) = cpu_times() else { return };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Some(after) = cpu_times() else { return };
        let total = after.0.saturating_sub(before.0);
        let idle = after.1.saturating_sub(before.1);
        #[allow(clippy::cast_precision_loss)]
        let busy = 1.0 - idle as f64 / total.max(1) as f64;
        if busy < 0.15 {
            return;
        }
    }
}

/// The machine's CPU time so far, in clock ticks: (all, idle + iowait), from `/proc/stat`.
pub(super) fn cpu_times() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    Some((fields.iter().sum(), idle))
}
