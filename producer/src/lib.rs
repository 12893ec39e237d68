//! Codigo ingest gateway: an axum service that validates jobs against their JSON Schemas and
//! answers `202` only once JetStream has stored them.
#![forbid(unsafe_code)]

pub mod auth;
pub mod body;
pub mod callbacks;
pub mod cloudevents;
pub mod config;
pub mod events;
pub mod http;
pub mod ingest;
pub mod problem;
pub mod publish;
pub mod queued;
pub mod recurring;
pub mod schedule;
mod serve;
pub mod store;
pub mod waiters;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use codigo_common::declarations::Declarations;
use codigo_common::shutdown::Shutdown;
use codigo_common::{jetstream, telemetry, Names};
use codigo_schemas::Catalog;
use tokio::net::TcpListener;

pub use codigo_common::app::StartError;
pub use config::Config;

pub struct Application {
    listener: TcpListener,
    state: Arc<http::AppState>,
    client: async_nats::Client,
    shutdown_timeout: Duration,
    /// Stops the background tasks (following the job-type bucket) once serving ends.
    background: Shutdown,
}

impl Application {
    /// Validates the configuration, connects (NATS in the background) and binds the listener.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let keys = config.api_keys().map_err(StartError::config)?;
        if keys.is_none() {
            tracing::warn!("CODIGO_AUTH=disabled: every caller is accepted as tenant `local`; never run this way outside a laptop");
        }
        let codigo_common::app::Connections {
            names,
            client,
            pool,
            marks,
        } = codigo_common::app::connect(&config.service, "codigo-producer").await?;
        let publisher =
            publish::Publisher::new(client.clone(), names.clone(), config.publish_timeouts());

        let topology_ready = Arc::new(AtomicBool::new(false));
        let catalog = Arc::new(Catalog::new());
        let declarations = Arc::new(OnceLock::new());
        let background = Shutdown::new();
        spawn_topology_setup(
            client.clone(),
            names,
            config.service.jetstream.clone(),
            topology_ready.clone(),
            Followed {
                catalog: catalog.clone(),
                declarations: declarations.clone(),
                shutdown: background.clone(),
            },
        );

        let listener = codigo_common::app::bind(config.http_addr).await?;
        let waiters = waiters::Waiters::start(pool.clone(), config.max_waiting_requests);
        codigo_common::metric::describe(events::METRICS);
        let state = Arc::new(http::AppState {
            ingest: ingest::Ingest::new(
                publisher,
                queued::QueuedJobs::start(marks),
                ingest::Limits {
                    max_batch_items: config.max_batch_items,
                    max_delay: config.max_delay,
                },
                catalog.clone(),
            ),
            keys,
            pool,
            metrics: telemetry::metrics(),
            max_body_bytes: config.max_body_bytes,
            request_read_timeout: config.request_read_timeout(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests)),
            topology_ready,
            catalog,
            declarations,
            waiters,
        });
        Ok(Self {
            listener,
            state,
            client,
            shutdown_timeout: config.shutdown_timeout,
            background,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `shutdown` fires, then lets in-flight requests finish (bounded by the
    /// shutdown timeout) and flushes NATS.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> Result<(), StartError> {
        tracing::info!(addr = %self.local_addr(), "codigo-producer listening");
        let header_read_timeout = self.state.request_read_timeout;
        let waiters = self.state.waiters.clone();
        let draining = shutdown.clone();
        tokio::spawn(async move {
            draining.cancelled().await;
            waiters.stop();
        });
        tokio::spawn(recurring::run_ticks(
            self.state.pool.clone(),
            self.state.ingest.clone(),
            self.background.clone(),
        ));
        tokio::spawn(callbacks::run_callbacks(
            self.state.pool.clone(),
            self.state.ingest.clone(),
            self.background.clone(),
        ));
        let router = http::router(self.state);
        let drain_deadline = shutdown.clone();
        let server = serve::serve(self.listener, router, header_read_timeout, shutdown);
        let timeout = self.shutdown_timeout;
        tokio::select! {
            () = server => {}
            () = async move {
                drain_deadline.cancelled().await;
                tokio::time::sleep(timeout).await;
            } => tracing::warn!("in-flight requests did not finish within the shutdown timeout"),
        }
        self.background.cancel();
        codigo_common::nats::flush(&self.client).await;
        tracing::info!("codigo-producer stopped");
        Ok(())
    }
}

/// Where the declared job types go once the job-type bucket is open.
struct Followed {
    catalog: Arc<Catalog>,
    declarations: Arc<OnceLock<Declarations>>,
    shutdown: Shutdown,
}

/// Creates or updates the streams, retrying until NATS answers; readiness waits for it. Then
/// follows the declared job types for as long as the gateway serves.
fn spawn_topology_setup(
    client: async_nats::Client,
    names: Names,
    args: codigo_common::config::JetStreamArgs,
    ready: Arc<AtomicBool>,
    followed: Followed,
) {
    tokio::spawn(async move {
        let js = async_nats::jetstream::new(client);
        let patiently = || {
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .without_max_times()
        };
        let setup = || async {
            if args.ensure_topology {
                return jetstream::prepare_topology(&js, &names, &args, []).await;
            }
            // Where `codigo-ctl setup` owns the topology, the gateway's NATS user may read the
            // work stream's info and nothing else (deploy/nats/permissions.conf).
            let stream = names.jobs_stream();
            js.get_stream(&stream)
                .await
                .map(drop)
                .map_err(|source| jetstream::SetupError::Lookup { stream, source })
        };
        let result = setup
            .retry(patiently())
            .notify(|error, wait| tracing::warn!(%error, ?wait, "stream set-up failed; retrying"))
            .await;
        if result.is_ok() {
            ready.store(true, Ordering::Relaxed);
        }
        let opened = (|| Declarations::prepare(&js, &names, &args))
            .retry(patiently())
            .notify(|error, wait| {
                tracing::warn!(%error, ?wait, "cannot open the job-type bucket; retrying")
            });
        let declarations = tokio::select! {
            opened = opened => opened,
            () = followed.shutdown.cancelled() => return,
        };
        let Ok(declarations) = declarations else {
            return;
        };
        let _ = followed.declarations.set(declarations.clone());
        let (changed, _) = tokio::sync::watch::channel(0);
        declarations
            .follow(followed.catalog, changed, followed.shutdown)
            .await;
    });
}
