//! The least-privilege NATS users of `deploy/nats/permissions.conf` and NATS over TLS,
//! proven on a private nats-server: `codigo-ctl setup` (the real binary) as the ctl user,
//! then the real producer and consumer, with `CODIGO_ENSURE_TOPOLOGY=false`, as their own
//! users, a job end to end, and what each user must not be able to do.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use codigo_testkit::{flags, NatsServer, Service, TestConsumer, TestEnv, TestProducer};
use serde_json::{json, Value};
use uuid::Uuid;

/// The permissions name the default namespace's streams and subjects.
const NAMESPACE: &str = "codigo";
const TOKEN: &str = "permissions-token-000001";

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
    /// NATS flags of one binary, as one line; `who` picks the user.
    fn flags(&self, who: &str) -> String {
        let mut flags = format!("--nats-url {} --namespace {NAMESPACE}", self.url);
        if let Some(users) = &self.users {
            let password = match who {
                "codigo-producer" => &users.producer,
                "codigo-consumer" => &users.consumer,
                _ => &users.ctl,
            };
            flags.push_str(&format!(" --nats-user {who} --nats-password {password}"));
        }
        if let Some(ca) = &self.tls_ca {
            flags.push_str(&format!(" --nats-tls-ca {}", ca.display()));
        }
        flags
    }
}

/// `codigo-ctl setup`, the real binary, as the ctl user (settings through the environment,
/// as the chart's setup hook passes them).
fn ctl_setup(access: &Access, database_url: &str) {
    let mut command = codigo_testkit::command("codigo-ctl");
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

async fn start_producer(access: &Access, database_url: &str) -> TestProducer {
    let settings = format!(
        "--http-addr 127.0.0.1:0 --database-url {database_url} --api-keys perm:{TOKEN} \
         --ensure-topology false --publish-timeout-secs 3 {}",
        access.flags("codigo-producer")
    );
    TestProducer::from_flags(&flags(&settings)).await
}

async fn start_consumer(access: &Access, database_url: &str) -> TestConsumer {
    let settings = format!(
        "--http-addr 127.0.0.1:0 --database-url {database_url} \
         --webhook-signing-key permissions-signing-key-01 --ensure-topology false \
         --fetch-expires-ms 1000 --shutdown-timeout-secs 5 {}",
        access.flags("codigo-consumer")
    );
    TestConsumer::from_flags(&flags(&settings)).await
}

/// `codigo-ctl setup`, then the producer and the consumer, ready.
async fn start_pipeline(
    env: &TestEnv,
    access: &Access,
    server: &NatsServer,
) -> (TestProducer, TestConsumer, reqwest::Client) {
    ctl_setup(access, &env.database_url);
    let producer = start_producer(access, &env.database_url).await;
    let consumer = start_consumer(access, &env.database_url).await;
    let http = reqwest::Client::new();
    wait_ready(&http, &producer, "the producer", server).await;
    wait_ready(&http, &consumer, "the consumer", server).await;
    (producer, consumer, http)
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
async fn wait_ready(
    http: &reqwest::Client,
    service: &impl Service,
    name: &str,
    server: &NatsServer,
) {
    assert!(
        eventually(async || ready(http, service).await).await,
        "{name} never became ready; nats-server says:\n{}",
        server.log()
    );
}

async fn ready(http: &reqwest::Client, service: &impl Service) -> bool {
    http.get(service.url("/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Submits a ledger job through the producer and waits for the consumer to record it.
async fn job_end_to_end(http: &reqwest::Client, producer: &TestProducer, account: &str) {
    submit_and_wait(http, producer, account, None).await;
}

/// The same for a job delayed by `delay` seconds, waiting in the schedules stream first.
async fn submit_and_wait(
    http: &reqwest::Client,
    producer: &TestProducer,
    account: &str,
    delay: Option<f64>,
) {
    let mut job = json!({"type": "ledger.post",
        "payload": {"account": account, "amount_cents": 4200, "currency": "EUR"}});
    if let Some(delay) = delay {
        job["delay"] = json!(delay);
    }
    let response = http
        .post(format!("http://{}/v1/jobs", producer.addr))
        .bearer_auth(TOKEN)
        .json(&job)
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
    server: &NatsServer,
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
    let server = NatsServer::start_with(
        "include ./permissions.conf",
        &[("permissions.conf", permissions)],
        &passwords.server_env(),
    );
    let access = Access {
        url: server.url(),
        users: Some(passwords.clone()),
        tls_ca: None,
    };

    let (producer, consumer, http) = start_pipeline(&env, &access, &server).await;
    job_end_to_end(&http, &producer, "acct-permissions").await;
    // A delayed job: the gateway writes the schedules stream, the server moves it over.
    submit_and_wait(&http, &producer, "acct-delayed", Some(1.0)).await;
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
    let server = NatsServer::start_with(
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

    let (producer, consumer, http) = start_pipeline(&env, &access, &server).await;
    job_end_to_end(&http, &producer, "acct-tls").await;

    consumer.stop().await;
    producer.stop().await;
    drop(server);
    env.cleanup().await;
}
