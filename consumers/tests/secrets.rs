//! The real `codigo-consumer` binary never writes its secrets (NATS password, database
//! password, webhook signing key) to its logs, `/readyz` or `/metrics`, on failing paths
//! and while delivering webhooks.
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use codigo_testkit::TestEnv;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn scratch_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("codigo-{what}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A private nats-server with one user, killed and removed on drop.
struct PrivateNats {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl PrivateNats {
    fn start(user: &str, password: &str) -> Self {
        let port = free_port();
        let dir = scratch_dir("nats");
        let child = Command::new(codigo_testkit::nats_server_binary())
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("js"))
            .args(["--user", user, "--pass", password])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server runs (apt-get install nats-server)");
        let server = Self { child, dir, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("private nats-server did not start on port {port}");
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The real binary, its output in files (a pipe nobody reads could stall it).
struct Consumer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Consumer {
    fn start(env: &[(&str, String)]) -> Self {
        let dir = scratch_dir("consumer");
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_codigo-consumer"))
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("CODIGO_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "trace")
            .stdout(std::fs::File::create(dir.join("stdout")).expect("stdout"))
            .stderr(std::fs::File::create(dir.join("stderr")).expect("stderr"))
            .spawn()
            .expect("codigo-consumer starts");
        Self { child, dir, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn output(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}", read("stdout"), read("stderr"))
    }

    async fn wait_for_log(&self, text: &str) {
        for _ in 0..400 {
            if self.output().contains(text) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("codigo-consumer never logged {text:?}:\n{}", self.output());
    }

    /// SIGTERM, a graceful stop, then everything it wrote.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.output();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "codigo-consumer did not stop on SIGTERM:\n{}",
            self.output()
        );
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{what} leaks {secret:?}:\n{text}");
    }
}

async fn get_text(http: &reqwest::Client, url: &str) -> String {
    for _ in 0..200 {
        if let Ok(response) = http.get(url).send().await {
            let status = response.status();
            return format!("{status} {}", response.text().await.unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered");
}

#[tokio::test]
async fn failing_dependencies_do_not_leak_credentials() {
    let unique = Uuid::new_v4().simple().to_string();
    let nats_password = format!("nats-password-{unique}");
    let db_password = format!("db-password-{unique}");
    let signing_key = format!("signing-key-{unique}");
    let nats = PrivateNats::start("codigo", &format!("right-{unique}"));

    let consumer = Consumer::start(&[
        ("NATS_URL", format!("nats://127.0.0.1:{}", nats.port)),
        ("NATS_USER", "codigo".to_owned()),
        ("NATS_PASSWORD", nats_password.clone()),
        (
            "DATABASE_URL",
            format!("postgres://codigo_nobody:{db_password}@127.0.0.1:5432/codigo_nowhere"),
        ),
        ("CODIGO_NAMESPACE", format!("t{}", &unique[..12])),
        ("CODIGO_WEBHOOK_SIGNING_KEY", signing_key.clone()),
    ]);
    let http = reqwest::Client::new();
    let ready = get_text(&http, &consumer.url("/readyz")).await;
    assert!(ready.starts_with("503"), "{ready}");
    consumer.wait_for_log("waiting for Postgres").await;
    consumer.wait_for_log("uthorization").await;
    let metrics = get_text(&http, &consumer.url("/metrics")).await;
    assert!(metrics.contains("codigo_consumer_acks_total"), "{metrics}");
    let secrets = [
        nats_password.as_str(),
        db_password.as_str(),
        signing_key.as_str(),
    ];
    assert_no_secret(
        "/readyz and /metrics",
        &format!("{ready}\n{metrics}"),
        &secrets,
    );

    let logs = consumer.stop();
    assert_no_secret("consumer logs", &logs, &secrets);
}

/// A webhook target that fails the first delivery (a retry, logged) and takes the next.
async fn flaky_target() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 16 * 1024];
                let _ = socket.read(&mut buffer).await;
                let status = if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let reply =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = socket.write_all(reply.as_bytes()).await;
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn signing_key_stays_out_of_logs_while_delivering_webhooks() {
    let env = TestEnv::new().await;
    let unique = Uuid::new_v4().simple().to_string();
    let signing_key = format!("signing-key-{unique}");
    let (target, hits) = flaky_target().await;

    let mut vars = env.env_vars();
    vars.retain(|(name, _)| *name != "LOG_FORMAT");
    vars.extend([
        ("CODIGO_WEBHOOK_SIGNING_KEY", signing_key.clone()),
        ("CODIGO_WEBHOOK_ALLOW_PRIVATE", "true".to_owned()),
        ("CODIGO_JOB_TYPES", "webhook.deliver".to_owned()),
        ("CODIGO_RETRY_BASE_MS", "50".to_owned()),
        ("CODIGO_RETRY_MAX_SECS", "1".to_owned()),
        ("CODIGO_MAX_DELIVER", "4".to_owned()),
        ("CODIGO_ACK_WAIT_SECS", "5".to_owned()),
        ("CODIGO_BACKOFF_SECS", "1".to_owned()),
        ("CODIGO_FETCH_EXPIRES_MS", "1000".to_owned()),
        ("CODIGO_SHUTDOWN_TIMEOUT_SECS", "5".to_owned()),
    ]);
    let consumer = Consumer::start(&vars);

    let id = Uuid::now_v7();
    let envelope = json!({
        "id": id, "type": "webhook.deliver", "tenant": "acme",
        "created_at": "2026-01-02T03:04:05Z",
        "payload": {"url": format!("http://{target}/hook"), "body": {"order": 7},
                    "headers": {"X-Tenant-Ref": "acme-7"}}
    });
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id.to_string().as_str());
    env.js
        .publish_with_headers(
            env.names.job_subject("webhook.deliver"),
            headers,
            serde_json::to_vec(&envelope).expect("json").into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");

    env.eventually(
        "the webhook to be delivered",
        Duration::from_secs(30),
        || async {
            sqlx::query_scalar::<_, String>("SELECT status FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(&env.pool)
                .await
                .ok()
                .flatten()
                .as_deref()
                == Some("succeeded")
        },
    )
    .await;
    assert!(hits.load(Ordering::SeqCst) >= 2, "a retry happened first");
    let metrics = get_text(&reqwest::Client::new(), &consumer.url("/metrics")).await;
    let logs = consumer.stop();
    assert!(
        logs.contains("job will be retried"),
        "the failed attempt was logged:\n{logs}"
    );
    assert_no_secret(
        "consumer logs and /metrics",
        &format!("{logs}\n{metrics}"),
        &[&signing_key],
    );
    env.cleanup().await;
}
