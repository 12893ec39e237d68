//! The drain scenarios: a full stream emptied by consumers started afterwards.
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::driver::Load;
use crate::e2e::Backlog;
use crate::error::LoadError;
use crate::procfs::Rss;
use crate::run::{self, RunSpec};
use crate::target::Ingest;

use super::cpu::Cpu;
use super::stack::Stack;
use super::Ctx;

/// One repetition of a drain scenario.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct DrainSample {
    pub(super) jobs: u64,
    /// Consumer process start to the last commit.
    pub(super) secs: f64,
    pub(super) jobs_per_sec: f64,
    /// Consumer process start to its first ack.
    pub(super) first_ack_ms: f64,
    pub(super) consumer: Rss,
    #[serde(skip)]
    pub(super) cpu: Cpu,
}

/// Fills the stream with no consumer running, then starts `consumers` consumers and times
/// the first ack and the last commit from the first process start.
pub(super) async fn drain_rep(ctx: &Ctx<'_>, consumers: usize) -> Result<DrainSample, LoadError> {
    let jobs = ctx.args.drain_jobs.max(1);
    let sample = Stack::around(ctx, async |stack| {
        let fill = RunSpec {
            ingest: Ingest::Nats,
            load: Load::Closed { concurrency: 1024 },
            duration: None,
            jobs: Some(jobs),
            batch_size: 1,
            accounts: ctx.args.accounts,
            job_bytes: ctx.args.job_bytes,
            tenant: "bench".into(),
            max_in_flight: 1024,
            max_backlog: None,
            e2e: false,
            drain_timeout: Duration::ZERO,
            progress: true,
        };
        let filled = run::run(&fill, &stack.endpoints(ctx)).await?;
        if filled.jobs.accepted != jobs {
            return Err(LoadError::Invalid(format!(
                "filling the stream stored {} of {jobs} jobs: {:?}",
                filled.jobs.accepted, filled.errors
            )));
        }
        // Acks are publishes to $JS.ACK.<stream>.…: watching them shows the very first one.
        let mut acks = ctx
            .client
            .subscribe(format!("$JS.ACK.{}.>", stack.scratch.names.jobs_stream()))
            .await
            .map_err(|e| LoadError::jetstream("watching acks", e))?;
        ctx.client
            .flush()
            .await
            .map_err(|e| LoadError::jetstream("watching acks", e))?;
        let js = async_nats::jetstream::new(ctx.client.clone());
        let backlog = Backlog::watch(
            &js,
            &stack.scratch.names.jobs_stream(),
            Duration::from_millis(100),
        )
        .await?;

        let before = Cpu::now(ctx, stack);
        let spawned_at = OffsetDateTime::now_utc();
        let spawned = Instant::now();
        for _ in 0..consumers {
            stack.spawn_consumer(ctx)?;
        }
        let first_ack = loop {
            let next = tokio::time::timeout(Duration::from_secs(60), acks.next())
                .await
                .map_err(|_| {
                    LoadError::Invalid("no ack within 60 s of starting the consumer".into())
                })?;
            match next {
                // A plain ack has an empty body (or +ACK); progress and naks do not count.
                Some(m) if m.payload.is_empty() || m.payload.as_ref() == b"+ACK" => {
                    break spawned.elapsed();
                }
                Some(_) => {}
                None => return Err(LoadError::Invalid("the ack subscription closed".into())),
            }
        };
        let _ = acks.unsubscribe().await;

        let deadline = Instant::now() + Duration::from_secs(600) + Duration::from_millis(jobs * 2);
        loop {
            stack.check_alive()?;
            if backlog.get() == Some(0) {
                let (done, last): (i64, Option<OffsetDateTime>) = sqlx::query_as(
                    "SELECT count(*), max(finished_at) FROM jobs WHERE status = 'succeeded'",
                )
                .fetch_one(&stack.pool)
                .await
                .map_err(|e| LoadError::postgres("counting drained jobs", e))?;
                if u64::try_from(done).unwrap_or(0) >= jobs {
                    let cpu = Cpu::now(ctx, stack).since(before);
                    let secs = last.map_or(0.0, |l| (l - spawned_at).as_seconds_f64());
                    #[allow(clippy::cast_precision_loss)]
                    return Ok(DrainSample {
                        jobs,
                        secs,
                        jobs_per_sec: jobs as f64 / secs.max(1e-9),
                        first_ack_ms: first_ack.as_secs_f64() * 1000.0,
                        consumer: stack.consumer_rss(),
                        cpu,
                    });
                }
            }
            if Instant::now() > deadline {
                return Err(LoadError::Invalid(format!(
                    "the consumers did not drain {jobs} jobs in time"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await?;
    eprintln!(
        "      drained {} jobs in {:.1} s: {:.0} jobs/s; first ack {:.0} ms after start",
        sample.jobs, sample.secs, sample.jobs_per_sec, sample.first_ack_ms
    );
    Ok(sample)
}
