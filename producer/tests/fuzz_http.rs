//! Whatever a client sends, the running gateway answers below 500: random bodies, content
//! types, credentials and headers against every ingest route (proptest, shrinking included).
mod gateway;

use codigo_testkit::arbitrary::{json_scalars, json_trees, TreeSize};
use codigo_testkit::TestEnv;
use gateway::{Gateway, ALPHA, SCOPED};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
struct Request {
    path: &'static str,
    content_type: Option<String>,
    token: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn json_value() -> impl Strategy<Value = Value> {
    let size = TreeSize {
        depth: 4,
        desired_size: 40,
        expected_branch_size: 6,
        max_items: 5,
    };
    json_trees(json_scalars(".{0,16}"), ".{0,8}".boxed(), size)
}

/// Valid requests of each route with one part replaced by junk, so that the deeper checks run.
fn near_valid() -> impl Strategy<Value = Vec<u8>> {
    let job = json!({"type": "ledger.post", "idempotency_key": "k",
        "payload": {"account": "fuzz", "amount_cents": 5, "currency": "EUR", "memo": "m"}});
    let pointers = [
        "/type",
        "/payload",
        "/payload/account",
        "/payload/amount_cents",
        "/payload/currency",
        "/payload/memo",
        "/idempotency_key",
        "/extra",
    ];
    (0..pointers.len(), json_value(), 0..4usize).prop_map(move |(field, junk, shape)| {
        let mut item = job.clone();
        let pointer = pointers[field];
        let (parent, name) = pointer.rsplit_once('/').unwrap_or(("", pointer));
        if let Some(Value::Object(map)) = item.pointer_mut(parent) {
            map.insert(name.to_owned(), junk);
        }
        let body = match shape {
            0 => item,
            1 => json!({"jobs": [item, job.clone()]}),
            2 => json!({"specversion": "1.0", "id": "e1", "source": "/fuzz",
                        "type": item["type"], "data": item["payload"]}),
            _ => json!([item]),
        };
        serde_json::to_vec(&body).unwrap_or_default()
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        near_valid(),
        (1..200usize).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    let path = prop_oneof![
        Just("/v1/jobs"),
        Just("/v1/jobs/batch"),
        Just("/v1/events"),
        Just("/v1/jobs/not-a-uuid"),
        Just("/nowhere"),
    ];
    let content_type = prop_oneof![
        Just(None),
        Just(Some("application/json".to_owned())),
        Just(Some("application/cloudevents+json".to_owned())),
        Just(Some("application/cloudevents-batch+json".to_owned())),
        Just(Some("application/json; charset=utf-8".to_owned())),
        Just(Some("text/plain".to_owned())),
        "[ -~]{0,30}".prop_map(Some),
    ];
    let token = prop_oneof![
        Just(Some(ALPHA)),
        Just(Some(ALPHA)),
        Just(Some(SCOPED)),
        Just(None),
        Just(Some("not-a-key")),
    ];
    let header = (
        prop_oneof![
            Just("idempotency-key"),
            Just("ce-id"),
            Just("ce-type"),
            Just("ce-source"),
            Just("ce-specversion"),
            Just("ce-time"),
            Just("ce-subject"),
            Just("traceparent"),
            Just("content-encoding"),
            Just("authorization"),
        ],
        prop_oneof![
            "[ -~]{0,40}",
            Just("1.0".to_owned()),
            Just("ledger.post".to_owned()),
            Just("Bearer ".to_owned()),
        ],
    );
    (
        path,
        content_type,
        token,
        prop::collection::vec(header, 0..5),
        body(),
    )
        .prop_map(|(path, content_type, token, headers, body)| Request {
            path,
            content_type,
            token,
            headers,
            body,
        })
}

async fn send(gateway: &Gateway, request: &Request) -> Result<(u16, String), String> {
    let mut builder = gateway
        .http
        .post(gateway.url(request.path))
        .body(request.body.clone());
    if let Some(content_type) = &request.content_type {
        builder = builder.header("content-type", content_type.as_str());
    }
    if let Some(token) = request.token {
        builder = builder.bearer_auth(token);
    }
    for (name, value) in &request.headers {
        builder = builder.header(*name, value.as_str());
    }
    let response = builder.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    Ok((status, response.text().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_never_get_a_server_error() {
    let env = TestEnv::new().await;
    let gateway = Gateway::start(&env, &[]).await;
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    let statuses = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let result = tokio::task::block_in_place(|| {
        runner.run(&request(), |request| {
            let answer = handle.block_on(send(&gateway, &request));
            let (status, text) = answer.map_err(TestCaseError::fail)?;
            statuses.lock().expect("statuses").insert(status);
            prop_assert!(status < 500, "{status} for {request:?}: {text}");
            Ok(())
        })
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    // The run reached past the first checks: some requests were refused, some accepted.
    let statuses = statuses.into_inner().expect("statuses");
    assert!(
        statuses.iter().any(|s| (400..500).contains(s)),
        "{statuses:?}"
    );
    gateway.stop().await;
    env.cleanup().await;
}
