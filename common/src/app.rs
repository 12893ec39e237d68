//! What every service binary does the same way: the errors of start-up, binding its HTTP
//! listener, and the life of `main` (telemetry, signals, build, serve until stopped, flush).
use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::config::{ServiceArgs, TelemetryArgs};
use crate::nats::InitialConnect;
use crate::shutdown::{self, Shutdown};
use crate::{db, names, nats, telemetry, Names};

/// Why a service did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The service's own settings, where checking them needs more than the flag parser.
    #[error(transparent)]
    Config(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Namespace(#[from] names::InvalidNamespace),
    #[error(transparent)]
    Nats(#[from] nats::NatsError),
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("cannot listen on {addr}: {source}; is the port free (CODIGO_HTTP_ADDR)?")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("stopped before start-up finished")]
    Interrupted,
}

impl StartError {
    pub fn config(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Config(Box::new(error))
    }
}

/// What a service holds of its servers: its NATS names, a NATS client connecting in the
/// background and a lazy Postgres pool, so that start-up never waits for either.
pub struct Connections {
    pub names: Names,
    pub client: async_nats::Client,
    pub pool: sqlx::PgPool,
    /// For job-state marks that need no durable commit ([`db::lazy_marks_pool`]).
    pub marks: sqlx::PgPool,
}

/// Connects a service to NATS (as `client_name`) and Postgres with its shared settings.
pub async fn connect(service: &ServiceArgs, client_name: &str) -> Result<Connections, StartError> {
    let names = Names::new(&service.nats.namespace)?;
    let client = nats::connect(&service.nats, client_name, InitialConnect::Background).await?;
    let pool = db::lazy_pool(&service.database)?;
    let marks = db::lazy_marks_pool(&service.database)?;
    Ok(Connections {
        names,
        client,
        pool,
        marks,
    })
}

/// Binds the service's HTTP listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Why a service binary ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError<E: std::error::Error + 'static> {
    #[error("cannot start the async runtime: {0}; check the process's thread and file limits")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
    #[error(transparent)]
    Service(E),
}

/// The life of a service binary: telemetry set up, the service `serve` starts run until it
/// ends or a signal stops it, its failure logged once, buffered traces flushed.
pub fn main<E, Fut>(
    service: &'static str,
    telemetry: &TelemetryArgs,
    serve: impl FnOnce(Shutdown) -> Fut,
) -> Result<(), RunError<E>>
where
    E: std::error::Error + 'static,
    Fut: Future<Output = Result<(), E>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    runtime.block_on(async {
        let telemetry = telemetry::init(service, telemetry)?;
        let result = serve(shutdown::on_signals()).await;
        if let Err(error) = &result {
            tracing::error!(%error, "{service} failed");
        }
        telemetry.shutdown();
        result.map_err(RunError::Service)
    })
}

/// `fn main` of a service binary: parses `$config` (a `clap::Parser` with a `service:
/// ServiceArgs` field), then builds `$app` and runs it until stopped, under [`main`](crate::app::main).
/// The binary keeps its own global allocator and needs `anyhow` and `clap`.
#[macro_export]
macro_rules! service_main {
    ($service:literal, $config:ty, $app:ty) => {
        fn main() -> ::anyhow::Result<()> {
            let config = <$config as ::clap::Parser>::parse();
            let telemetry = config.service.telemetry.clone();
            $crate::app::main($service, &telemetry, move |shutdown| async move {
                <$app>::build(config)
                    .await?
                    .run_until_stopped(shutdown)
                    .await
            })?;
            Ok(())
        }
    };
}
