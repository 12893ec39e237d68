//! The test harness, against real NATS and Postgres: every `TestEnv` gets its own NATS
//! namespace (streams, subjects, consumers) and its own freshly migrated database, and removes
//! both when dropped. On top of it: the services in-process (`TestProducer`, `TestConsumer`,
//! behind the `producer` and `consumer` features), the real binaries as child processes
//! (`TestEnv::spawn_binary`, `ChildProcess`), private nats-servers (`NatsServer`) and
//! HTTP targets. Public so that users can test their own handlers the same way.
#![forbid(unsafe_code)]

#[cfg(feature = "proptest")]
pub mod arbitrary;
mod binary;
mod child;
#[cfg(feature = "consumer")]
mod consumer;
pub mod http;
mod in_process;
mod jobs;
mod nats_server;
pub mod process;
#[cfg(feature = "producer")]
mod producer;
mod scratch;
mod secrets;
mod targets;
pub mod webhooks;
#[cfg(feature = "consumer")]
mod workers;

pub use binary::{binary_dir, binary_dir_holding, binary_path, command, command_with_only};
pub use child::{ChildProcess, Exited};
#[cfg(feature = "consumer")]
pub use consumer::{TestConsumer, SHORT_RETRIES};
pub use in_process::{metric_value, ready, scrape, wait_ready, InProcess, Service};
pub use jobs::{envelope, header, id_of, ledger_job, ledger_payload, stored_envelopes};
pub use nats_server::NatsServer;
#[cfg(feature = "producer")]
pub use producer::TestProducer;
pub use scratch::{free_port, ScratchDir};
pub use secrets::{assert_no_secret, unique_secrets};
pub use targets::{respond_with, serve};
#[cfg(feature = "consumer")]
pub use workers::AlwaysRetry;

/// Command-line flags written as one line, split at whitespace: `flags("--max-deliver 3")`.
pub fn flags(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

use std::time::Duration;

use codigo_common::config::{DatabaseArgs, JetStreamArgs, NatsArgs};
use codigo_common::Names;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};

/// Server URLs from the environment, as `make test` sets them.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// The oldest nats-server the tests accept: the pinned release of deploy/nats/requirements.txt,
/// which `make test` starts when the server at `NATS_URL` is older.
pub const MIN_NATS_SERVER: (u64, u64, u64) = (2, 12, 0);

/// The nats-server binary for tests that start private servers: `CODIGO_NATS_SERVER` (set by
/// `make test` to the pinned release), else the first `nats-server` on `PATH`.
pub fn nats_server_binary() -> String {
    std::env::var("CODIGO_NATS_SERVER").unwrap_or_else(|_| "nats-server".into())
}

/// Panics unless `client` talks to a server at least [`MIN_NATS_SERVER`]: a test passing on an
/// older server proves nothing about the one we ship.
pub fn assert_current_server(client: &async_nats::Client) {
    let version = client.server_info().version;
    let parsed: Vec<u64> = version
        .split(['.', '-'])
        .take(3)
        .map(|part| part.parse().unwrap_or(0))
        .collect();
    let have = (
        parsed.first().copied().unwrap_or(0),
        parsed.get(1).copied().unwrap_or(0),
        parsed.get(2).copied().unwrap_or(0),
    );
    assert!(
        have >= MIN_NATS_SERVER,
        "the NATS server at {} is {version}, older than the {}.{}.{} the project ships: run the tests \
         through `make test`, which starts the pinned server (deploy/nats/requirements.txt)",
        nats_url(),
        MIN_NATS_SERVER.0,
        MIN_NATS_SERVER.1,
        MIN_NATS_SERVER.2,
    );
}

/// The Postgres server tests create their databases on (no database name in it).
pub fn postgres_server_url() -> String {
    std::env::var("CODIGO_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
        .trim_end_matches('/')
        .to_owned()
}

pub struct TestEnv {
    pub names: Names,
    pub database_url: String,
    pub database: String,
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    cleaned: bool,
}

impl TestEnv {
    /// A namespace and database of its own, migrated, with streams and consumers for every
    /// registered job type.
    pub async fn new() -> Self {
        let env = Self::bare().await;
        codigo_common::db::migrate(&env.pool)
            .await
            .expect("migrations apply");
        codigo_common::jetstream::ensure_topology(
            &env.js,
            &env.names,
            &env.jetstream_args(),
            ["ledger.post", "webhook.deliver"],
        )
        .await
        .expect("topology");
        env
    }

    /// A namespace and an empty database, nothing created in either.
    pub async fn bare() -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let namespace = format!("t{}", &suffix[..12]);
        let database = format!("codigo_test_{}", &suffix[..16]);
        let server = postgres_server_url();
        let mut admin = PgConnection::connect(&format!("{server}/postgres"))
            .await
            .expect("Postgres reachable for tests (start it with `make services`)");
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let database_url = format!("{server}/{database}");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(&database_url)
            .await
            .expect("connect test database");
        let nats = async_nats::connect(nats_url())
            .await
            .expect("NATS reachable for tests (start it with `make services`)");
        assert_current_server(&nats);
        let js = async_nats::jetstream::new(nats.clone());
        Self {
            names: Names::new(&namespace).expect("valid namespace"),
            database_url,
            database,
            pool,
            nats,
            js,
            cleaned: false,
        }
    }

    pub fn nats_args(&self) -> NatsArgs {
        NatsArgs {
            nats_url: nats_url(),
            nats_creds: None,
            nats_user: None,
            nats_password: None,
            nats_nkey_seed_file: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            namespace: self.names.namespace().to_owned(),
        }
    }

    pub fn database_args(&self) -> DatabaseArgs {
        DatabaseArgs {
            database_url: self.database_url.clone(),
            db_max_connections: 8,
        }
    }

    /// Short timers so that retry paths finish within a test.
    pub fn jetstream_args(&self) -> JetStreamArgs {
        JetStreamArgs {
            duplicate_window: Duration::from_secs(120),
            stream_max_messages: 1_000_000,
            stream_max_bytes: 64 * 1024 * 1024,
            stream_replicas: 1,
            dlq_max_age: Duration::from_secs(86_400),
            dlq_max_bytes: 64 * 1024 * 1024,
            dlq_max_messages: 1_000_000,
            advisories_max_bytes: 16 * 1024 * 1024,
            advisories_max_messages: 100_000,
            max_deliver: 4,
            ack_wait: Duration::from_secs(5),
            backoff: vec![],
            ensure_topology: true,
            max_ack_pending: 10_000,
        }
    }

    /// Command line of a service started in the test process (`binary` is its argv[0]): a free
    /// port, this test's NATS namespace and database, then `extra`.
    pub fn service_args(&self, binary: &str, extra: &[&str]) -> Vec<String> {
        [
            binary,
            "--http-addr",
            "127.0.0.1:0",
            "--nats-url",
            &nats_url(),
            "--namespace",
            self.names.namespace(),
            "--database-url",
            &self.database_url,
        ]
        .iter()
        .chain(extra)
        .map(|arg| (*arg).to_owned())
        .collect()
    }

    /// Environment variables that point a child process of ours at this test's namespace.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("NATS_URL", nats_url()),
            ("DATABASE_URL", self.database_url.clone()),
            ("CODIGO_NAMESPACE", self.names.namespace().to_owned()),
            ("LOG_FORMAT", "json".into()),
        ]
    }

    /// Waits until `check` returns true, polling; panics with `what` after `timeout`.
    pub async fn eventually<F, Fut>(&self, what: &str, timeout: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if check().await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Removes the namespace's streams and drops the database.
    pub async fn cleanup(mut self) {
        self.pool.close().await;
        codigo_common::jetstream::delete_topology(&self.js, &self.names).await;
        drop_database(&self.database).await;
        self.cleaned = true;
    }
}

impl Drop for TestEnv {
    /// A test that panicked before `cleanup` still leaves nothing behind.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let names = self.names.clone();
        let database = self.database.clone();
        run_blocking(async move {
            if let Ok(client) = async_nats::connect(nats_url()).await {
                let js = async_nats::jetstream::new(client);
                codigo_common::jetstream::delete_topology(&js, &names).await;
            }
            drop_database(&database).await;
        });
    }
}

/// Runs `cleanup` to its end on a thread and runtime of its own: for `Drop`, which may run
/// inside a runtime (where blocking on one is not allowed) or after a panic.
pub fn run_blocking<F>(cleanup: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(cleanup);
        }
    })
    .join();
}

async fn drop_database(database: &str) {
    if let Ok(mut admin) =
        PgConnection::connect(&format!("{}/postgres", postgres_server_url())).await
    {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}
