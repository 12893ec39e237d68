//! Declared job types served by an HTTP function, end to end against real NATS and Postgres:
//! the example function of `examples/functions/wordcount` (Python, verifying every invocation
//! with the official `standardwebhooks` library) declared with `codigo-ctl types apply`, jobs
//! submitted through the gateway, and each answer of the invocation contract ending where the
//! contract says: a result, a retry after `Retry-After`, a permanent failure, a function down
//! for a while, attempts spent, and a deleted type.
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use codigo_testkit::http::{ADMIN, ALPHA};
use codigo_testkit::{
    flags, free_port, ChildProcess, ScratchDir, TestConsumer, TestEnv, TestProducer,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

const SIGNING_KEY: &str = "functions-test-master-key-01";
const JOB_TYPE: &str = "text.wordcount";

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// The example declaration, pointed at `port`, with retries short enough for a test.
fn declaration(port: u16, attempts: u32) -> String {
    let example = std::fs::read_to_string(repo("examples/functions/wordcount/wordcount.yaml"))
        .expect("the example declaration");
    example
        .replace(
            "http://127.0.0.1:8090/",
            &format!("http://127.0.0.1:{port}/"),
        )
        .replace("attempts: 5", &format!("attempts: {attempts}"))
        .replace("first_delay: 500ms", "first_delay: 200ms")
        .replace("max_delay: 30s", "max_delay: 1s")
}

/// The function's secret as its operator gets it: from `codigo-ctl types secret`.
async fn function_secret(env: &TestEnv) -> String {
    let output = env
        .command("codigo-ctl")
        .env("CODIGO_WEBHOOK_SIGNING_KEY", SIGNING_KEY)
        .args(["types", "secret", JOB_TYPE])
        .output()
        .expect("codigo-ctl runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// The example function on `port`, answering 503 for `warmup` seconds after it starts.
async fn start_function(secret: &str, port: u16, warmup: u32) -> ChildProcess {
    let mut command = Command::new("bash");
    command
        .arg(repo("scripts/run-function.sh"))
        .arg(repo("examples/functions/wordcount/app.py"))
        .env("FUNCTION_SECRET", secret)
        .env("PORT", port.to_string())
        .env("WARMUP_SECONDS", warmup.to_string());
    let function = ChildProcess::spawn("wordcount", command);
    // The first start may install the Standard Webhooks library.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the example function did not start: {}",
            function.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    function
}

async fn submit(producer: &TestProducer, payload: Value) -> String {
    let reply = producer
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": JOB_TYPE, "payload": payload}),
        )
        .await;
    reply.assert_status(StatusCode::ACCEPTED);
    reply.body["id"].as_str().expect("job id").to_owned()
}

/// Waits until the job reaches `status`, and answers its `GET /v1/jobs/{id}`.
async fn wait_for(env: &TestEnv, producer: &TestProducer, id: &str, status: &str) -> Value {
    let path = format!("/v1/jobs/{id}");
    env.eventually(
        &format!("job {id} {status}"),
        Duration::from_secs(60),
        || async { producer.get(&path, ALPHA).await.body["status"] == status },
    )
    .await;
    producer.get(&path, ALPHA).await.body
}

/// A gateway and a consumer serving every declared function, ready.
async fn functions_stack(env: &TestEnv, extra: &str) -> (TestProducer, TestConsumer) {
    let producer = TestProducer::start(env, &[]).await;
    let consumer = TestConsumer::spawn(
        env,
        &flags(&format!(
            "--job-types functions --webhook-signing-key {SIGNING_KEY} {extra}"
        )),
    )
    .await;
    consumer.wait_ready().await;
    (producer, consumer)
}

/// Declares `job_type` over HTTP with an admin key.
async fn declare(producer: &TestProducer, job_type: &str, declaration: Value) {
    let declared = reqwest::Client::new()
        .put(producer.url(&format!("/v1/job-types/{job_type}")))
        .bearer_auth(ADMIN)
        .json(&declaration)
        .send()
        .await
        .expect("request");
    assert_eq!(declared.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declared_function_serves_jobs_as_the_contract_says() {
    let env = TestEnv::new().await;
    let (producer, consumer) = functions_stack(&env, "--ack-wait-secs 5").await;
    let port = free_port();
    let files = ScratchDir::new("functions");
    let declaration_file = files.write("wordcount.yaml", declaration(port, 6));

    // Unknown before it is declared; live at the gateway within 5 s of the declaration.
    let before = producer
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": JOB_TYPE, "payload": {"text": "x"}}),
        )
        .await;
    before.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "unknown-job-type");
    let applied = env
        .ctl_ok(&["types", "apply", "-f", declaration_file.to_str().unwrap()])
        .await;
    assert!(
        applied.contains("text.wordcount: declared (version 1)"),
        "{applied}"
    );
    env.eventually(
        "the gateway knows the type",
        Duration::from_secs(5),
        || async {
            producer.get("/v1/job-types", ALPHA).await.body["job_types"]
                .as_array()
                .is_some_and(|types| {
                    types
                        .iter()
                        .any(|t| t["type"] == JOB_TYPE && t["origin"] == "declared")
                })
        },
    )
    .await;
    let again = env
        .ctl_ok(&["types", "apply", "-f", declaration_file.to_str().unwrap()])
        .await;
    assert!(again.contains("text.wordcount: unchanged"), "{again}");
    let listed = env.ctl_ok(&["types", "list"]).await;
    assert!(
        listed.contains(JOB_TYPE) && listed.contains(&format!("http://127.0.0.1:{port}")),
        "{listed}"
    );

    // Validated at the door against the declared schema.
    let invalid = producer
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": JOB_TYPE, "payload": {"words": 3}}),
        )
        .await;
    invalid.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "schema-violation");

    // 2xx: success, the answer is the result. The function verified the signature with the
    // official library, or it would have answered 401 and the job would be dead-lettered.
    let secret = function_secret(&env).await;
    let mut function = start_function(&secret, port, 0).await;
    let id = submit(&producer, json!({"text": "jobs for everyone's functions"})).await;
    let job = wait_for(&env, &producer, &id, "succeeded").await;
    assert_eq!(job["result"]["words"], 4, "{job}");
    assert_eq!(
        job["result"]["job_id"],
        id.as_str(),
        "webhook-id is the job id: {job}"
    );
    assert_eq!(job["result"]["attempt"], 1, "{job}");
    // Its metrics carry the declared type's name, like a built-in type's.
    let metrics = consumer.metrics().await;
    assert!(
        metrics
            .contains(r#"codigo_consumer_acks_total{job_type="text.wordcount",outcome="ack"} 1"#),
        "{metrics}"
    );

    // Another 4xx: permanent, dead-lettered with the status and the answer's first bytes.
    let refused = submit(&producer, json!({"text": "Guten Tag", "language": "de"})).await;
    let job = wait_for(&env, &producer, &refused, "dead_lettered").await;
    let error = job["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("400") && error.contains("not supported"),
        "{job}"
    );
    assert_eq!(
        job["attempts"], 1,
        "a permanent failure is not retried: {job}"
    );

    // Down for a while: retried with the type's back-off, done once the function is back.
    function.kill();
    let waited = submit(&producer, json!({"text": "patience pays"})).await;
    let job = wait_for(&env, &producer, &waited, "retrying").await;
    assert!(
        job["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unreachable"),
        "{job}"
    );
    function.restart();
    let job = wait_for(&env, &producer, &waited, "succeeded").await;
    assert!(job["result"]["attempt"].as_u64() > Some(1), "{job}");

    // 503 with Retry-After while it warms up: retried after that delay, then done.
    function.kill();
    let mut function = start_function(&secret, port, 2).await;
    let warming = submit(&producer, json!({"text": "worth the wait"})).await;
    let job = wait_for(&env, &producer, &warming, "succeeded").await;
    assert!(job["result"]["attempt"].as_u64() > Some(1), "{job}");

    // Attempts spent: dead-lettered, and replayable once the function is back.
    function.kill();
    let spent_file = files.write("spent.yaml", declaration(port, 2));
    env.ctl_ok(&["types", "apply", "-f", spent_file.to_str().unwrap()])
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = submit(&producer, json!({"text": "nobody home"})).await;
    wait_for(&env, &producer, &spent, "dead_lettered").await;
    let mut function = start_function(&secret, port, 0).await;
    env.ctl_ok(&["dlq", "replay", "--reason", "max_deliveries"])
        .await;
    let job = wait_for(&env, &producer, &spent, "succeeded").await;
    assert_eq!(job["result"]["words"], 2, "{job}");

    // Deleted while a job of it is queued: the gateway stops taking the type within 5 s, the
    // queued job still runs, then the type's durable consumer is removed.
    let fresh = files.write("fresh.yaml", declaration(port, 6));
    env.ctl_ok(&["types", "apply", "-f", fresh.to_str().unwrap()])
        .await;
    function.kill();
    let queued = submit(&producer, json!({"text": "last one in"})).await;
    wait_for(&env, &producer, &queued, "retrying").await;
    let deleted = env.ctl_ok(&["types", "delete", JOB_TYPE]).await;
    assert!(deleted.contains("deleted"), "{deleted}");
    env.eventually(
        "the gateway refuses the deleted type",
        Duration::from_secs(5),
        || async {
            producer
                .post(
                    "/v1/jobs",
                    ALPHA,
                    json!({"type": JOB_TYPE, "payload": {"text": "late"}}),
                )
                .await
                .status
                == StatusCode::UNPROCESSABLE_ENTITY
        },
    )
    .await;
    function.restart();
    let job = wait_for(&env, &producer, &queued, "succeeded").await;
    assert_eq!(job["result"]["words"], 3, "{job}");
    let stream = env
        .js
        .get_stream(env.names.jobs_stream())
        .await
        .expect("work stream");
    env.eventually(
        "the deleted type's durable consumer is removed",
        Duration::from_secs(30),
        || async {
            stream
                .consumer_info(env.names.durable(JOB_TYPE))
                .await
                .is_err()
        },
    )
    .await;

    consumer.stop().await;
    producer.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn declaring_over_http_needs_the_admin_scope_and_a_valid_declaration() {
    let env = TestEnv::new().await;
    let producer = TestProducer::start(&env, &[]).await;
    let http = reqwest::Client::new();
    let put = |token: &'static str, body: Value| {
        let request = http
            .put(producer.url("/v1/job-types/media.thumbnail"))
            .bearer_auth(token)
            .json(&body)
            .send();
        async move { codigo_testkit::http::read(request.await.expect("request")).await }
    };
    let declaration = json!({
        "version": 1,
        "schema": {"type": "object", "required": ["image"]},
        "target": {"http": {"url": "http://thumbnail.media.svc:8080/", "timeout": "20s"}},
        "retry": {"attempts": 3, "first_delay": "1s", "max_delay": "1m"},
        "concurrency": 8,
        "jobs_per_sec": 50,
    });

    put(ALPHA, declaration.clone())
        .await
        .assert_problem(StatusCode::FORBIDDEN, "admin-required");
    let mut broken = declaration.clone();
    broken["target"]["http"]["url"] = json!("not a url");
    let refused = put(ADMIN, broken).await;
    refused.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-declaration");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("target.http.url"),
        "{}",
        refused.text
    );
    let mut builtin = declaration.clone();
    builtin["type"] = json!("ledger.post");
    put(ADMIN, builtin)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-declaration");

    let stored = put(ADMIN, declaration.clone()).await;
    stored.assert_status(StatusCode::OK);
    assert_eq!(stored.body["type"], "media.thumbnail", "{}", stored.text);
    assert_eq!(
        stored.body["declaration"]["retry"]["max_delay"], "1m",
        "{}",
        stored.text
    );
    // Taken at once, validated against the declared schema.
    producer
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": "media.thumbnail", "payload": {}}),
        )
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "schema-violation");
    let accepted = producer
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": "media.thumbnail", "payload": {"image": "a.png"}}),
        )
        .await;
    accepted.assert_status(StatusCode::ACCEPTED);
    // The same declaration as `codigo-ctl types show` reads it back from the bucket.
    let shown = env.ctl_ok(&["types", "show", "media.thumbnail"]).await;
    let shown: Value = serde_json::from_str(&shown).expect("JSON");
    assert_eq!(shown["jobs_per_sec"], 50.0, "{shown}");

    let delete = |token: &'static str| {
        let request = http
            .delete(producer.url("/v1/job-types/media.thumbnail"))
            .bearer_auth(token)
            .send();
        async move { codigo_testkit::http::read(request.await.expect("request")).await }
    };
    delete(ALPHA)
        .await
        .assert_problem(StatusCode::FORBIDDEN, "admin-required");
    delete(ADMIN).await.assert_status(StatusCode::NO_CONTENT);
    delete(ADMIN)
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not-found");
    producer
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": "media.thumbnail", "payload": {"image": "a.png"}}),
        )
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "unknown-job-type");

    producer.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declared_type_can_be_served_by_a_built_in_worker() {
    let env = TestEnv::new().await;
    let (producer, consumer) = functions_stack(&env, "").await;
    // A team's own ledger type: the built-in worker's effect, its own name, schema and policy.
    let ledger = producer.get("/v1/job-types/ledger.post", ALPHA).await;
    let mut schema = ledger.body["schema"].clone();
    schema["properties"]["amount_cents"]["maximum"] = json!(100_000);
    declare(
        &producer,
        "acme.payouts",
        json!({
            "version": 1,
            "schema": schema,
            "target": {"builtin": "ledger.post"},
            "retry": {"attempts": 3, "first_delay": "100ms", "max_delay": "1s"},
        }),
    )
    .await;

    // Its own schema at the door...
    producer
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": "acme.payouts", "payload": {"account": "a", "amount_cents": 200_000, "currency": "EUR"}}),
        )
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "schema-violation");
    // ...and the ledger worker's effect, recorded under its own type.
    let reply = producer
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": "acme.payouts", "payload": {"account": "payouts", "amount_cents": 1234, "currency": "EUR"}}),
        )
        .await;
    reply.assert_status(StatusCode::ACCEPTED);
    let id = reply.body["id"].as_str().expect("id").to_owned();
    let job = wait_for(&env, &producer, &id, "succeeded").await;
    assert_eq!(job["type"], "acme.payouts", "{job}");
    let balance: i64 = sqlx::query_scalar(
        "SELECT balance_cents FROM account_balances WHERE tenant = 'alpha' AND account = 'payouts'",
    )
    .fetch_one(&env.pool)
    .await
    .expect("balance");
    assert_eq!(balance, 1234);

    consumer.stop().await;
    producer.stop().await;
    env.cleanup().await;
}

/// What the answering function saw of one job: when each attempt came, and its headers.
#[derive(Default)]
struct Attempts {
    seen: Mutex<HashMap<String, Vec<Instant>>>,
}

/// A function that misbehaves the first time it sees a job, as the job's `mode` says, and
/// answers `{"attempt": n}` after that.
async fn misbehave(
    State(attempts): State<Arc<Attempts>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let attempt = {
        let mut seen = attempts.seen.lock().unwrap();
        let times = seen.entry(id).or_default();
        times.push(Instant::now());
        times.len()
    };
    let payload: Value = serde_json::from_slice(&body).unwrap_or_default();
    let mode = payload["mode"].as_str().unwrap_or_default();
    if attempt == 1 {
        match mode {
            "408" => return StatusCode::REQUEST_TIMEOUT.into_response(),
            "500" => return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
            "502" => return StatusCode::BAD_GATEWAY.into_response(),
            "429" => {
                return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "2")]).into_response()
            }
            "timeout" => tokio::time::sleep(Duration::from_secs(3)).await,
            _ => {}
        }
    }
    if mode == "big" {
        // Over the 64 KiB a result may hold: the job succeeds without one.
        let filler = "x".repeat(70 * 1024);
        return axum::Json(json!({ "filler": filler })).into_response();
    }
    axum::Json(json!({ "attempt": attempt })).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_retryable_answer_is_retried_and_an_oversized_result_is_left_out() {
    let env = TestEnv::new().await;
    let attempts = Arc::new(Attempts::default());
    let function = axum::Router::new()
        .route("/", axum::routing::post(misbehave))
        .with_state(attempts.clone());
    let address = codigo_testkit::serve(function).await;
    let (producer, consumer) = functions_stack(&env, "").await;
    declare(
        &producer,
        "test.moody",
        json!({
            "version": 1,
            "schema": {"type": "object", "required": ["mode"],
                       "properties": {"mode": {"type": "string"}}},
            "target": {"http": {"url": format!("http://{address}/"), "timeout": "1s"}},
            "retry": {"attempts": 4, "first_delay": "300ms", "max_delay": "1s"},
        }),
    )
    .await;
    env.eventually(
        "the gateway takes the type",
        Duration::from_secs(5),
        || async {
            producer
                .post(
                    "/v1/jobs",
                    ALPHA,
                    json!({"type": "test.moody", "payload": {"mode": "ok"}}),
                )
                .await
                .status
                == StatusCode::ACCEPTED
        },
    )
    .await;

    let mut ids = Vec::new();
    for mode in ["408", "500", "502", "429", "timeout", "big"] {
        let reply = producer
            .post(
                "/v1/jobs",
                ALPHA,
                json!({"type": "test.moody", "payload": {"mode": mode}}),
            )
            .await;
        reply.assert_status(StatusCode::ACCEPTED);
        ids.push((mode, reply.body["id"].as_str().expect("id").to_owned()));
    }
    for (mode, id) in &ids {
        let job = wait_for(&env, &producer, id, "succeeded").await;
        let times = attempts.seen.lock().unwrap()[id.as_str()].clone();
        if *mode == "big" {
            assert!(job["result"].is_null(), "{mode}: {job}");
            assert_eq!(times.len(), 1, "{mode}: a success is not retried");
            continue;
        }
        assert_eq!(job["result"]["attempt"], 2, "{mode}: retried once: {job}");
        // A redelivery after the success (its ack late on a loaded machine) counts as a
        // delivery too; the result stays the second attempt's.
        assert!(job["attempts"].as_i64() >= Some(2), "{mode}: {job}");
        let waited = times[1] - times[0];
        // Back-off from the type's first delay; the Retry-After the function asked for.
        let (least, what) = match *mode {
            "429" => (Duration::from_millis(1900), "its Retry-After"),
            "timeout" => (Duration::from_millis(1000), "its declared timeout"),
            _ => (Duration::from_millis(250), "the type's first delay"),
        };
        assert!(
            waited >= least,
            "{mode}: retried after {waited:?}, sooner than {what}"
        );
    }

    consumer.stop().await;
    producer.stop().await;
    env.cleanup().await;
}
