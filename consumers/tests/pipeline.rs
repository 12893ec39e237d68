//! The pipeline end to end against real NATS and Postgres: gateway → JetStream → workers →
//! Postgres, redeliveries, dead letters, webhooks and shutdown.
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use codigo_consumer::Application;
use codigo_schemas::LedgerPost;
use codigo_testkit::http::post_until_accepted;
use codigo_testkit::{
    flags, header, serve, AlwaysRetry, TestConsumer, TestEnv, TestProducer, SHORT_RETRIES,
};
use serde_json::{json, Value};
use uuid::Uuid;

const SIGNING_KEY: &str = "test-signing-key-0123456789";
const TOKEN: &str = "pipeline-token-0000001";
const SUCCEEDED_JOBS: &str = "SELECT count(*) FROM jobs WHERE status = 'succeeded'";
const LEDGER_ENTRIES: &str = "SELECT count(*) FROM ledger_entries";

fn consumer_args(env: &TestEnv, extra: &[&str]) -> codigo_consumer::Config {
    let settings = format!("--webhook-signing-key {SIGNING_KEY} {SHORT_RETRIES} --concurrency 16");
    TestConsumer::config(env, &[&flags(&settings), extra].concat())
}

async fn start_consumer(
    env: &TestEnv,
    extra: &[&str],
    worker: Option<AlwaysRetry>,
) -> TestConsumer {
    TestConsumer::from_config(consumer_args(env, extra), |app| match worker {
        Some(worker) => app.with_worker::<LedgerPost>(worker),
        None => app,
    })
    .await
}

/// The ledger pipeline whole: a consumer of ledger jobs behind a gateway that accepts
/// [`TOKEN`].
struct LedgerPipeline {
    consumer: TestConsumer,
    gateway: TestProducer,
    http: reqwest::Client,
}

impl LedgerPipeline {
    async fn start(env: &TestEnv) -> Self {
        let consumer = start_consumer(env, &["--job-types", "ledger.post"], None).await;
        let keys = format!("pipeline:{TOKEN}");
        let gateway = TestProducer::spawn(env, &["--api-keys", &keys]).await;
        let http = reqwest::Client::new();
        Self {
            consumer,
            gateway,
            http,
        }
    }

    /// Posts `body` to the gateway's `path` until it is accepted; returns the answer.
    async fn submit(&self, path: &str, body: &Value) -> Value {
        let url = format!("http://{}{path}", self.gateway.addr);
        let response = post_until_accepted(&self.http, &url, TOKEN, body).await;
        response.json().await.expect("JSON answer")
    }

    async fn get(&self, path: &str) -> Value {
        let url = format!("http://{}{path}", self.gateway.addr);
        let response = self.http.get(url).bearer_auth(TOKEN).send().await;
        response.unwrap().json().await.unwrap()
    }

    async fn stop(self) {
        self.gateway.stop().await;
        self.consumer.stop().await;
    }
}

fn envelope(job_type: &str, payload: Value) -> Value {
    codigo_testkit::envelope(Uuid::now_v7(), job_type, "test", payload)
}

/// Publishes a valid job of `job_type` straight to JetStream; returns its id.
async fn publish(env: &TestEnv, job_type: &str, payload: Value) -> Uuid {
    let job = envelope(job_type, payload);
    env.publish_envelope(&job).await;
    Uuid::parse_str(job["id"].as_str().unwrap()).unwrap()
}

/// Publishes `jobs` with their acks pipelined, then waits for all of them: a backlog of
/// thousands in place within seconds.
async fn publish_backlog(env: &TestEnv, jobs: impl IntoIterator<Item = Value>) {
    let mut acks = Vec::new();
    for job in jobs {
        let message = PublishMessage::build()
            .payload(Bytes::from(serde_json::to_vec(&job).unwrap()))
            .message_id(job["id"].as_str().unwrap());
        acks.push(
            env.js
                .send_publish(env.names.job_subject("ledger.post"), message)
                .await
                .unwrap(),
        );
    }
    for ack in acks {
        ack.await.expect("stored");
    }
}

fn ledger_job(account: &str, amount_cents: i64) -> Value {
    envelope(
        "ledger.post",
        json!({"account": account, "amount_cents": amount_cents, "currency": "EUR"}),
    )
}

async fn count(env: &TestEnv, sql: &str) -> i64 {
    env.count(sql).await
}

async fn balance(env: &TestEnv, account: &str) -> i64 {
    let sql = format!("SELECT balance_cents FROM account_balances WHERE account = '{account}'");
    env.count(&sql).await
}

async fn total_balance(env: &TestEnv) -> i64 {
    env.count("SELECT sum(balance_cents)::bigint FROM account_balances")
        .await
}

/// The row `sql` selects for job `id` (its one parameter).
async fn job_row<T>(env: &TestEnv, sql: &str, id: Uuid) -> T
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sql)
        .bind(id)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

async fn assert_dead_lettered(env: &TestEnv, id: Uuid) {
    assert_eq!(env.job_status(id).await.as_deref(), Some("dead_lettered"));
}

async fn wait_for_count(env: &TestEnv, what: &str, sql: &str, expected: i64) {
    env.wait_for_count(what, sql, expected).await;
}

async fn dead_letters(
    env: &TestEnv,
    expected: usize,
) -> Vec<async_nats::jetstream::message::StreamMessage> {
    env.dead_letters(expected).await
}

async fn wait_work_stream_empty(env: &TestEnv) {
    env.eventually(
        "the work stream drained",
        Duration::from_secs(60),
        || async { env.work_stream_count().await == 0 },
    )
    .await;
}

#[tokio::test]
async fn ledger_jobs_flow_from_gateway_to_postgres() {
    let env = TestEnv::new().await;
    let pipeline = LedgerPipeline::start(&env).await;

    let jobs: Vec<Value> = (1..=20)
        .map(|i| json!({"type": "ledger.post", "payload": {"account": format!("acct-{}", i % 3), "amount_cents": i, "currency": "EUR"}}))
        .collect();
    let accepted = pipeline
        .submit("/v1/jobs/batch", &json!({"jobs": jobs}))
        .await;
    assert!(accepted["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "queued"));

    wait_for_count(&env, "succeeded jobs", SUCCEEDED_JOBS, 20).await;
    assert_eq!(count(&env, LEDGER_ENTRIES).await, 20);
    assert_eq!(total_balance(&env).await, 210);
    let acct0: i64 = sqlx::query_scalar(
        "SELECT balance_cents FROM account_balances WHERE account = 'acct-0' AND currency = 'EUR'",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(acct0, 3 + 6 + 9 + 12 + 15 + 18);

    let id = accepted["results"][0]["id"].as_str().unwrap();
    let status = pipeline.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status["status"], "succeeded");
    assert_eq!(status["attempts"], 1);
    wait_work_stream_empty(&env).await;

    pipeline.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn same_idempotency_key_twice_takes_effect_once() {
    let env = TestEnv::new().await;
    let pipeline = LedgerPipeline::start(&env).await;
    let job = json!({"type": "ledger.post", "idempotency_key": "invoice-7",
        "payload": {"account": "acme", "amount_cents": 700, "currency": "USD"}});
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(pipeline.submit("/v1/jobs", &job).await["id"].clone());
        // The third copy arrives after the first was processed: Postgres, not JetStream,
        // must then refuse the second effect.
        wait_for_count(&env, "processed", SUCCEEDED_JOBS, 1).await;
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(count(&env, LEDGER_ENTRIES).await, 1);
    assert_eq!(balance(&env, "acme").await, 700);
    pipeline.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_redelivered_committed_job_changes_nothing() {
    let env = TestEnv::new().await;
    let body = serde_json::to_vec(&ledger_job("acme", 250)).unwrap();
    // Two messages with the same job id but different message ids: JetStream keeps both, as
    // it would a redelivery or a resubmission after the duplicate window.
    env.publish_job("ledger.post", body.clone(), "first").await;
    env.publish_job("ledger.post", body, "second").await;
    let consumer = start_consumer(&env, &["--job-types", "ledger.post"], None).await;
    wait_work_stream_empty(&env).await;
    wait_for_count(&env, "succeeded", SUCCEEDED_JOBS, 1).await;
    assert_eq!(count(&env, LEDGER_ENTRIES).await, 1);
    assert_eq!(balance(&env, "acme").await, 250);
    assert_eq!(dead_letters(&env, 0).await.len(), 0);
    consumer.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn invalid_messages_are_dead_lettered_with_their_reason() {
    let env = TestEnv::new().await;
    let consumer = start_consumer(&env, &["--job-types", "ledger.post"], None).await;

    env.publish_job("ledger.post", b"{not json".to_vec(), "bad-1")
        .await;
    let mut invalid = ledger_job("acme", 0);
    let invalid_id = invalid["id"].as_str().unwrap().to_owned();
    env.publish_job("ledger.post", invalid.to_string(), "bad-2")
        .await;
    invalid["type"] = json!("webhook.deliver");
    invalid["id"] = json!(Uuid::now_v7().to_string());
    env.publish_job("ledger.post", invalid.to_string(), "bad-3")
        .await;

    let letters = dead_letters(&env, 3).await;
    let reasons: Vec<&str> = letters
        .iter()
        .map(|m| header(m, "Codigo-Dlq-Reason"))
        .collect();
    assert_eq!(reasons, vec!["decode", "schema", "schema"]);
    assert_eq!(
        letters[0].payload.as_ref(),
        b"{not json",
        "original body kept"
    );
    for letter in &letters {
        assert_eq!(
            letter.subject.as_str(),
            env.names.dlq_subject("ledger.post")
        );
        assert_eq!(
            header(letter, "Codigo-Original-Subject"),
            env.names.job_subject("ledger.post")
        );
        assert_eq!(header(letter, "Codigo-Dlq-Attempts"), "1");
        assert!(!header(letter, "Codigo-Dlq-Error").is_empty());
    }
    assert!(header(&letters[1], "Codigo-Dlq-Error").contains("/payload/amount_cents"));
    assert_dead_lettered(&env, Uuid::parse_str(&invalid_id).unwrap()).await;
    wait_work_stream_empty(&env).await;
    assert_eq!(count(&env, LEDGER_ENTRIES).await, 0);
    consumer.stop().await;
    env.cleanup().await;
}

#[derive(Default)]
struct Target {
    responses: Mutex<VecDeque<u16>>,
    seen: Mutex<Vec<(HeaderMap, Bytes)>>,
}

async fn hook(State(target): State<Arc<Target>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    target.seen.lock().unwrap().push((headers, body));
    let code = target.responses.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(code).unwrap()
}

/// A consumer of webhook jobs, with a target answering `responses` in turn (then 200).
async fn start_webhooks(
    env: &TestEnv,
    allow_private: bool,
    responses: &[u16],
) -> (TestConsumer, SocketAddr, Arc<Target>) {
    let (addr, target) = webhook_target(responses).await;
    let mut flags = vec!["--job-types", "webhook.deliver"];
    if allow_private {
        flags.push("--webhook-allow-private");
    }
    (start_consumer(env, &flags, None).await, addr, target)
}

async fn webhook_target(responses: &[u16]) -> (SocketAddr, Arc<Target>) {
    let target = Arc::new(Target::default());
    target
        .responses
        .lock()
        .unwrap()
        .extend(responses.iter().copied());
    let app = axum::Router::new()
        .route("/hook", post(hook))
        .with_state(target.clone());
    (serve(app).await, target)
}

#[tokio::test]
async fn webhook_failing_with_503_is_retried_and_recorded() {
    let env = TestEnv::new().await;
    let (consumer, addr, target) = start_webhooks(&env, true, &[503]).await;
    let payload = json!({"url": format!("http://{addr}/hook"),
        "body": {"order": 42}, "headers": {"X-Tenant-Ref": "abc"}});
    let id = publish(&env, "webhook.deliver", payload).await;

    wait_for_count(
        &env,
        "delivered",
        "SELECT count(*) FROM webhook_deliveries WHERE status_code = 200",
        1,
    )
    .await;
    let (attempts, url): (i32, String) = job_row(
        &env,
        "SELECT attempts, url FROM webhook_deliveries WHERE job_id = $1",
        id,
    )
    .await;
    assert_eq!(attempts, 2);
    assert_eq!(url, format!("http://{addr}/hook"));
    let (status, job_attempts): (String, i32) =
        job_row(&env, "SELECT status, attempts FROM jobs WHERE id = $1", id).await;
    assert_eq!((status.as_str(), job_attempts), ("succeeded", 2));

    let seen = target.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (headers, body) in &seen {
        assert_eq!(body.as_ref(), br#"{"order":42}"#);
        // Signatures are verified with the official library in tests/webhooks.rs.
        assert_eq!(headers["webhook-id"], id.to_string());
        assert!(headers["webhook-signature"]
            .to_str()
            .unwrap()
            .starts_with("v1,"));
        assert_eq!(headers["x-tenant-ref"], "abc");
        assert_eq!(headers["content-type"], "application/json");
    }
    consumer.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn webhook_answering_400_is_dead_lettered() {
    let env = TestEnv::new().await;
    let (consumer, addr, target) = start_webhooks(&env, true, &[400]).await;
    let payload = json!({"url": format!("http://{addr}/hook"), "body": [1, 2]});
    let id = publish(&env, "webhook.deliver", payload).await;

    let letters = dead_letters(&env, 1).await;
    assert_eq!(header(&letters[0], "Codigo-Dlq-Reason"), "permanent");
    assert!(header(&letters[0], "Codigo-Dlq-Error").contains("400"));
    wait_for_count(
        &env,
        "dead-lettered row",
        "SELECT count(*) FROM jobs WHERE status = 'dead_lettered'",
        1,
    )
    .await;
    assert_dead_lettered(&env, id).await;
    assert_eq!(
        count(&env, "SELECT count(*) FROM webhook_deliveries").await,
        0
    );
    assert_eq!(
        target.seen.lock().unwrap().len(),
        1,
        "a permanent failure is not retried"
    );
    wait_work_stream_empty(&env).await;
    consumer.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn private_webhook_targets_are_refused_unless_allowed() {
    let env = TestEnv::new().await;
    let (consumer, addr, target) = start_webhooks(&env, false, &[]).await;
    for url in [
        format!("http://{addr}/hook"),
        format!("http://localhost:{}/hook", addr.port()),
    ] {
        publish(&env, "webhook.deliver", json!({"url": url, "body": null})).await;
    }
    let letters = dead_letters(&env, 2).await;
    for letter in &letters {
        assert_eq!(header(letter, "Codigo-Dlq-Reason"), "permanent");
        let error = header(letter, "Codigo-Dlq-Error");
        assert!(
            error.contains("private") || error.contains("localhost"),
            "{error}"
        );
    }
    assert!(
        target.seen.lock().unwrap().is_empty(),
        "nothing reached the private target"
    );
    consumer.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn jobs_that_keep_failing_are_dead_lettered_after_max_deliveries() {
    let env = TestEnv::new().await;
    let still_failing = AlwaysRetry::after(Duration::from_millis(20), "still failing");
    let settings = ["--job-types", "ledger.post", "--max-deliver", "3"];
    let consumer = start_consumer(&env, &settings, Some(still_failing)).await;
    let id = publish(
        &env,
        "ledger.post",
        json!({"account": "acme", "amount_cents": 5, "currency": "EUR"}),
    )
    .await;

    let letters = dead_letters(&env, 1).await;
    assert_eq!(header(&letters[0], "Codigo-Dlq-Reason"), "max_deliveries");
    assert_eq!(header(&letters[0], "Codigo-Dlq-Attempts"), "3");
    assert!(header(&letters[0], "Codigo-Dlq-Error").contains("still failing"));
    wait_work_stream_empty(&env).await;
    let (status, error): (String, Option<String>) =
        job_row(&env, "SELECT status, error FROM jobs WHERE id = $1", id).await;
    assert_eq!(status, "dead_lettered");
    assert!(error.unwrap_or_default().contains("3 deliveries"));
    consumer.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn sigterm_during_load_drains_and_loses_nothing() {
    let env = TestEnv::new().await;
    const JOBS: i64 = 3000;
    publish_backlog(
        &env,
        (0..JOBS).map(|i| ledger_job(&format!("a{}", i % 7), i + 1)),
    )
    .await;

    let settings = "--job-types ledger.post --ack-wait-secs 5 --max-deliver 4 --backoff-secs 1 \
                    --fetch-expires-ms 1000 --shutdown-timeout-secs 10";
    let child = env.spawn_binary("codigo-consumer", &flags(settings));
    // Stop it mid-load.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count(&env, LEDGER_ENTRIES).await < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.stop())
        .await
        .expect("exits within its drain timeout")
        .status;
    assert!(status.success(), "exit status {status:?}");
    let applied = count(&env, LEDGER_ENTRIES).await;
    assert!(applied < JOBS, "stopped mid-load ({applied} of {JOBS})");

    // Nothing is stuck with the stopped worker: another one finishes every job exactly once.
    let stream = env.js.get_stream(env.names.jobs_stream()).await.unwrap();
    let info = stream
        .consumer_info(env.names.durable("ledger.post"))
        .await
        .unwrap();
    assert_eq!(info.num_waiting, 0);
    let consumer = start_consumer(&env, &["--job-types", "ledger.post"], None).await;
    wait_for_count(&env, "all jobs applied", LEDGER_ENTRIES, JOBS).await;
    wait_work_stream_empty(&env).await;
    assert_eq!(total_balance(&env).await, JOBS * (JOBS + 1) / 2);
    assert_eq!(count(&env, SUCCEEDED_JOBS).await, JOBS);
    let info = stream
        .consumer_info(env.names.durable("ledger.post"))
        .await
        .unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
    assert_eq!(dead_letters(&env, 0).await.len(), 0);
    consumer.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn unknown_job_types_are_refused_at_start() {
    let env = TestEnv::bare().await;
    let error = Application::build(consumer_args(&env, &["--job-types", "nope.never"]))
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("CODIGO_JOB_TYPES"), "{error}");
    let mut without_key = consumer_args(&env, &["--job-types", "webhook.deliver"]);
    without_key.signing.webhook_signing_key = None;
    let error = Application::build(without_key)
        .await
        .err()
        .expect("refused");
    assert!(
        error.to_string().contains("CODIGO_WEBHOOK_SIGNING_KEY"),
        "{error}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_job_the_database_refuses_does_not_sink_its_group() {
    let env = TestEnv::new().await;
    // One account sits at the edge of bigint: adding to it fails in Postgres, every time.
    env.insert_balance("test", "full", "EUR", 9_223_372_036_854_775_000)
        .await;
    let jobs: Vec<Value> = (0..200)
        .map(|i| ledger_job(if i == 100 { "full" } else { "ok" }, 1000))
        .collect();
    let poison = Uuid::parse_str(jobs[100]["id"].as_str().unwrap()).unwrap();
    publish_backlog(&env, jobs).await;
    // Started after the backlog is in place, so jobs arrive in groups.
    let consumer = start_consumer(&env, &["--job-types", "ledger.post"], None).await;
    let letters = dead_letters(&env, 1).await;
    assert_eq!(header(&letters[0], "Codigo-Dlq-Reason"), "permanent");
    wait_for_count(&env, "the rest applied", LEDGER_ENTRIES, 199).await;
    assert_eq!(balance(&env, "ok").await, 199_000);
    assert_dead_lettered(&env, poison).await;
    wait_work_stream_empty(&env).await;
    consumer.stop().await;
    env.cleanup().await;
}
