//! One repetition's processes: the release binaries found, started on a scratch namespace
//! and database with their environment, and stopped.
use std::path::Path;
use std::time::Duration;

use codigo_testkit::process::{self, Probe, Process};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::process::Command;

use crate::error::LoadError;
use crate::procfs::{self, Rss};
use crate::run::Endpoints;
use crate::scratch::Scratch;

use super::Ctx;

/// How long a service may take to answer its readiness check.
const READY: Duration = Duration::from_secs(30);

/// One repetition's services: a scratch namespace and database, set up by `codigo-ctl
/// setup`, and the processes started on it.
pub(super) struct Stack {
    pub(super) scratch: Scratch,
    pub(super) producer: Option<Process>,
    pub(super) producer_url: String,
    pub(super) consumers: Vec<Process>,
    pub(super) pool: PgPool,
}

impl Stack {
    pub(super) async fn new(ctx: &Ctx<'_>) -> Result<Self, LoadError> {
        let scratch = ctx.server.create().await?;
        let mut setup = Command::new(&ctx.bins.ctl);
        setup.arg("setup").envs(env(ctx, &scratch, &[], &[]));
        process::run(&mut setup, Duration::from_secs(60)).await?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&scratch.database_url)
            .await
            .map_err(|e| LoadError::postgres("connecting to the benchmark database", e))?;
        Ok(Self {
            scratch,
            producer: None,
            producer_url: String::new(),
            consumers: Vec::new(),
            pool,
        })
    }

    pub(super) async fn start_producer(&mut self, ctx: &Ctx<'_>) -> Result<(), LoadError> {
        let keys = format!("bench:{}", ctx.token);
        let extra = [
            ("CODIGO_API_KEYS", keys.as_str()),
            ("CODIGO_RATE_LIMIT_PER_KEY", "0"),
        ];
        let (mut producer, addr) = self.spawn(
            ctx,
            "codigo-producer",
            &ctx.bins.producer,
            &extra,
            &ctx.args.producer_env,
            "producer",
        )?;
        self.producer_url = format!("http://{addr}");
        let ready = Probe::Http(format!("{}/readyz", self.producer_url));
        producer.wait_ready(&ready, READY).await?;
        self.producer = Some(producer);
        Ok(())
    }

    /// Starts a consumer; returns when the process was started (not when it is ready).
    pub(super) fn spawn_consumer(&mut self, ctx: &Ctx<'_>) -> Result<Probe, LoadError> {
        let n = self.consumers.len() + 1;
        let (consumer, addr) = self.spawn(
            ctx,
            "codigo-consumer",
            &ctx.bins.consumer,
            &[("CODIGO_JOB_TYPES", "ledger.post")],
            &ctx.args.consumer_env,
            &format!("consumer-{n}"),
        )?;
        self.consumers.push(consumer);
        Ok(Probe::Http(format!("http://{addr}/readyz")))
    }

    pub(super) async fn start_consumer(&mut self, ctx: &Ctx<'_>) -> Result<(), LoadError> {
        let ready = self.spawn_consumer(ctx)?;
        if let Some(consumer) = self.consumers.last_mut() {
            consumer.wait_ready(&ready, READY).await?;
        }
        Ok(())
    }

    /// Starts `bin` on a free port with the repetition's environment, `extra` and the
    /// command line's `overrides`, its output in `<namespace>-<log>.log`; returns it with the
    /// address it serves on.
    fn spawn(
        &self,
        ctx: &Ctx<'_>,
        name: &str,
        bin: &Path,
        extra: &[(&str, &str)],
        overrides: &[(String, String)],
        log: &str,
    ) -> Result<(Process, String), LoadError> {
        let addr = format!("127.0.0.1:{}", process::free_port()?);
        let mut vars = vec![("CODIGO_HTTP_ADDR", addr.as_str())];
        vars.extend_from_slice(extra);
        let mut command = Command::new(bin);
        command.envs(env(ctx, &self.scratch, &vars, overrides));
        let log = ctx
            .logs
            .join(format!("{}-{log}.log", self.scratch.names.namespace()));
        Ok((Process::spawn(name, &mut command, &log)?, addr))
    }

    pub(super) fn endpoints(&self, ctx: &Ctx<'_>) -> Endpoints {
        Endpoints {
            producer_url: self.producer_url.clone(),
            api_key: Some(ctx.token.clone()),
            nats: ctx.client.clone(),
            names: self.scratch.names.clone(),
            pool: Some(self.pool.clone()),
        }
    }

    pub(super) fn check_alive(&mut self) -> Result<(), LoadError> {
        for process in self.producer.iter_mut().chain(self.consumers.iter_mut()) {
            process.check_alive()?;
        }
        Ok(())
    }

    pub(super) fn producer_rss(&self) -> Rss {
        self.producer
            .as_ref()
            .map(|p| procfs::rss(p.pid()))
            .unwrap_or_default()
    }

    /// The largest consumer's memory.
    pub(super) fn consumer_rss(&self) -> Rss {
        self.consumers
            .iter()
            .map(|c| procfs::rss(c.pid()))
            .max_by_key(|r| r.peak_kib)
            .unwrap_or_default()
    }

    /// Runs one repetition on a fresh stack, which is torn down whatever the outcome.
    pub(super) async fn around<T>(
        ctx: &Ctx<'_>,
        rep: impl AsyncFnOnce(&mut Stack) -> Result<T, LoadError>,
    ) -> Result<T, LoadError> {
        let mut stack = Stack::new(ctx).await?;
        let outcome = rep(&mut stack).await;
        stack.teardown(ctx).await;
        outcome
    }

    /// Stops every process (SIGTERM, then SIGKILL) and removes the namespace and database.
    pub(super) async fn teardown(self, ctx: &Ctx<'_>) {
        let stops = self
            .producer
            .into_iter()
            .chain(self.consumers)
            .map(|mut process| async move {
                if process.terminate(Duration::from_secs(30)).await.is_none() {
                    tracing::warn!(
                        name = process.name(),
                        "did not stop after SIGTERM; killed it"
                    );
                }
            });
        futures::future::join_all(stops).await;
        self.pool.close().await;
        ctx.server
            .destroy(
                &self.scratch,
                &async_nats::jetstream::new(ctx.client.clone()),
            )
            .await;
    }
}

/// The children's environment: our NATS settings, the scratch namespace and database, and
/// the services' shipped log settings (JSON at info: spans and all, as deployed).
pub(super) fn env(
    ctx: &Ctx<'_>,
    scratch: &Scratch,
    extra: &[(&str, &str)],
    overrides: &[(String, String)],
) -> Vec<(String, String)> {
    let mut vars = vec![
        ("NATS_URL".to_owned(), ctx.args.nats.nats_url.clone()),
        ("DATABASE_URL".to_owned(), scratch.database_url.clone()),
        (
            "CODIGO_NAMESPACE".to_owned(),
            scratch.names.namespace().to_owned(),
        ),
        ("LOG_FORMAT".to_owned(), "json".to_owned()),
        ("RUST_LOG".to_owned(), "info".to_owned()),
        (
            "CODIGO_STREAM_REPLICAS".to_owned(),
            ctx.replicas.to_string(),
        ),
        // File storage reserves a stream's byte limit up front (8 GiB by default): ask only
        // for what the benchmark stores, so that it fits beside other streams.
        (
            "CODIGO_STREAM_MAX_BYTES".to_owned(),
            ctx.args
                .drain_jobs
                .saturating_mul(4096)
                .max(1 << 30)
                .to_string(),
        ),
    ];
    vars.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    vars.extend(overrides.iter().cloned());
    vars
}
