//! The gateway against real NATS and Postgres: every row of the contract's error table, ids,
//! idempotency, batches, tenants and what lands on the stream.

use codigo_testkit::{flags, TestEnv, TestProducer};
use reqwest::StatusCode;
use serde_json::{json, Value};

const ALPHA: &str = "alpha-token-0000000001";
const BETA: &str = "beta-token-00000000002";
const SCOPED: &str = "scoped-token-000000003";
const SLOW: &str = "slow-token-00000000004";

struct Gateway {
    producer: TestProducer,
    http: reqwest::Client,
}

impl Gateway {
    async fn start(env: &TestEnv, extra: &[&str]) -> Self {
        Self::start_with_nats(env, &codigo_testkit::nats_url(), extra).await
    }

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

    async fn wait_ready(&self) {
        self.producer.wait_ready().await;
    }

    async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.post(self.url(path)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.expect("request")).await
    }

    async fn stop(self) {
        self.producer.stop().await;
    }
}

async fn read(response: reqwest::Response) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, body)
}

fn ledger(account: &str, amount: i64) -> Value {
    json!({"type": "ledger.post", "payload": {"account": account, "amount_cents": amount, "currency": "EUR"}})
}

fn assert_problem(headers: &reqwest::header::HeaderMap, body: &Value, slug: &str) {
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{body}"
    );
    assert_eq!(
        body["type"],
        format!("https://codigo.dev/problems/{slug}"),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn accepted_job_lands_on_the_stream_with_contract_headers() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;
    gw.wait_ready().await;

    let (status, _, body) = gw
        .post("/v1/jobs", Some(ALPHA), ledger("acct-1", 500))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
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

    gw.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_same_id_and_marks_duplicates() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;
    gw.wait_ready().await;

    let mut job = ledger("acct-1", 500);
    job["idempotency_key"] = json!("order-42");
    let (s1, _, first) = gw.post("/v1/jobs", Some(ALPHA), job.clone()).await;
    let (s2, _, second) = gw.post("/v1/jobs", Some(ALPHA), job.clone()).await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
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
    let plain = ledger("acct-1", 500);
    let response = gw
        .http
        .post(gw.url("/v1/jobs"))
        .bearer_auth(ALPHA)
        .header("Idempotency-Key", "order-42")
        .json(&plain)
        .send()
        .await
        .unwrap();
    let (_, _, via_header) = read(response).await;
    assert_eq!(via_header["id"], first["id"]);
    assert_eq!(via_header["duplicate"], true);
    let (_, _, other_tenant) = gw.post("/v1/jobs", Some(BETA), job).await;
    assert_ne!(other_tenant["id"], first["id"]);
    assert_eq!(other_tenant["duplicate"], false);

    // Conflicting keys are refused.
    let mut conflicting = ledger("acct-1", 1);
    conflicting["idempotency_key"] = json!("a");
    let response = gw
        .http
        .post(gw.url("/v1/jobs"))
        .bearer_auth(ALPHA)
        .header("Idempotency-Key", "b")
        .json(&conflicting)
        .send()
        .await
        .unwrap();
    let (status, headers, body) = read(response).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_problem(&headers, &body, "invalid-request");

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
    gw.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn every_bad_input_gets_its_status_and_problem_type() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &["--max-body-bytes", "2048"]).await;
    gw.wait_ready().await;

    // Malformed JSON: 400.
    let response = gw
        .http
        .post(gw.url("/v1/jobs"))
        .bearer_auth(ALPHA)
        .header("content-type", "application/json")
        .body("{\"type\": ")
        .send()
        .await
        .unwrap();
    let (status, headers, body) = read(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_problem(&headers, &body, "malformed-json");

    // Unknown job type: 422.
    let (status, headers, body) = gw
        .post(
            "/v1/jobs",
            Some(ALPHA),
            json!({"type": "nope.never", "payload": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_problem(&headers, &body, "unknown-job-type");

    // Schema violations: 422 with every pointer.
    let (status, headers, body) = gw
        .post(
            "/v1/jobs",
            Some(ALPHA),
            json!({"type": "ledger.post",
        "payload": {"account": "", "amount_cents": 0, "currency": "eur"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_problem(&headers, &body, "schema-violation");
    let mut pointers: Vec<&str> = body["violations"]
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
    let (status, headers, body) = gw.post("/v1/jobs", Some(ALPHA), extra).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_problem(&headers, &body, "invalid-request");

    // Too large: 413.
    let big = json!({"type": "ledger.post", "payload": {"account": "a", "amount_cents": 1,
        "currency": "EUR", "memo": "m".repeat(4000)}});
    let (status, headers, body) = gw.post("/v1/jobs", Some(ALPHA), big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_problem(&headers, &body, "payload-too-large");

    // Wrong content type: 415.
    let response = gw
        .http
        .post(gw.url("/v1/jobs"))
        .bearer_auth(ALPHA)
        .header("content-type", "text/plain")
        .body(ledger("a", 1).to_string())
        .send()
        .await
        .unwrap();
    let (status, headers, body) = read(response).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_problem(&headers, &body, "unsupported-media-type");

    // Missing and invalid key: 401.
    let (status, headers, body) = gw.post("/v1/jobs", None, ledger("a", 1)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_problem(&headers, &body, "unauthorized");
    let (status, _, _) = gw
        .post("/v1/jobs", Some("not-a-real-token-at-all"), ledger("a", 1))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Outside the key's scope: 403.
    let (status, headers, body) = gw.post("/v1/jobs", Some(SCOPED), ledger("a", 1)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_problem(&headers, &body, "job-type-forbidden");

    // Over the key's rate (1/s, burst 2): 429 with Retry-After.
    let mut limited = None;
    for _ in 0..4 {
        let (status, headers, body) = gw.post("/v1/jobs", Some(SLOW), ledger("a", 1)).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            limited = Some((headers, body));
            break;
        }
    }
    let (headers, body) = limited.expect("rate limit reached");
    assert_problem(&headers, &body, "rate-limited");
    assert!(headers.get("retry-after").is_some());

    // Unknown job id, unknown route: 404 problems.
    let response = gw
        .http
        .get(gw.url(&format!("/v1/jobs/{}", uuid::Uuid::now_v7())))
        .bearer_auth(ALPHA)
        .send()
        .await
        .unwrap();
    let (status, headers, body) = read(response).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_problem(&headers, &body, "not-found");
    let response = gw
        .http
        .get(gw.url("/v1/jobs/not-a-uuid"))
        .bearer_auth(ALPHA)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = gw.http.get(gw.url("/nothing/here")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    gw.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn jetstream_unreachable_is_503_with_retry_after_and_not_ready() {
    let env = TestEnv::bare().await;
    // Nothing listens on port 1.
    let gw = Gateway::start_with_nats(&env, "nats://127.0.0.1:1", &[]).await;
    let (status, headers, body) = gw.post("/v1/jobs", Some(ALPHA), ledger("a", 1)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_problem(&headers, &body, "unavailable");
    assert!(headers.get("retry-after").is_some());
    let (status, _, body) = gw
        .post(
            "/v1/jobs/batch",
            Some(ALPHA),
            json!({"jobs": [ledger("a", 1)]}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let ready = gw.http.get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health = gw.http.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    gw.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn batch_reports_each_item_in_order() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &["--max-batch-items", "5"]).await;
    gw.wait_ready().await;

    let mut keyed = ledger("b", 2);
    keyed["idempotency_key"] = json!("k");
    let items = json!({"jobs": [
        ledger("a", 1),
        {"type": "ledger.post", "payload": {"account": "a", "amount_cents": 0, "currency": "EUR"}},
        keyed.clone(),
        {"type": "nope.never", "payload": {}},
        keyed,
    ]});
    let (status, _, body) = gw.post("/v1/jobs/batch", Some(ALPHA), items).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let results = body["results"].as_array().expect("results");
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
    let (status, headers, body) = gw.post("/v1/jobs/batch", Some(ALPHA), too_many).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_problem(&headers, &body, "invalid-request");
    let (status, _, _) = gw
        .post("/v1/jobs/batch", Some(ALPHA), json!([ledger("a", 1)]))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    gw.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn job_status_is_scoped_to_the_tenant() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;
    gw.wait_ready().await;
    let id = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO jobs (id, type, status, attempts, tenant, created_at, finished_at)
                 VALUES ($1, 'ledger.post', 'succeeded', 1, 'acme', now(), now())",
    )
    .bind(id)
    .execute(&env.pool)
    .await
    .expect("insert");

    let owner = gw
        .http
        .get(gw.url(&format!("/v1/jobs/{id}")))
        .bearer_auth(BETA)
        .send()
        .await
        .unwrap();
    let (status, _, body) = read(owner).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["type"], "ledger.post");

    let stranger = gw
        .http
        .get(gw.url(&format!("/v1/jobs/{id}")))
        .bearer_auth(ALPHA)
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), StatusCode::NOT_FOUND);
    gw.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn discovery_routes_and_metrics() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;
    gw.wait_ready().await;

    let (_, _, openapi) = read(gw.http.get(gw.url("/openapi.json")).send().await.unwrap()).await;
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/jobs",
        "/v1/jobs/batch",
        "/v1/jobs/{id}",
        "/v1/job-types",
    ] {
        assert!(openapi["paths"].get(path).is_some(), "{path} documented");
    }
    let (status, _, types) = read(gw.http.get(gw.url("/v1/job-types")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
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
    let text = gw
        .http
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    gw.stop().await;
    env.cleanup().await;
}
