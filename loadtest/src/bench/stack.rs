//! One repetition's processes: the release binaries found, started on a scratch namespace
//! and database with their environment, and stopped.
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::error::LoadError;
use crate::procs::{free_port, run_to_end, Proc, Rss};
use crate::run::Endpoints;
use crate::scratch::Scratch;

use super::Ctx;

pub(super) struct Bins {
    pub(super) producer: PathBuf,
    pub(super) consumer: PathBuf,
    pub(super) ctl: PathBuf,
}

impl Bins {
    pub(super) fn find(dir: &Path) -> Result<Self, LoadError> {
        let bin = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(LoadError::Invalid(format!(
                    "{} not found; run `cargo build --release --bins` (or `make bench`), or point --bin-dir at the binaries",
                    path.display()
                )))
            }
        };
        Ok(Self {
            producer: bin("codigo-producer")?,
            consumer: bin("codigo-consumer")?,
            ctl: bin("codigo-ctl")?,
        })
    }
}

/// One repetition's services: a scratch namespace and database, set up by `codigo-ctl
/// setup`, and the processes started on it.
pub(super) struct Stack {
    pub(super) scratch: Scratch,
    pub(super) producer: Option<Proc>,
    pub(super) producer_url: String,
    pub(super) consumers: Vec<Proc>,
    pub(super) pool: PgPool,
}

impl Stack {
    pub(super) async fn new(ctx: &Ctx<'_>) -> Result<Self, LoadError> {
        let scratch = ctx.server.create().await?;
        run_to_end(
            &ctx.bins.ctl,
            &["setup"],
            &env(ctx, &scratch, &[], &[]),
            Duration::from_secs(60),
        )
        .await?;
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
        let addr = format!("127.0.0.1:{}", free_port()?);
        let keys = format!("bench:{}", ctx.token);
        let mut proc = Proc::spawn(
            "codigo-producer",
            &ctx.bins.producer,
            &[],
            &env(
                ctx,
                &self.scratch,
                &[
                    ("CODIGO_HTTP_ADDR", &addr),
                    ("CODIGO_API_KEYS", &keys),
                    ("CODIGO_RATE_LIMIT_PER_KEY", "0"),
                ],
                &ctx.args.producer_env,
            ),
            &ctx.logs
                .join(format!("{}-producer.log", self.scratch.names.namespace())),
        )?;
        self.producer_url = format!("http://{addr}");
        proc.wait_ready(
            &ctx.http,
            &format!("{}/readyz", self.producer_url),
            Duration::from_secs(30),
        )
        .await?;
        self.producer = Some(proc);
        Ok(())
    }

    /// Starts a consumer; returns when the process was started (not when it is ready).
    pub(super) fn spawn_consumer(&mut self, ctx: &Ctx<'_>) -> Result<String, LoadError> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let n = self.consumers.len() + 1;
        let proc = Proc::spawn(
            "codigo-consumer",
            &ctx.bins.consumer,
            &[],
            &env(
                ctx,
                &self.scratch,
                &[
                    ("CODIGO_HTTP_ADDR", &addr),
                    ("CODIGO_JOB_TYPES", "ledger.post"),
                ],
                &ctx.args.consumer_env,
            ),
            &ctx.logs.join(format!(
                "{}-consumer-{n}.log",
                self.scratch.names.namespace()
            )),
        )?;
        self.consumers.push(proc);
        Ok(format!("http://{addr}/readyz"))
    }

    pub(super) async fn start_consumer(&mut self, ctx: &Ctx<'_>) -> Result<(), LoadError> {
        let ready = self.spawn_consumer(ctx)?;
        if let Some(proc) = self.consumers.last_mut() {
            proc.wait_ready(&ctx.http, &ready, Duration::from_secs(30))
                .await?;
        }
        Ok(())
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
        for proc in self.producer.iter_mut().chain(self.consumers.iter_mut()) {
            proc.check_alive()?;
        }
        Ok(())
    }

    pub(super) fn producer_rss(&self) -> Rss {
        self.producer.as_ref().map(Proc::rss).unwrap_or_default()
    }

    /// The largest consumer's memory.
    pub(super) fn consumer_rss(&self) -> Rss {
        self.consumers
            .iter()
            .map(Proc::rss)
            .max_by_key(|r| r.peak_kib)
            .unwrap_or_default()
    }

    /// Stops every process (SIGTERM, then SIGKILL) and removes the namespace and database.
    pub(super) async fn teardown(self, ctx: &Ctx<'_>) {
        let grace = Duration::from_secs(30);
        let mut stops = Vec::new();
        if let Some(producer) = self.producer {
            stops.push(producer.stop(grace));
        }
        for consumer in self.consumers {
            stops.push(consumer.stop(grace));
        }
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
