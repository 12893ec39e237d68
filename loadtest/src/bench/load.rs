//! The rate and latency scenarios: one repetition of a load against a fresh stack.

use crate::error::LoadError;
use crate::procfs::Rss;
use crate::run::{self, Report, RunSpec};
use crate::target::Ingest;

use super::cpu::Cpu;
use super::stack::Stack;
use super::Ctx;

/// One repetition of a rate or latency scenario.
#[derive(Debug, Clone)]
pub(super) struct LoadSample {
    pub(super) report: Report,
    pub(super) producer: Rss,
    pub(super) consumer: Rss,
    pub(super) cpu: Cpu,
}

/// Starts producer (for HTTP ingest) and one consumer, runs the load, reads memory.
pub(super) async fn load_rep(ctx: &Ctx<'_>, spec: &RunSpec) -> Result<LoadSample, LoadError> {
    let sample = Stack::around(ctx, async |stack| {
        if spec.ingest != Ingest::Nats {
            stack.start_producer(ctx).await?;
        }
        stack.start_consumer(ctx).await?;
        let before = Cpu::now(ctx, stack);
        let report = run::run(spec, &stack.endpoints(ctx)).await?;
        let cpu = Cpu::now(ctx, stack).since(before);
        stack.check_alive()?;
        Ok(LoadSample {
            producer: stack.producer_rss(),
            consumer: stack.consumer_rss(),
            report,
            cpu,
        })
    })
    .await?;
    let r = &sample.report;
    eprintln!(
        "      sent {} accepted {} completed {}; ingest {:.0} jobs/s, e2e {:.0} jobs/s, ingest p99 {:.1} ms, e2e p99 {:.1} ms",
        r.jobs.sent,
        r.jobs.accepted,
        r.jobs.completed,
        r.throughput.ingest_jobs_per_sec,
        r.throughput.e2e_jobs_per_sec.unwrap_or(0.0),
        r.ingest_latency.map_or(0.0, |l| l.p99_ms),
        r.e2e_latency.map_or(0.0, |l| l.p99_ms),
    );
    Ok(sample)
}
