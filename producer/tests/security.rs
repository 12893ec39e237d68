//! Security properties of the gateway against real NATS and Postgres: tenant isolation on
//! every route, job types as the only source of subjects, the JSON depth limit, the 401
//! answer, and secrets that never reach logs, error responses or /metrics (the real binary).
mod gateway;

use std::time::Duration;

use codigo_testkit::{
    assert_no_secret, free_port, unique_secrets, ChildProcess, NatsServer, TestEnv,
};
use gateway::{
    keyed_ledger, ledger, ledger_payload, stored, Gateway, Reply, ALPHA, BETA, GAMMA, SCOPED,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

const CE_JSON: &str = "application/cloudevents+json";

/// The same logical job (same type and idempotency key) submitted by `token` on each route.
async fn submit_everywhere(gw: &Gateway, token: &str, key: &str) -> Vec<Reply> {
    let job = keyed_ledger("shared-account", 100, key);
    let single = gw.post("/v1/jobs", token, job.clone()).await;
    let batch = gw
        .post("/v1/jobs/batch", token, json!({"jobs": [job]}))
        .await;
    let event = json!({"specversion": "1.0", "id": key, "source": "/billing", "type": "ledger.post",
        "tenant": "acme", "data": ledger_payload("shared-account", 100)});
    let structured = gw
        .post_raw(
            "/v1/events",
            Some(token),
            &[("Content-Type", CE_JSON)],
            event.to_string(),
        )
        .await;
    vec![single, batch, structured]
}

fn id_and_duplicate(reply: &Reply) -> (String, bool) {
    let item = reply.body["results"].get(0).unwrap_or(&reply.body);
    assert_eq!(item["status"], "queued", "{}", reply.text);
    (
        item["id"].as_str().expect("id").to_owned(),
        item["duplicate"].as_bool().expect("duplicate"),
    )
}

#[tokio::test]
async fn a_tenant_cannot_suppress_another_tenants_job_on_any_route() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;

    // alpha goes first on every route; acme (key beta) reuses alpha's key afterwards.
    let alpha = submit_everywhere(&gw, ALPHA, "invoice-7").await;
    let acme = submit_everywhere(&gw, BETA, "invoice-7").await;
    let (alpha_id, alpha_dup) = id_and_duplicate(&alpha[0]);
    assert!(!alpha_dup);
    let (acme_id, acme_dup) = id_and_duplicate(&acme[0]);
    assert_ne!(acme_id, alpha_id, "ids are scoped per tenant");
    assert!(
        !acme_dup,
        "acme's job is its own, not a duplicate of alpha's"
    );
    assert_eq!(
        id_and_duplicate(&alpha[1]),
        (alpha_id.clone(), true),
        "batch: same tenant, same job"
    );
    assert_eq!(
        id_and_duplicate(&acme[1]),
        (acme_id.clone(), true),
        "batch: same tenant, same job"
    );
    // An event's key is its source and id: a job of its own, again scoped per tenant.
    let (alpha_event, alpha_event_dup) = id_and_duplicate(&alpha[2]);
    let (acme_event, acme_event_dup) = id_and_duplicate(&acme[2]);
    assert!(!alpha_event_dup && !acme_event_dup);
    assert_ne!(alpha_event, acme_event, "event ids are scoped per tenant");
    assert_ne!(alpha_event, alpha_id);

    // Tenant, not key, is the scope: acme's second key sees acme's job.
    let gamma = submit_everywhere(&gw, GAMMA, "invoice-7").await;
    assert_eq!(id_and_duplicate(&gamma[0]), (acme_id.clone(), true));
    assert_eq!(id_and_duplicate(&gamma[2]), (acme_event.clone(), true));

    // One job and one event per tenant, each with the tenant of its key; the body's `tenant`
    // extension attribute changed nothing.
    let messages = stored(&env).await;
    let tenants: Vec<(&str, &str)> = messages
        .iter()
        .map(|(_, e)| {
            (
                e["id"].as_str().expect("id"),
                e["tenant"].as_str().expect("tenant"),
            )
        })
        .collect();
    assert_eq!(
        tenants,
        vec![
            (alpha_id.as_str(), "alpha"),
            (alpha_event.as_str(), "alpha"),
            (acme_id.as_str(), "acme"),
            (acme_event.as_str(), "acme")
        ]
    );

    gw.stop_and_clean_up(env).await;
}

/// Records a stored job the way a worker does, with the tenant its envelope carries (over the
/// gateway's `queued` row, if it wrote one).
async fn record_as_worker(env: &TestEnv, envelope: &Value) -> Uuid {
    let id = Uuid::parse_str(envelope["id"].as_str().expect("id")).expect("uuid");
    sqlx::query(
        "INSERT INTO jobs (id, type, status, attempts, payload, idempotency_key, tenant,
                           created_at, started_at, finished_at)
         VALUES ($1, $2, 'succeeded', 1, $3, $4, $5, now(), now(), now())
         ON CONFLICT (id) DO UPDATE SET status = 'succeeded', attempts = 1,
                                        started_at = now(), finished_at = now()",
    )
    .bind(id)
    .bind(envelope["type"].as_str())
    .bind(&envelope["payload"])
    .bind(envelope["idempotency_key"].as_str())
    .bind(envelope["tenant"].as_str())
    .execute(&env.pool)
    .await
    .expect("insert job row");
    id
}

#[tokio::test]
async fn a_tenant_cannot_read_another_tenants_job() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;

    let job = keyed_ledger("acct", 5, "secret-order");
    let submitted = gw.post("/v1/jobs", BETA, job).await;
    assert_eq!(submitted.status, StatusCode::ACCEPTED, "{}", submitted.text);
    let (_, envelope) = stored(&env).await.pop().expect("stored");
    let id = record_as_worker(&env, &envelope).await;
    assert_eq!(envelope["tenant"], "acme");

    // A job published straight to JetStream has no tenant: no key may read it.
    let orphan = record_as_worker(
        &env,
        &json!({"id": Uuid::now_v7().to_string(), "type": "ledger.post", "payload": {}}),
    )
    .await;

    for token in [BETA, GAMMA] {
        let owner = gw.get(&format!("/v1/jobs/{id}"), token).await;
        assert_eq!(owner.status, StatusCode::OK, "{}", owner.text);
        assert_eq!(owner.body["idempotency_key"], "secret-order");
    }
    // Another tenant gets exactly what an unknown id gets: nothing tells the job exists.
    let unknown = Uuid::now_v7();
    let missing = gw.get(&format!("/v1/jobs/{unknown}"), ALPHA).await;
    missing.assert_problem(StatusCode::NOT_FOUND, "not-found");
    for token in [ALPHA, SCOPED] {
        let stranger = gw.get(&format!("/v1/jobs/{id}"), token).await;
        stranger.assert_problem(StatusCode::NOT_FOUND, "not-found");
        assert!(!stranger.text.contains("secret-order"));
        assert_eq!(
            stranger.text.replace(&id.to_string(), "ID"),
            missing.text.replace(&unknown.to_string(), "ID")
        );
    }
    for token in [ALPHA, BETA, SCOPED] {
        gw.get(&format!("/v1/jobs/{orphan}"), token)
            .await
            .assert_problem(StatusCode::NOT_FOUND, "not-found");
    }

    gw.stop_and_clean_up(env).await;
}

#[tokio::test]
async fn only_registered_job_types_become_subjects() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;

    let hostile = [
        "ledger.post.>",
        "ledger.*",
        ">",
        "ledger.post ",
        " ledger.post",
        "ledger.post\r\nPUB codigo.jobs.x 2\r\nhi",
        "LEDGER.POST",
        "ledger..post",
        "jobs.ledger.post",
        "",
    ];
    for job_type in hostile {
        let body = json!({"type": job_type, "payload": ledger_payload("a", 1)});
        gw.post("/v1/jobs", ALPHA, body.clone())
            .await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "unknown-job-type");
        let batch = gw
            .post("/v1/jobs/batch", ALPHA, json!({"jobs": [body]}))
            .await;
        assert_eq!(
            batch.body["results"][0]["status"], "rejected",
            "{}",
            batch.text
        );
        let event = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": job_type,
            "data": ledger_payload("a", 1)});
        let reply = gw
            .post_event(&[("Content-Type", CE_JSON)], event.to_string())
            .await;
        assert!(
            reply.status.is_client_error(),
            "{job_type:?}: {}",
            reply.text
        );
    }
    let binary = gw
        .post_event(
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "1"),
                ("ce-source", "/s"),
                ("ce-type", "ledger.>"),
            ],
            ledger_payload("a", 1).to_string(),
        )
        .await;
    binary.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "unknown-job-type");

    assert!(
        stored(&env).await.is_empty(),
        "nothing reached the work stream"
    );
    gw.stop_and_clean_up(env).await;
}

/// `levels` nested arrays around a number.
fn nested(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!([inner]))
}

fn webhook(body: Value) -> Value {
    json!({"type": "webhook.deliver", "payload": {"url": "https://example.com/hook", "body": body}})
}

#[tokio::test]
async fn json_nesting_deeper_than_32_levels_is_refused_on_every_route() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;

    // Body object, payload object, then the webhook body: 30 levels of it make 32 in all.
    let fits = gw.post("/v1/jobs", ALPHA, webhook(nested(30))).await;
    assert_eq!(fits.status, StatusCode::ACCEPTED, "{}", fits.text);
    gw.post("/v1/jobs", ALPHA, webhook(nested(31)))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "too-deeply-nested");
    gw.post(
        "/v1/jobs/batch",
        ALPHA,
        json!({"jobs": [webhook(nested(29))]}),
    )
    .await
    .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "too-deeply-nested");
    let event = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "webhook.deliver",
        "data": {"url": "https://example.com/hook", "body": nested(31)}});
    gw.post_event(&[("Content-Type", CE_JSON)], event.to_string())
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "too-deeply-nested");
    let binary = [
        ("ce-specversion", "1.0"),
        ("ce-id", "2"),
        ("ce-source", "/s"),
        ("ce-type", "webhook.deliver"),
    ];
    gw.post_event(
        &binary,
        json!({"url": "https://example.com/hook", "body": nested(40)}).to_string(),
    )
    .await
    .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "too-deeply-nested");
    // Far past serde_json's own recursion limit: still the same clear answer.
    let hostile = format!(
        "{{\"type\":\"ledger.post\",\"payload\":{}",
        "[".repeat(100_000)
    );
    gw.post_raw(
        "/v1/jobs",
        Some(ALPHA),
        &[("Content-Type", "application/json")],
        hostile,
    )
    .await
    .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "too-deeply-nested");
    // Brackets inside strings are text, not nesting.
    let mut memo = ledger("a", 1);
    memo["payload"]["memo"] = json!("[".repeat(200));
    let reply = gw.post("/v1/jobs", ALPHA, memo).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);

    assert_eq!(stored(&env).await.len(), 2);
    gw.stop_and_clean_up(env).await;
}

#[tokio::test]
async fn unauthorized_answers_name_the_scheme_and_echo_nothing() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;

    let guess = "guessed-token-that-is-wrong-123";
    let reply = gw.post("/v1/jobs", guess, ledger("a", 1)).await;
    reply.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        reply
            .headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"codigo\"")
    );
    assert!(!reply.text.contains(guess));
    let basic = gw
        .post_raw(
            "/v1/jobs",
            None,
            &[
                ("Authorization", &format!("Basic {ALPHA}")),
                ("Content-Type", "application/json"),
            ],
            ledger("a", 1).to_string(),
        )
        .await;
    basic.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    // The scheme is case-insensitive (RFC 9110).
    let upper = gw
        .post_raw(
            "/v1/jobs",
            None,
            &[
                ("Authorization", &format!("BEARER {ALPHA}")),
                ("Content-Type", "application/json"),
            ],
            ledger("a", 1).to_string(),
        )
        .await;
    assert_eq!(upper.status, StatusCode::ACCEPTED, "{}", upper.text);

    gw.stop_and_clean_up(env).await;
}

// --- secrets, with the real binary -------------------------------------------------------

/// A run of the real `codigo-producer` binary with exactly `vars` in its environment.
fn start_producer(vars: &[(&str, String)]) -> ChildProcess {
    let command = codigo_testkit::command_with_only("codigo-producer", vars);
    ChildProcess::spawn("codigo-producer", command)
}

#[tokio::test]
async fn secrets_never_reach_logs_errors_or_metrics() {
    let (unique, [api_token, nats_password, db_password, guessed_token]) =
        unique_secrets(["api-token", "nats-password", "db-password", "guessed-token"]);
    let secrets = [&api_token, &nats_password, &db_password, &guessed_token];

    // NATS refuses the password (the server has another one); Postgres has no such role.
    let nats = NatsServer::with_user("codigo", &format!("right-{unique}"));
    let port = free_port();
    let namespace = format!("t{}", &unique[..12]);
    let base = |nats_url: String, database_url: String, keys: String| {
        vec![
            ("CODIGO_HTTP_ADDR", format!("127.0.0.1:{port}")),
            ("CODIGO_API_KEYS", keys),
            ("CODIGO_NAMESPACE", namespace.clone()),
            ("NATS_URL", nats_url),
            ("DATABASE_URL", database_url),
            ("LOG_FORMAT", "json".to_owned()),
            // Everything, dependencies included, at the most talkative level.
            ("RUST_LOG", "trace".to_owned()),
        ]
    };
    let database_url = format!(
        "postgres://codigo_nobody:{db_password}@127.0.0.1:5432/codigo_nowhere?sslmode=prefer"
    );
    let mut env = base(
        nats.url(),
        database_url.clone(),
        format!("tenant-a:{api_token}"),
    );
    env.push(("NATS_USER", "codigo".to_owned()));
    env.push(("NATS_PASSWORD", nats_password.clone()));
    let producer = start_producer(&env);

    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let mut up = false;
    for _ in 0..200 {
        if http.get(url("/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "codigo-producer answered /healthz");

    let mut seen = String::new();
    let mut record = |reply: Reply| {
        seen.push_str(&format!(
            "{} {:?} {}\n",
            reply.status, reply.headers, reply.text
        ));
        reply
    };
    let send = |request: reqwest::RequestBuilder| async {
        gateway::read(request.send().await.expect("request")).await
    };
    let post =
        |path: &str, token: &str, body: &Value| http.post(url(path)).bearer_auth(token).json(body);
    let job = ledger("a", 1);
    // JetStream unreachable (authorization refused): 503.
    let reply = record(send(post("/v1/jobs", &api_token, &job)).await);
    reply.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let batch = json!({"jobs": [job]});
    let reply = record(send(post("/v1/jobs/batch", &api_token, &batch)).await);
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    // A wrong token: 401.
    let reply = record(send(post("/v1/jobs", &guessed_token, &job)).await);
    reply.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    // Postgres refuses the connection: 503.
    let unknown_job = url(&format!("/v1/jobs/{}", Uuid::now_v7()));
    let reply = record(send(http.get(unknown_job).bearer_auth(&api_token)).await);
    reply.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let reply = record(send(http.get(url("/readyz"))).await);
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let metrics = record(send(http.get(url("/metrics"))).await);
    assert!(
        metrics.text.contains("codigo_gateway_requests_total"),
        "{}",
        metrics.text
    );
    assert_no_secret("responses and /metrics", &seen, &secrets);

    let logs = producer.stop().await.output;
    assert!(
        logs.to_lowercase().contains("authorization violation"),
        "the NATS refusal was logged:\n{logs}"
    );
    assert!(
        logs.contains("job status query failed"),
        "the Postgres failure was logged:\n{logs}"
    );
    assert_no_secret("producer logs", &logs, &secrets);

    // Start-up failures print their error: never with the secret that came with it.
    let url_password = format!("url-password-{unique}");
    for (what, env) in [
        (
            "credentials inside an invalid NATS_URL",
            base(
                format!("nats://codigo:{url_password}@127.0.0.1:notaport"),
                database_url.clone(),
                format!("a:{api_token}"),
            ),
        ),
        (
            "an invalid DATABASE_URL",
            base(
                nats.url(),
                format!("postgres://codigo:{db_password}@127.0.0.1:notaport/db"),
                format!("a:{api_token}"),
            ),
        ),
        (
            "an invalid CODIGO_API_KEYS entry",
            base(
                nats.url(),
                database_url.clone(),
                format!("a:{api_token};rate=fast"),
            ),
        ),
        (
            "two keys with one token",
            base(
                nats.url(),
                database_url.clone(),
                format!("a:{api_token},b:{api_token}"),
            ),
        ),
    ] {
        let exited = start_producer(&env).exited().await;
        let (code, output) = (exited.status.code(), exited.output);
        assert_ne!(code, Some(0), "{what}: the binary refuses to start");
        assert!(
            output.contains("Error") || output.contains("error"),
            "{what}: says why:\n{output}"
        );
        assert_no_secret(what, &output, &[&api_token, &db_password, &url_password]);
    }
}
