//! Webhook deliveries against real NATS and Postgres: Standard Webhooks signatures checked with
//! the official `standardwebhooks` library, tenant isolation, key rotation, and a delivered
//! webhook never POSTed again (failed record, replay, resubmission).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use bytes::Bytes;
use codigo_common::webhook_secret::TenantSecret;
use codigo_testkit::webhooks::verifies;
use codigo_testkit::{flags, serve, TestConsumer, TestEnv};
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const SIGNING_KEY: &str = "webhooks-test-master-key-01";
const PREVIOUS_KEY: &str = "webhooks-test-master-key-00";
const JOB_TYPE: &str = "webhook.deliver";

async fn start_consumer(env: &TestEnv, extra: &[&str]) -> TestConsumer {
    let settings = format!(
        "--webhook-signing-key {SIGNING_KEY} --job-types {JOB_TYPE} --webhook-allow-private \
         --retry-base-ms 50 --retry-max-secs 1 --ack-wait-secs 5"
    );
    TestConsumer::spawn(env, &[&flags(&settings), extra].concat()).await
}

/// A receiver that records every request and answers 200.
#[derive(Default)]
struct Target {
    seen: Mutex<Vec<(HeaderMap, Bytes)>>,
}

impl Target {
    fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn hook(State(target): State<Arc<Target>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    target.seen.lock().unwrap().push((headers, body));
    StatusCode::OK
}

async fn start_target() -> (String, Arc<Target>) {
    let target = Arc::new(Target::default());
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(target.clone());
    (format!("http://{}/hook", serve(app).await), target)
}

fn envelope(id: Uuid, url: &str, tenant: Option<&str>, body: Value) -> Vec<u8> {
    let mut envelope = json!({
        "id": id.to_string(),
        "type": JOB_TYPE,
        "payload": {"url": url, "body": body},
        "created_at": OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339).unwrap(),
    });
    if let Some(tenant) = tenant {
        envelope["tenant"] = json!(tenant);
    }
    serde_json::to_vec(&envelope).unwrap()
}

async fn publish(env: &TestEnv, body: Vec<u8>, msg_id: &str) {
    env.publish_job(JOB_TYPE, body, msg_id).await;
}

async fn job_status(env: &TestEnv, id: Uuid) -> Option<String> {
    env.job_status(id).await
}

async fn wait_status(env: &TestEnv, id: Uuid, status: &str) {
    env.eventually(
        &format!("job {id} {status}"),
        Duration::from_secs(90),
        || async { job_status(env, id).await.as_deref() == Some(status) },
    )
    .await;
}

async fn work_stream_empty(env: &TestEnv) -> bool {
    env.work_stream_count().await == 0
}

fn secret(key: &str, tenant: &str) -> String {
    TenantSecret::derive(key.as_bytes(), tenant).whsec()
}

#[tokio::test]
async fn deliveries_verify_with_their_tenants_standard_webhooks_secret_only() {
    let env = TestEnv::new().await;
    let (url, target) = start_target().await;
    // A rotation in progress: both master keys configured.
    let consumer = start_consumer(&env, &["--webhook-previous-signing-key", PREVIOUS_KEY]).await;
    let acme = Uuid::now_v7();
    let globex = Uuid::now_v7();
    publish(
        &env,
        envelope(acme, &url, Some("acme"), json!({"for": "acme"})),
        "a",
    )
    .await;
    publish(
        &env,
        envelope(globex, &url, Some("globex"), json!({"for": "globex"})),
        "g",
    )
    .await;
    wait_status(&env, acme, "succeeded").await;
    wait_status(&env, globex, "succeeded").await;

    assert_eq!(target.hits(), 2);
    let seen = target.seen.lock().unwrap().clone();
    for (headers, body) in &seen {
        let (own, other) = if headers["webhook-id"] == acme.to_string() {
            ("acme", "globex")
        } else {
            assert_eq!(headers["webhook-id"], globex.to_string());
            ("globex", "acme")
        };
        assert!(
            String::from_utf8_lossy(body).contains(own),
            "body of {own}'s job"
        );
        assert!(headers.get("x-codigo-signature").is_none());
        // Receivers on the new secret and receivers still on the old one both verify.
        assert!(
            verifies(&secret(SIGNING_KEY, own), headers, body).await,
            "{own}'s delivery does not verify with {own}'s current secret"
        );
        assert!(
            verifies(&secret(PREVIOUS_KEY, own), headers, body).await,
            "{own}'s delivery does not verify with {own}'s previous secret"
        );
        // Tenant isolation: another tenant's secret, or the master key itself, verifies nothing.
        assert!(
            !verifies(&secret(SIGNING_KEY, other), headers, body).await,
            "{own}'s delivery verifies with {other}'s secret"
        );
        assert!(
            !verifies(&secret(PREVIOUS_KEY, other), headers, body).await,
            "{own}'s delivery verifies with {other}'s previous secret"
        );
        let master = format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(SIGNING_KEY)
        );
        assert!(!verifies(&master, headers, body).await);
        // A changed body no longer verifies.
        assert!(!verifies(&secret(SIGNING_KEY, own), headers, b"{\"for\":\"mallory\"}").await);
    }
    consumer.stop().await;
    env.cleanup().await;
}

/// Makes Postgres refuse every write to `webhook_deliveries` with `sqlstate`, as an outage or
/// a revoked grant would, until [`heal_records`]. Refusals are counted in a sequence, which no
/// rollback undoes.
async fn refuse_records(env: &TestEnv, sqlstate: &str) {
    for sql in [
        "CREATE SEQUENCE refused_records".to_owned(),
        format!(
            "CREATE FUNCTION refuse_record() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
               PERFORM nextval('refused_records');
               RAISE EXCEPTION 'webhook_deliveries write refused by the test'
                 USING ERRCODE = '{sqlstate}';
             END $$"
        ),
        "CREATE TRIGGER refuse_record BEFORE INSERT OR UPDATE ON webhook_deliveries
         FOR EACH ROW EXECUTE FUNCTION refuse_record()"
            .to_owned(),
    ] {
        sqlx::query(&sql).execute(&env.pool).await.expect(&sql);
    }
}

async fn refused_records(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM refused_records")
        .fetch_one(&env.pool)
        .await
        .expect("sequence")
}

async fn heal_records(env: &TestEnv) {
    sqlx::query("DROP TRIGGER refuse_record ON webhook_deliveries")
        .execute(&env.pool)
        .await
        .expect("drop trigger");
}

/// The target answers 200, Postgres refuses the record a few times, then recovers: the
/// webhook was POSTed exactly once and the job ends succeeded.
async fn posted_once_while_the_record_is_refused(sqlstate: &str) {
    let env = TestEnv::new().await;
    let (url, target) = start_target().await;
    refuse_records(&env, sqlstate).await;
    let consumer = start_consumer(&env, &[]).await;
    let id = Uuid::now_v7();
    publish(
        &env,
        envelope(id, &url, Some("acme"), json!({"n": 1})),
        "once",
    )
    .await;

    env.eventually(
        "three refused records of the delivery",
        Duration::from_secs(90),
        || async { refused_records(&env).await >= 3 },
    )
    .await;
    heal_records(&env).await;
    wait_status(&env, id, "succeeded").await;
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_deliveries WHERE job_id = $1 AND status_code = 200",
    )
    .bind(id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(recorded, 1);
    assert_eq!(
        target.hits(),
        1,
        "the webhook was POSTed again while its record was being retried"
    );
    consumer.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn webhook_is_posted_once_while_postgres_fails_to_record_it() {
    // 40001, serialization failure: a transient database error.
    posted_once_while_the_record_is_refused("40001").await;
}

#[tokio::test]
async fn webhook_is_posted_once_while_the_record_is_denied() {
    // 42501, insufficient privilege (a revoked grant): not transient, yet the POST happened, so
    // the job is held until the write succeeds rather than dead-lettered (a replay would
    // send it again).
    posted_once_while_the_record_is_refused("42501").await;
}

#[tokio::test]
async fn delivered_webhook_is_not_posted_again_on_replay_or_resubmission() {
    let env = TestEnv::new().await;
    let (url, target) = start_target().await;
    let consumer = start_consumer(&env, &[]).await;
    let id = Uuid::now_v7();
    let body = envelope(id, &url, Some("acme"), json!({"n": 2}));
    publish(&env, body.clone(), "first").await;
    wait_status(&env, id, "succeeded").await;
    assert_eq!(target.hits(), 1);

    // `codigo-ctl dlq replay` republishes the body under a new Nats-Msg-Id; a resubmission
    // after the duplicate window is the same job id JetStream no longer remembers. Either way
    // a new message for a job already delivered.
    for msg_id in ["replayed", "resubmitted"] {
        publish(&env, body.clone(), msg_id).await;
        env.eventually(
            &format!("the {msg_id} message acked"),
            Duration::from_secs(90),
            || work_stream_empty(&env),
        )
        .await;
    }
    assert_eq!(target.hits(), 1, "a delivered webhook was POSTed again");
    assert_eq!(job_status(&env, id).await.as_deref(), Some("succeeded"));
    consumer.stop().await;
    env.cleanup().await;
}

/// A slow target: holds each request 2 s, then answers 200 and closes. Counts the requests in
/// progress, and the most at once; one stops counting before its answer leaves, so the next
/// request the answer lets in is never counted beside it.
#[derive(Default)]
struct SlowTarget {
    answered: AtomicUsize,
    open: AtomicUsize,
    most_open: AtomicUsize,
}

async fn start_slow_target(ip: &str) -> (String, Arc<SlowTarget>) {
    let target = Arc::new(SlowTarget::default());
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = target.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(n) if n > 0 => request.extend_from_slice(&buffer[..n]),
                        _ => return,
                    }
                }
                // Read the body too: closing on unread bytes would reset the connection.
                let head_end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                let length = String::from_utf8_lossy(&request[..head_end])
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                while request.len() < head_end + length {
                    match stream.read(&mut buffer).await {
                        Ok(n) if n > 0 => request.extend_from_slice(&buffer[..n]),
                        _ => return,
                    }
                }
                let open = state.open.fetch_add(1, Ordering::SeqCst) + 1;
                state.most_open.fetch_max(open, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(2)).await;
                state.open.fetch_sub(1, Ordering::SeqCst);
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                if stream.write_all(answer).await.is_ok() {
                    state.answered.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (format!("http://{addr}/hook"), target)
}

#[tokio::test]
async fn requests_in_flight_to_one_host_are_capped() {
    let env = TestEnv::new().await;
    // 127.0.0.2: another host than the 127.0.0.1 of the other targets.
    let (url, slow) = start_slow_target("127.0.0.2").await;
    let consumer = start_consumer(&env, &["--webhook-max-per-host", "2"]).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        let id = Uuid::now_v7();
        publish(
            &env,
            envelope(id, &url, Some("acme"), json!({"n": n})),
            &id.to_string(),
        )
        .await;
        ids.push(id);
    }
    // Uncapped, the six jobs (fetched together) are all in flight at once; capped, they take
    // turns, two at a time.
    for id in ids {
        wait_status(&env, id, "succeeded").await;
    }
    assert_eq!(slow.answered.load(Ordering::SeqCst), 6);
    let most_open = slow.most_open.load(Ordering::SeqCst);
    assert!(
        most_open <= 2,
        "{most_open} requests in flight to one host, over its cap of 2"
    );
    consumer.stop().await;
    env.cleanup().await;
}
