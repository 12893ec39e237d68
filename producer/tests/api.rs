//! The gateway against real NATS and Postgres: every row of the contract's error table, ids,
//! idempotency, batches, tenants and what lands on the stream.

mod gateway;

use codigo_testkit::http::{read, Reply};
use codigo_testkit::{flags, TestEnv, TestProducer};
use gateway::{keyed_ledger, ledger};
use reqwest::StatusCode;
use serde_json::{json, Value};

const ALPHA: &str = "alpha-token-0000000001";
const BETA: &str = "beta-token-00000000002";
const SCOPED: &str = "scoped-token-000000003";
const SLOW: &str = "slow-token-00000000004";
const JSON: (&str, &str) = ("content-type", "application/json");

struct Gateway {
    producer: TestProducer,
    http: reqwest::Client,
}

impl Gateway {
    /// The gateway on the test server, ready.
    async fn start(env: &TestEnv, extra: &[&str]) -> Self {
        let gateway = Self::start_with_nats(env, &codigo_testkit::nats_url(), extra).await;
        gateway.producer.wait_ready().await;
        gateway
    }

    /// The gateway on the NATS server at `nats_url`, not waiting for it to be ready.
    async fn start_with_nats(env: &TestEnv, nats_url: &str, extra: &[&str]) -> Self {
        let settings = format!(
            "--nats-url {nats_url} --auth required --publish-timeout-secs 2 --api-keys \
             alpha:{ALPHA},beta:{BETA};tenant=acme,scoped:{SCOPED};types=webhook.deliver,slow:{SLOW};rate=1"
        );
        let args = [&flags(&settings)[..], extra].concat();
        let producer = TestProducer::spawn(env, &args).await;
        Self {
            http: producer.http.clone(),
            producer,
        }
    }

    fn url(&self, path: &str) -> String {
        self.producer.url(path)
    }

    /// POST of `body` as JSON, with `token` as bearer if there is one.
    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.producer
            .post_raw(path, token, &[JSON], body.to_string())
            .await
    }

    /// POST to /v1/jobs as [`ALPHA`] of a raw body with `headers` (its content type among them).
    async fn post_job_with(&self, headers: &[(&str, &str)], body: String) -> Reply {
        self.producer
            .post_raw("/v1/jobs", Some(ALPHA), headers, body)
            .await
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.expect("request")).await
    }

    /// Stops the gateway, then removes `env`: the gateway never sees its streams vanish.
    async fn stop_and_clean_up(self, env: TestEnv) {
        self.producer.stop().await;
        env.cleanup().await;
    }
}

#[tokio::test]
async fn accepted_job_lands_on_the_stream_with_contract_headers() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;

    let reply = gw
        .post("/v1/jobs", Some(ALPHA), ledger("acct-1", 500))
        .await;
    reply.assert_status(StatusCode::ACCEPTED);
    let body = reply.body;
    assert_eq!(body["status"], "queued");
    assert_eq!(body["duplicate"], false);
    assert_eq!(body["type"], "ledger.post");
    let id = body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&id).expect("uuid").get_version_num(),
        7
    );

    let stream = env
        .js
        .get_stream(env.names.jobs_stream())
        .await
        .expect("stream");
    let message = stream.get_raw_message(1).await.expect("stored");
    assert_eq!(
        message.subject.as_str(),
        env.names.job_subject("ledger.post")
    );
    assert_eq!(
        message.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some(id.as_str())
    );
    assert_eq!(
        message.headers.get("Codigo-Job-Type").map(|v| v.as_str()),
        Some("ledger.post")
    );
    assert_eq!(
        message.headers.get("Content-Type").map(|v| v.as_str()),
        Some("application/json")
    );
    let envelope: Value = serde_json::from_slice(&message.payload).expect("json");
    assert_eq!(envelope["id"], id.as_str());
    assert_eq!(envelope["tenant"], "alpha");
    assert!(envelope["created_at"].as_str().is_some());
    codigo_schemas::registry()
        .validate_envelope(&envelope)
        .expect("envelope valid");

    gw.stop_and_clean_up(env).await;
}

#[tokio::test]
async fn idempotency_key_returns_the_same_id_and_marks_duplicates() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;

    let job = keyed_ledger("acct-1", 500, "order-42");
    let first = gw.post("/v1/jobs", Some(ALPHA), job.clone()).await;
    let second = gw.post("/v1/jobs", Some(ALPHA), job.clone()).await;
    assert_eq!(
        (first.status, second.status),
        (StatusCode::ACCEPTED, StatusCode::ACCEPTED)
    );
    let (first, second) = (first.body, second.body);
    assert_eq!(first["id"], second["id"]);
    assert_eq!(first["duplicate"], false);
    assert_eq!(second["duplicate"], true);
    assert_eq!(
        uuid::Uuid::parse_str(first["id"].as_str().unwrap())
            .unwrap()
            .get_version_num(),
        5
    );

    // The header works too, and another tenant with the same key gets its own job.
    let plain = ledger("acct-1", 500).to_string();
    let keyed = [JSON, ("Idempotency-Key", "order-42")];
    let via_header = gw.post_job_with(&keyed, plain).await.body;
    assert_eq!(via_header["id"], first["id"]);
    assert_eq!(via_header["duplicate"], true);
    let other_tenant = gw.post("/v1/jobs", Some(BETA), job).await.body;
    assert_ne!(other_tenant["id"], first["id"]);
    assert_eq!(other_tenant["duplicate"], false);

    // Conflicting keys are refused.
    let conflicting = keyed_ledger("acct-1", 1, "a");
    gw.post_job_with(&[JSON, ("Idempotency-Key", "b")], conflicting.to_string())
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");

    let stream = env
        .js
        .get_stream(env.names.jobs_stream())
        .await
        .expect("stream");
    let mut stream = stream;
    assert_eq!(
        stream.info().await.expect("info").state.messages,
        2,
        "duplicates are not stored"
    );
    gw.stop_and_clean_up(env).await;
}

#[tokio::test]
async fn every_bad_input_gets_its_status_and_problem_type() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &["--max-body-bytes", "2048"]).await;

    // Malformed JSON: 400.
    gw.post_job_with(&[JSON], "{\"type\": ".to_owned())
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "malformed-json");

    // Unknown job type: 422.
    let unknown = json!({"type": "nope.never", "payload": {}});
    gw.post("/v1/jobs", Some(ALPHA), unknown)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "unknown-job-type");

    // Schema violations: 422 with every pointer.
    let invalid = json!({"type": "ledger.post",
        "payload": {"account": "", "amount_cents": 0, "currency": "eur"}});
    let reply = gw.post("/v1/jobs", Some(ALPHA), invalid).await;
    reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "schema-violation");
    let mut pointers: Vec<&str> = reply.body["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["pointer"].as_str().unwrap())
        .collect();
    pointers.sort_unstable();
    assert_eq!(
        pointers,
        vec![
            "/payload/account",
            "/payload/amount_cents",
            "/payload/currency"
        ]
    );

    // Unknown top-level field: 422.
    let mut extra = ledger("a", 1);
    extra["tenant"] = json!("someone-else");
    gw.post("/v1/jobs", Some(ALPHA), extra)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");

    // Too large: 413.
    let big = json!({"type": "ledger.post", "payload": {"account": "a", "amount_cents": 1,
        "currency": "EUR", "memo": "m".repeat(4000)}});
    gw.post("/v1/jobs", Some(ALPHA), big)
        .await
        .assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");

    // Wrong content type: 415.
    let text = [("content-type", "text/plain")];
    gw.post_job_with(&text, ledger("a", 1).to_string())
        .await
        .assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");

    // Missing and invalid key: 401.
    gw.post("/v1/jobs", None, ledger("a", 1))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    gw.post("/v1/jobs", Some("not-a-real-token-at-all"), ledger("a", 1))
        .await
        .assert_status(StatusCode::UNAUTHORIZED);

    // Outside the key's scope: 403.
    gw.post("/v1/jobs", Some(SCOPED), ledger("a", 1))
        .await
        .assert_problem(StatusCode::FORBIDDEN, "job-type-forbidden");

    // Over the key's rate (1/s, burst 2): 429 with Retry-After.
    let mut limited = None;
    for _ in 0..4 {
        let reply = gw.post("/v1/jobs", Some(SLOW), ledger("a", 1)).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(reply);
            break;
        }
    }
    let limited = limited.expect("rate limit reached");
    limited.assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate-limited");
    assert!(limited.headers.get("retry-after").is_some());

    // Unknown job id, unknown route: 404 problems.
    let unknown_job = format!("/v1/jobs/{}", uuid::Uuid::now_v7());
    gw.get(&unknown_job, Some(ALPHA))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not-found");
    for (path, token) in [
        ("/v1/jobs/not-a-uuid", Some(ALPHA)),
        ("/nothing/here", None),
    ] {
        let reply = gw.get(path, token).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
    }

    gw.stop_and_clean_up(env).await;
}

#[tokio::test]
async fn jetstream_unreachable_is_503_with_retry_after_and_not_ready() {
    let env = TestEnv::bare().await;
    // Nothing listens on port 1.
    let gw = Gateway::start_with_nats(&env, "nats://127.0.0.1:1", &[]).await;
    let single = gw.post("/v1/jobs", Some(ALPHA), ledger("a", 1)).await;
    single.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(single.headers.get("retry-after").is_some());
    let batch = json!({"jobs": [ledger("a", 1)]});
    let batched = gw.post("/v1/jobs/batch", Some(ALPHA), batch).await;
    batched.assert_status(StatusCode::SERVICE_UNAVAILABLE);
    for (path, status) in [
        ("/readyz", StatusCode::SERVICE_UNAVAILABLE),
        ("/healthz", StatusCode::OK),
    ] {
        assert_eq!(gw.get(path, None).await.status, status, "{path}");
    }
    gw.stop_and_clean_up(env).await;
}

#[tokio::test]
async fn batch_reports_each_item_in_order() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &["--max-batch-items", "5"]).await;

    let keyed = keyed_ledger("b", 2, "k");
    let items = json!({"jobs": [
        ledger("a", 1),
        {"type": "ledger.post", "payload": {"account": "a", "amount_cents": 0, "currency": "EUR"}},
        keyed.clone(),
        {"type": "nope.never", "payload": {}},
        keyed,
    ]});
    let reply = gw.post("/v1/jobs/batch", Some(ALPHA), items).await;
    reply.assert_status(StatusCode::ACCEPTED);
    let results = reply.body["results"].as_array().expect("results");
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        vec!["queued", "rejected", "queued", "rejected", "queued"]
    );
    let indices: Vec<u64> = results
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, vec![0, 1, 2, 3, 4]);
    assert_eq!(
        results[1]["error"]["violations"][0]["pointer"],
        "/jobs/1/payload/amount_cents"
    );
    assert_eq!(
        results[3]["error"]["type"],
        "https://codigo.dev/problems/unknown-job-type"
    );
    assert_eq!(results[2]["id"], results[4]["id"]);
    // Within one batch the second copy is the duplicate, whichever ack arrives first.
    let duplicates = [
        results[2]["duplicate"].as_bool().unwrap(),
        results[4]["duplicate"].as_bool().unwrap(),
    ];
    assert_eq!(duplicates.iter().filter(|d| **d).count(), 1);

    let too_many = json!({"jobs": vec![ledger("a", 1); 6]});
    gw.post("/v1/jobs/batch", Some(ALPHA), too_many)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    // Not an object with a list of jobs.
    gw.post("/v1/jobs/batch", Some(ALPHA), json!([ledger("a", 1)]))
        .await
        .assert_status(StatusCode::UNPROCESSABLE_ENTITY);

    gw.stop_and_clean_up(env).await;
}

#[tokio::test]
async fn job_status_is_scoped_to_the_tenant() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO jobs (id, type, status, attempts, tenant, created_at, finished_at)
                 VALUES ($1, 'ledger.post', 'succeeded', 1, 'acme', now(), now())",
    )
    .bind(id)
    .execute(&env.pool)
    .await
    .expect("insert");

    let path = format!("/v1/jobs/{id}");
    let owner = gw.get(&path, Some(BETA)).await;
    owner.assert_status(StatusCode::OK);
    assert_eq!(owner.body["status"], "succeeded");
    assert_eq!(owner.body["type"], "ledger.post");

    let stranger = gw.get(&path, Some(ALPHA)).await;
    stranger.assert_status(StatusCode::NOT_FOUND);
    gw.stop_and_clean_up(env).await;
}

#[tokio::test]
async fn discovery_routes_and_metrics() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;

    let openapi = gw.get("/openapi.json", None).await.body;
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/jobs",
        "/v1/jobs/batch",
        "/v1/jobs/{id}",
        "/v1/job-types",
    ] {
        assert!(openapi["paths"].get(path).is_some(), "{path} documented");
    }
    let reply = gw.get("/v1/job-types", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let types = reply.body;
    let names: Vec<&str> = types["job_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["ledger.post", "webhook.deliver"]);
    assert_eq!(
        types["job_types"][0]["schema"]["required"],
        json!(["account", "amount_cents", "currency"])
    );

    gw.post("/v1/jobs", Some(ALPHA), ledger("a", 1)).await;
    gw.post("/v1/jobs", None, ledger("a", 1)).await;
    let text = gw.get("/metrics", None).await.text;
    assert!(
        text.contains(
            r#"codigo_gateway_requests_total{route="/v1/jobs",method="POST",status="202"}"#
        ),
        "{text}"
    );
    assert!(text
        .contains(r#"codigo_gateway_requests_total{route="/v1/jobs",method="POST",status="401"}"#));
    assert!(text.contains(
        r#"codigo_gateway_request_duration_seconds_bucket{route="/v1/jobs",method="POST",le="0.5"}"#
    ));
    assert!(text.contains(
        r#"codigo_gateway_jobs_published_total{job_type="ledger.post",result="accepted"}"#
    ));
    assert!(!text.contains(ALPHA), "tokens never reach /metrics");

    // The stream holds only what was accepted.
    let mut stream = env.js.get_stream(env.names.jobs_stream()).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    gw.stop_and_clean_up(env).await;
}
