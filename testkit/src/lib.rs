//! Isolation for tests against real NATS and Postgres: every `TestEnv` gets its own NATS
//! namespace (streams, subjects, consumers) and its own freshly migrated database, and removes
//! both when dropped. Public so that users can test their own handlers the same way.
#![forbid(unsafe_code)]

pub mod process;

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
fn server_url() -> String {
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
        let server = server_url();
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

    /// Publishes `count` ledger.post jobs of 1 cent to `account` straight to the work stream,
    /// each stored before the next; returns their ids.
    pub async fn publish_ledger_jobs(&self, account: &str, count: usize) -> Vec<uuid::Uuid> {
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let id = uuid::Uuid::now_v7();
            let envelope = serde_json::json!({
                "id": id.to_string(),
                "type": "ledger.post",
                "payload": {"account": account, "amount_cents": 1, "currency": "EUR"},
                "created_at": time::OffsetDateTime::now_utc()
                    .format(&time::format_description::well_known::Rfc3339)
                    .expect("format"),
                "tenant": "test",
            });
            self.js
                .send_publish(
                    self.names.job_subject("ledger.post"),
                    async_nats::jetstream::message::PublishMessage::build()
                        .payload(serde_json::to_vec(&envelope).expect("json").into())
                        .message_id(id.to_string()),
                )
                .await
                .expect("publish")
                .await
                .expect("stored");
            ids.push(id);
        }
        ids
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
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(client) = async_nats::connect(nats_url()).await {
                    let js = async_nats::jetstream::new(client);
                    codigo_common::jetstream::delete_topology(&js, &names).await;
                }
                drop_database(&database).await;
            });
        })
        .join();
    }
}

async fn drop_database(database: &str) {
    if let Ok(mut admin) = PgConnection::connect(&format!("{}/postgres", server_url())).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}

/// A service (gateway or consumer) started inside the test process: where it listens, and
/// how to stop it as Kubernetes stops a pod (the shutdown signal, then time to drain).
pub struct InProcess {
    pub addr: std::net::SocketAddr,
    shutdown: codigo_common::shutdown::Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl InProcess {
    /// Runs `run` (an application's `run_until_stopped`) on a task of its own; the task
    /// panics, failing the test, if the service stops with an error.
    pub fn spawn<F, Fut, E>(name: &'static str, addr: std::net::SocketAddr, run: F) -> Self
    where
        F: FnOnce(codigo_common::shutdown::Shutdown) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let shutdown = codigo_common::shutdown::Shutdown::new();
        let running = run(shutdown.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = running.await {
                panic!("{name} failed: {error}");
            }
        });
        Self {
            addr,
            shutdown,
            task,
        }
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits (30 s at most: on a loaded machine JetStream can take seconds to answer) until
    /// `GET /readyz` answers 200.
    pub async fn wait_ready(&self) {
        for _ in 0..600 {
            if self.ready().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the service at {} never became ready", self.addr);
    }

    async fn ready(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut stream) = tokio::net::TcpStream::connect(self.addr).await else {
            return false;
        };
        let request = format!(
            "GET /readyz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        );
        if stream.write_all(request.as_bytes()).await.is_err() {
            return false;
        }
        let mut status_line = [0u8; 12];
        stream.read_exact(&mut status_line).await.is_ok() && &status_line[9..12] == b"200"
    }

    /// Signals shutdown and waits for the service to drain and stop (30 s at most).
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("stops within its drain timeout")
            .expect("service task");
    }
}
