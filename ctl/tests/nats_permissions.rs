//! The least-privilege NATS users of `deploy/nats/permissions.conf` and NATS over TLS,
//! proven on a private nats-server: `codigo-ctl setup` (the real binary) as the ctl user,
//! then the real producer and consumer, with `CODIGO_ENSURE_TOPOLOGY=false`, as their own
//! users, a job end to end, and what each user must not be able to do.
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use clap::Parser;
use codigo_testkit::{InProcess, TestEnv};
use serde_json::{json, Value};
use uuid::Uuid;

/// The permissions name the default namespace's streams and subjects.
const NAMESPACE: &str = "codigo";
const TOKEN: &str = "permissions-token-000001";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A private nats-server with its own port and store, killed and removed on drop.
struct PrivateNats {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl PrivateNats {
    /// Starts `nats-server -c server.conf`; `body` is the config after `listen` and
    /// `jetstream`, `files` are written next to it, `env` is the server's environment.
    fn start(body: &str, files: &[(&str, String)], env: &[(&str, String)]) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("codigo-nats-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("server dir");
        for (name, content) in files {
            std::fs::write(dir.join(name), content).expect("server file");
        }
        // Paths in the config are absolute: nats-server reads them from its working directory.
        let body = body.replace("$DIR", &dir.display().to_string());
        let config = format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: \"{}\" }}\n{body}\n",
            dir.join("js").display()
        );
        std::fs::write(dir.join("server.conf"), config).expect("server.conf");
        let log = std::fs::File::create(dir.join("server.log")).expect("server log");
        let child = Command::new(codigo_testkit::nats_server_binary())
            .arg("-c")
            .arg(dir.join("server.conf"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server runs (apt-get install nats-server)");
        let mut server = Self { child, dir, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("nats-server exited with {status}:\n{}", server.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("nats-server did not listen on {port}:\n{}", server.log());
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How the three binaries reach NATS: one user each, or none (TLS test), plus extra flags.
struct Access {
    url: String,
    users: Option<Passwords>,
    tls_ca: Option<PathBuf>,
}

#[derive(Clone)]
struct Passwords {
    producer: String,
    consumer: String,
    ctl: String,
}

impl Passwords {
    fn new() -> Self {
        let p = || format!("pw-{}", Uuid::new_v4().simple());
        Self {
            producer: p(),
            consumer: p(),
            ctl: p(),
        }
    }

    fn server_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CODIGO_PRODUCER_NATS_PASSWORD", self.producer.clone()),
            ("CODIGO_CONSUMER_NATS_PASSWORD", self.consumer.clone()),
            ("CODIGO_CTL_NATS_PASSWORD", self.ctl.clone()),
        ]
    }
}

impl Access {
    /// NATS flags of one binary; `who` picks the user.
    fn flags(&self, who: &str) -> Vec<String> {
        let mut flags = vec![
            "--nats-url".to_owned(),
            self.url.clone(),
            "--namespace".to_owned(),
            NAMESPACE.to_owned(),
        ];
        if let Some(users) = &self.users {
            let password = match who {
                "codigo-producer" => &users.producer,
                "codigo-consumer" => &users.consumer,
                _ => &users.ctl,
            };
            flags.extend([
                "--nats-user".to_owned(),
                who.to_owned(),
                "--nats-password".to_owned(),
                password.clone(),
            ]);
        }
        if let Some(ca) = &self.tls_ca {
            flags.extend(["--nats-tls-ca".to_owned(), ca.display().to_string()]);
        }
        flags
    }
}

/// `codigo-ctl setup`, the real binary, as the ctl user (settings through the environment,
/// as the chart's setup hook passes them).
fn ctl_setup(access: &Access, database_url: &str) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_codigo-ctl"));
    command
        .arg("setup")
        .env_clear()
        .env("NATS_URL", &access.url)
        .env("CODIGO_NAMESPACE", NAMESPACE)
        .env("DATABASE_URL", database_url);
    if let Some(users) = &access.users {
        command
            .env("NATS_USER", "codigo-ctl")
            .env("NATS_PASSWORD", &users.ctl);
    }
    if let Some(ca) = &access.tls_ca {
        command.env("NATS_TLS_CA", ca);
    }
    let output = command.output().expect("codigo-ctl runs");
    assert!(
        output.status.success(),
        "codigo-ctl setup failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn start_producer(access: &Access, database_url: &str) -> InProcess {
    let mut args = vec![
        "codigo-producer".to_owned(),
        "--http-addr".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--database-url".to_owned(),
        database_url.to_owned(),
        "--api-keys".to_owned(),
        format!("perm:{TOKEN}"),
        "--ensure-topology".to_owned(),
        "false".to_owned(),
        "--publish-timeout-secs".to_owned(),
        "3".to_owned(),
    ];
    args.extend(access.flags("codigo-producer"));
    let config = codigo_producer::Config::try_parse_from(args).expect("producer flags");
    let app = codigo_producer::Application::build(config)
        .await
        .expect("producer starts");
    InProcess::spawn("producer", app.local_addr(), |stop| {
        app.run_until_stopped(stop)
    })
}

async fn start_consumer(access: &Access, database_url: &str) -> InProcess {
    let mut args = vec![
        "codigo-consumer".to_owned(),
        "--http-addr".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--database-url".to_owned(),
        database_url.to_owned(),
        "--webhook-signing-key".to_owned(),
        "permissions-signing-key-01".to_owned(),
        "--ensure-topology".to_owned(),
        "false".to_owned(),
        "--fetch-expires-ms".to_owned(),
        "1000".to_owned(),
        "--shutdown-timeout-secs".to_owned(),
        "5".to_owned(),
    ];
    args.extend(access.flags("codigo-consumer"));
    let config = codigo_consumer::Config::try_parse_from(args).expect("consumer flags");
    let app = codigo_consumer::Application::build(config)
        .await
        .expect("consumer starts");
    InProcess::spawn("consumer", app.local_addr(), |stop| {
        app.run_until_stopped(stop)
    })
}

async fn wait_until(what: &str, check: impl AsyncFnMut() -> bool) {
    assert!(eventually(check).await, "timed out waiting for {what}");
}

/// Polls `check` for up to 30 s.
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..600 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Waits for a service's readiness; on failure shows what the server refused.
async fn wait_ready(http: &reqwest::Client, service: &InProcess, name: &str, server: &PrivateNats) {
    assert!(
        eventually(async || ready(http, service).await).await,
        "{name} never became ready; nats-server says:\n{}",
        server.log()
    );
}

async fn ready(http: &reqwest::Client, service: &InProcess) -> bool {
    http.get(format!("http://{}/readyz", service.addr))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Submits a ledger job through the producer and waits for the consumer to record it.
async fn job_end_to_end(http: &reqwest::Client, producer: &InProcess, account: &str) {
    let response = http
        .post(format!("http://{}/v1/jobs", producer.addr))
        .bearer_auth(TOKEN)
        .json(&json!({"type": "ledger.post",
            "payload": {"account": account, "amount_cents": 4200, "currency": "EUR"}}))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let body: Value = response.json().await.expect("json");
    let id = body["id"].as_str().expect("id").to_owned();
    wait_until("the job to succeed", async || {
        let Ok(response) = http
            .get(format!("http://{}/v1/jobs/{id}", producer.addr))
            .bearer_auth(TOKEN)
            .send()
            .await
        else {
            return false;
        };
        let body: Value = response.json().await.unwrap_or_default();
        body["status"] == "succeeded"
    })
    .await;
}

/// A client of one user with short request timeouts, recording the server's errors (a
/// denied publish is reported asynchronously as a permissions violation).
async fn client_as(
    server: &PrivateNats,
    user: &str,
    password: &str,
) -> (async_nats::Client, Arc<Mutex<Vec<String>>>) {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let sink = errors.clone();
    let client =
        async_nats::ConnectOptions::with_user_and_password(user.to_owned(), password.to_owned())
            .request_timeout(Some(Duration::from_secs(2)))
            .event_callback(move |event| {
                let sink = sink.clone();
                async move {
                    if let async_nats::Event::ServerError(error) = event {
                        sink.lock().expect("errors").push(error.to_string());
                    }
                }
            })
            .connect(server.url())
            .await
            .expect("connects");
    (client, errors)
}

fn context(client: &async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client.clone())
}

async fn jobs_stream_messages(js: &jetstream::Context) -> u64 {
    let mut stream = js
        .get_stream("CODIGO_JOBS")
        .await
        .expect("CODIGO_JOBS exists");
    stream.info().await.expect("info").state.messages
}

#[tokio::test]
async fn least_privilege_users_run_the_pipeline_and_nothing_more() {
    let env = TestEnv::bare().await;
    let passwords = Passwords::new();
    let permissions = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/nats/permissions.conf"
    ))
    .expect("deploy/nats/permissions.conf");
    let server = PrivateNats::start(
        "include ./permissions.conf",
        &[("permissions.conf", permissions)],
        &passwords.server_env(),
    );
    let access = Access {
        url: server.url(),
        users: Some(passwords.clone()),
        tls_ca: None,
    };

    ctl_setup(&access, &env.database_url);
    let producer = start_producer(&access, &env.database_url).await;
    let consumer = start_consumer(&access, &env.database_url).await;
    let http = reqwest::Client::new();
    wait_ready(&http, &producer, "the producer", &server).await;
    wait_ready(&http, &consumer, "the consumer", &server).await;
    job_end_to_end(&http, &producer, "acct-permissions").await;
    let balance: i64 = sqlx::query_scalar(
        "SELECT balance_cents FROM account_balances WHERE account = 'acct-permissions'",
    )
    .fetch_one(&env.pool)
    .await
    .expect("balance");
    assert_eq!(balance, 4200);

    // With no worker, a job waits on the stream: something to purge.
    consumer.stop().await;
    let response = http
        .post(format!("http://{}/v1/jobs", producer.addr))
        .bearer_auth(TOKEN)
        .json(&json!({"type": "ledger.post", "payload": {"account": "a", "amount_cents": 1, "currency": "EUR"}}))
        .send()
        .await
        .expect("submit");
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    // Every allowed path was enough: the server refused nothing so far.
    let refused: Vec<String> = server
        .log()
        .lines()
        .filter(|l| l.contains("Violation"))
        .map(str::to_owned)
        .collect();
    assert!(
        refused.is_empty(),
        "the pipeline hit permission refusals:\n{}",
        refused.join("\n")
    );

    let (ctl, _) = client_as(&server, "codigo-ctl", &passwords.ctl).await;
    let ctl_js = context(&ctl);
    assert_eq!(jobs_stream_messages(&ctl_js).await, 1);

    // The consumer user cannot enqueue work, neither plainly nor through JetStream.
    let (worker, worker_errors) = client_as(&server, "codigo-consumer", &passwords.consumer).await;
    worker
        .publish("codigo.jobs.ledger.post", r#"{"forged": true}"#.into())
        .await
        .expect("publish queued");
    worker.flush().await.expect("flush");
    let forged = context(&worker)
        .publish("codigo.jobs.webhook.deliver", r#"{"forged": true}"#.into())
        .await;
    let acked = match forged {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(
        !acked,
        "the consumer user's JetStream publish to a job subject was stored"
    );
    wait_until("the permissions violation", async || {
        worker_errors.lock().expect("errors").iter().any(|e| {
            e.to_lowercase().contains("permissions violation") && e.contains("codigo.jobs.")
        })
    })
    .await;
    assert!(context(&worker).delete_stream("CODIGO_JOBS").await.is_err());

    // The producer user cannot delete or purge the work stream (nor the dead letters).
    let (gateway, _) = client_as(&server, "codigo-producer", &passwords.producer).await;
    let gateway_js = context(&gateway);
    assert!(
        gateway_js.delete_stream("CODIGO_JOBS").await.is_err(),
        "producer deleted the stream"
    );
    assert!(
        gateway_js.delete_stream("CODIGO_DLQ").await.is_err(),
        "producer deleted the DLQ"
    );
    let stream = gateway_js
        .get_stream("CODIGO_JOBS")
        .await
        .expect("producer reads stream info");
    assert!(stream.purge().await.is_err(), "producer purged the stream");
    assert!(
        gateway_js
            .create_stream(jetstream::stream::Config {
                name: "ROGUE".into(),
                subjects: vec!["rogue.>".into()],
                ..Default::default()
            })
            .await
            .is_err(),
        "producer created a stream"
    );

    // All still there: the job waits, the streams exist.
    assert_eq!(jobs_stream_messages(&ctl_js).await, 1);
    ctl_js
        .get_stream("CODIGO_DLQ")
        .await
        .expect("CODIGO_DLQ still exists");

    producer.stop().await;
    drop(server);
    env.cleanup().await;
}

/// A throwaway CA and a server certificate for 127.0.0.1 and localhost, as PEM files.
fn certificates() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "codigo test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let server_key = KeyPair::generate().expect("server key");
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    server
        .distinguished_name
        .push(DnType::CommonName, "codigo test nats");
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    (ca_cert.pem(), server_cert.pem(), server_key.serialize_pem())
}

#[tokio::test]
async fn every_binary_reaches_nats_over_tls() {
    let env = TestEnv::bare().await;
    let (ca, cert, key) = certificates();
    let server = PrivateNats::start(
        "tls {\n  cert_file: \"$DIR/server.pem\"\n  key_file: \"$DIR/server-key.pem\"\n  timeout: 2\n}",
        &[
            ("ca.pem", ca),
            ("server.pem", cert),
            ("server-key.pem", key),
        ],
        &[],
    );
    let access = Access {
        url: server.url(),
        users: None,
        tls_ca: Some(server.path("ca.pem")),
    };

    // Without the CA the server's certificate is not trusted.
    let mut untrusted = codigo_testkit::TestEnv::nats_args(&env);
    untrusted.nats_url = server.url();
    let refused = codigo_common::nats::connect(
        &untrusted,
        "tls-test",
        codigo_common::nats::InitialConnect::FailFast,
    )
    .await;
    assert!(refused.is_err(), "a client without the CA connected");
    let mut trusted = untrusted.clone();
    trusted.nats_tls_ca = Some(server.path("ca.pem"));
    codigo_common::nats::connect(
        &trusted,
        "tls-test",
        codigo_common::nats::InitialConnect::FailFast,
    )
    .await
    .expect("connects with NATS_TLS_CA");

    ctl_setup(&access, &env.database_url);
    let producer = start_producer(&access, &env.database_url).await;
    let consumer = start_consumer(&access, &env.database_url).await;
    let http = reqwest::Client::new();
    wait_ready(&http, &producer, "the producer", &server).await;
    wait_ready(&http, &consumer, "the consumer", &server).await;
    job_end_to_end(&http, &producer, "acct-tls").await;

    consumer.stop().await;
    producer.stop().await;
    drop(server);
    env.cleanup().await;
}
