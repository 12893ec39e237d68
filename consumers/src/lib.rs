//! Codigo workers: one durable pull consumer per job type, bounded concurrency, typed workers
//! whose outcomes map to ack, nak(delay) or term, and dead letters for what cannot succeed.
#![forbid(unsafe_code)]

pub mod advisories;
#[cfg(feature = "chaos")]
pub mod chaos;
pub mod config;
pub mod db_failure;
pub mod dead_letters;
pub mod events;
pub mod exhausted;
pub mod faults;
pub mod functions;
pub mod handlers;
pub mod http;
pub mod orphans;
pub mod pause;
pub mod retry;
pub mod runtime;
pub mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use codigo_common::app::Connections;
use codigo_common::nats;
use codigo_common::shutdown::Shutdown;
use codigo_common::{db, jetstream, telemetry};
use tokio::net::TcpListener;

pub use config::Config;

pub use codigo_common::app::StartError;

pub struct Application {
    listener: TcpListener,
    config: Config,
    job_types: Vec<&'static str>,
    connections: Connections,
    /// Workers given by the caller, served on top of CODIGO_JOB_TYPES.
    overrides: runtime::Runtime,
    overrides_error: Option<codigo_schemas::BadSchema>,
}

fn patient() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let job_types = config.validate().map_err(StartError::config)?;
        let connections = codigo_common::app::connect(&config.service, "codigo-consumer").await?;
        Ok(Self {
            listener: codigo_common::app::bind(config.http_addr).await?,
            config,
            job_types,
            connections,
            overrides: runtime::Runtime::new(),
            overrides_error: None,
        })
    }

    /// Serves kind `K` with `worker`: instead of the built-in worker of a registered kind, or
    /// in addition to CODIGO_JOB_TYPES for a kind of the caller's own.
    pub fn with_worker<K: codigo_schemas::JobKind>(
        mut self,
        worker: impl runtime::Worker<K>,
    ) -> Self {
        if let Err(error) = self.overrides.add_worker::<K>(worker) {
            self.overrides_error = Some(error);
        }
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Waits for Postgres and JetStream, runs the workers until `shutdown`, drains, exits.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> Result<(), StartError> {
        let Self {
            listener,
            config,
            job_types,
            connections:
                Connections {
                    names,
                    client,
                    pool,
                    marks,
                },
            overrides,
            overrides_error,
        } = self;
        if let Some(error) = overrides_error {
            return Err(StartError::config(handlers::SetupError::from(error)));
        }
        let mut job_types = job_types;
        job_types.extend(overrides.job_types());
        job_types.sort_unstable();
        job_types.dedup();
        let js = async_nats::jetstream::new(client.clone());
        let metrics = telemetry::metrics();
        let meters: BTreeMap<&'static str, Arc<events::Meters>> = job_types
            .iter()
            .map(|job_type| (*job_type, Arc::new(events::Meters::register(job_type))))
            .collect();
        events::register_process();

        let bound: Vec<(&'static str, Arc<AtomicBool>)> = job_types
            .iter()
            .map(|t| (*t, Arc::new(AtomicBool::new(false))))
            .collect();
        let probe = Arc::new(http::Probe {
            nats: client.clone(),
            pool: pool.clone(),
            bound: bound.clone(),
            metrics,
        });
        let http_stop = shutdown.clone();
        let http_server = tokio::spawn(async move {
            let served = axum::serve(listener, http::router(probe))
                .with_graceful_shutdown(async move { http_stop.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "health server failed");
            }
        });

        // Start-up waits for its dependencies instead of crash-looping on them.
        let ready = async {
            (|| db::check_migrated(&pool))
                .retry(patient())
                .when(|e| !matches!(e, db::DbError::NotMigrated { .. }))
                .notify(|error, wait| tracing::warn!(%error, ?wait, "waiting for Postgres"))
                .await?;
            (|| {
                jetstream::prepare_topology(
                    &js,
                    &names,
                    &config.service.jetstream,
                    job_types.clone(),
                )
            })
            .retry(patient())
            .notify(|error, wait| tracing::warn!(%error, ?wait, "waiting for JetStream"))
            .await
            .map_err(|e| StartError::Nats(nats::NatsError::Settings(e.to_string())))?;
            Ok::<(), StartError>(())
        };
        tokio::select! {
            result = ready => result?,
            () = shutdown.cancelled() => return Err(StartError::Interrupted),
        }

        let faults = faults::Faults::parse(&config.faults)
            .map_err(|e| StartError::config(config::ConfigError(e)))?;
        if faults.enabled() {
            tracing::warn!(
                ?faults,
                "FAULT INJECTION IS ON: this worker crashes and stalls on purpose"
            );
        }
        let keys = functions::SigningKeys::from(&config.signing);
        let webhook_settings = config.signing.webhook_signing_key.is_some().then(|| {
            handlers::webhook::WebhookSettings {
                signing_key: keys.current.clone(),
                previous_signing_key: keys.previous.clone(),
                allow_private: config.webhook_allow_private,
                timeout: config.webhook_timeout,
                max_per_host: config.webhook_max_per_host,
            }
        });
        let mut workers = handlers::runtime(
            handlers::HandlerSettings {
                pool: pool.clone(),
                faults,
                webhook: webhook_settings.clone(),
            },
            &job_types,
        )
        .map_err(StartError::config)?;
        workers.merge(overrides);
        let dead_letters = dead_letters::DeadLetters::new(js.clone(), names.clone());
        let shared = Arc::new(runtime::Shared {
            js: js.clone(),
            names: names.clone(),
            pool: pool.clone(),
            marks: marks.clone(),
            jetstream: config.service.jetstream.clone(),
            retry: retry::RetryPolicy {
                base: config.retry_base,
                max: config.retry_max,
            },
            concurrency: config.concurrency,
            fetch_expires: config.fetch_expires,
            pull_loops: config.pull_loops,
            dead_letters: dead_letters.clone(),
        });

        let drain_timeout = config.shutdown_timeout;
        let mut tasks = tokio::task::JoinSet::new();
        for puller in workers.pullers(&shared, &meters, &bound) {
            tasks.spawn(puller.run(shutdown.clone(), drain_timeout));
        }
        let exhausted = Arc::new(exhausted::ExhaustedJobs {
            js: js.clone(),
            names: names.clone(),
            pool: pool.clone(),
            dead_letters,
        });
        let advisories = Arc::new(advisories::AdvisoryWorker {
            js: js.clone(),
            names: names.clone(),
            exhausted: exhausted.clone(),
        });
        tasks.spawn(advisories.run(shutdown.clone()));
        let served = runtime::ServedTypes::default();
        for (job_type, meters) in &meters {
            served.insert(job_type, meters.clone());
        }
        let sweep = orphans::OrphanSweep {
            js: js.clone(),
            names: names.clone(),
            exhausted,
            served: served.clone(),
            interval: config.orphan_sweep,
        };
        tasks.spawn(sweep.run(shutdown.clone()));
        if config.serves_functions() {
            let functions = functions::Functions {
                shared: shared.clone(),
                keys,
                webhook: webhook_settings.clone(),
                drain_timeout,
                served: served.clone(),
            };
            let stop = shutdown.clone();
            let (js, names, args) = (js.clone(), names.clone(), config.service.jetstream.clone());
            tasks.spawn(async move {
                let opened = (|| codigo_common::declarations::Declarations::prepare(&js, &names, &args))
                    .retry(patient())
                    .notify(|error, wait| {
                        tracing::warn!(%error, ?wait, "cannot open the job-type bucket; retrying")
                    });
                tokio::select! {
                    Ok(declarations) = opened => functions.run(declarations, stop).await,
                    () = stop.cancelled() => {}
                }
            });
        }
        tasks.spawn(runtime::report_pending(shared, served, shutdown.clone()));
        tracing::info!(
            job_types = ?job_types,
            functions = config.serves_functions(),
            concurrency = config.concurrency,
            shutdown_budget = ?config.shutdown_budget(),
            "codigo-consumer running"
        );

        // Once stopping, the workers get what the shutdown budget leaves after the flush; a job
        // still settling then (Postgres hanging) is dropped unacknowledged and redelivered, so
        // that the pod is not killed before the acks of every other job have left.
        let budget = config.shutdown_budget();
        let flush_timeout = config.flush_timeout();
        let workers_deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(budget.saturating_sub(flush_timeout)).await;
        };
        tokio::pin!(workers_deadline);
        loop {
            tokio::select! {
                next = tasks.join_next() => if next.is_none() { break },
                () = &mut workers_deadline => {
                    tracing::error!(
                        ?budget,
                        "workers still busy at the end of the shutdown budget; dropping them, \
                         their jobs return after the ack wait (raise CODIGO_SHUTDOWN_TIMEOUT_SECS \
                         and the pod's grace period if this repeats)"
                    );
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        // Acks are fire-and-forget publishes: make sure the server has them before exiting.
        // Each step has its share of the flush margin; a pool whose connection hangs in a
        // query (the job dropped above) is not waited for.
        match tokio::time::timeout(flush_timeout / 2, client.flush()).await {
            Ok(Ok(())) => tracing::info!("acks and naks flushed to NATS"),
            Ok(Err(error)) => {
                tracing::warn!(%error, "flushing NATS on shutdown failed; unsent acks will be redelivered")
            }
            Err(_) => tracing::warn!(
                "flushing NATS on shutdown timed out; unsent acks will be redelivered"
            ),
        }
        let close = flush_timeout / 5;
        if tokio::time::timeout(close, http_server).await.is_err() {
            tracing::warn!("the health server did not stop in time; exiting anyway");
        }
        let closed = futures::future::join(pool.close(), marks.close());
        if tokio::time::timeout(close, closed).await.is_err() {
            tracing::warn!("Postgres connections did not close in time; exiting anyway");
        }
        tracing::info!("codigo-consumer stopped");
        Ok(())
    }
}
