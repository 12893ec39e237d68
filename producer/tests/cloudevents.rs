//! `POST /v1/events` against real NATS and Postgres, with the examples of the CloudEvents
//! HTTP protocol binding (structured, binary and batch modes) and of the JSON event format.
mod gateway;

use std::path::Path;
use std::process::Command;

use codigo_testkit::TestEnv;
use gateway::{ledger_payload, stored, Gateway, ALPHA, SCOPED};
use reqwest::StatusCode;
use serde_json::{json, Value};

const STRUCTURED: &str = "application/cloudevents+json; charset=utf-8";
const BATCH: &str = "application/cloudevents-batch+json; charset=utf-8";

/// The structured-mode example of the HTTP binding (§3.2.3), with the attributes the
/// example leaves out filled in from the JSON format's example, and a job type and payload.
fn structured_example(data: Value) -> Value {
    json!({
        "specversion" : "1.0",
        "type" : "ledger.post",
        "source" : "https://github.com/cloudevents/spec/pull",
        "subject" : "123",
        "id" : "A234-1234-1234",
        "time" : "2018-04-05T17:31:00Z",
        "comexampleextension1" : "value",
        "comexampleothervalue" : 5,
        "datacontenttype" : "application/json",
        "data" : data
    })
}

/// The binary-mode example of the HTTP binding (§3.1.4), with a job type.
const BINARY_EXAMPLE: [(&str, &str); 6] = [
    ("ce-specversion", "1.0"),
    ("ce-type", "ledger.post"),
    ("ce-time", "2018-04-05T03:56:24Z"),
    ("ce-id", "1234-1234-1234"),
    ("ce-source", "/mycontext/subcontext"),
    ("Content-Type", "application/json; charset=utf-8"),
];

#[tokio::test]
async fn structured_mode_event_becomes_a_job() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;

    let event = structured_example(ledger_payload("acct-ce", 250));
    let first = gw
        .post_event(&[("Content-Type", STRUCTURED)], event.to_string())
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    assert_eq!(first.body["type"], "ledger.post");
    assert_eq!(first.body["status"], "queued");
    assert_eq!(first.body["duplicate"], false);
    let id = first.body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&id).expect("uuid").get_version_num(),
        5
    );

    // The event's source and id are its idempotency key: a redelivered event is a duplicate,
    // while POST /v1/jobs with the event's id as its key is another job.
    let again = gw
        .post_event(&[("Content-Type", STRUCTURED)], event.to_string())
        .await;
    assert_eq!(again.body["id"], id.as_str());
    assert_eq!(again.body["duplicate"], true);
    let via_jobs = gw
        .post(
            "/v1/jobs",
            ALPHA,
            json!({"type": "ledger.post", "payload": ledger_payload("acct-ce", 250),
                   "idempotency_key": "A234-1234-1234"}),
        )
        .await;
    assert_eq!(via_jobs.status, StatusCode::ACCEPTED, "{}", via_jobs.text);
    assert_ne!(via_jobs.body["id"], id.as_str());
    assert_eq!(via_jobs.body["duplicate"], false);

    let messages = stored(&env).await;
    assert_eq!(messages.len(), 2, "the duplicate event is not stored");
    let (subject, envelope) = &messages[0];
    assert_eq!(subject, &env.names.job_subject("ledger.post"));
    assert_eq!(envelope["id"], id.as_str());
    assert_eq!(envelope["idempotency_key"], "A234-1234-1234");
    assert_eq!(envelope["payload"], ledger_payload("acct-ce", 250));
    assert_eq!(envelope["tenant"], "alpha");
    codigo_schemas::registry()
        .validate_envelope(envelope)
        .expect("envelope valid");

    gw.stop_and_clean_up(env).await;
}

#[tokio::test]
async fn binary_mode_event_becomes_a_job() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;

    let data = ledger_payload("acct-bin", -75);
    let reply = gw.post_event(&BINARY_EXAMPLE, data.to_string()).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.body["type"], "ledger.post");
    assert_eq!(reply.body["duplicate"], false);
    let again = gw.post_event(&BINARY_EXAMPLE, data.to_string()).await;
    assert_eq!(again.body["id"], reply.body["id"]);
    assert_eq!(again.body["duplicate"], true);

    // Percent-encoded header values are decoded (HTTP binding §3.1.3.2).
    let mut encoded = BINARY_EXAMPLE;
    encoded[3] = ("ce-id", "order%20%E2%82%AC42");
    let euro = gw.post_event(&encoded, data.to_string()).await;
    assert_eq!(euro.status, StatusCode::ACCEPTED, "{}", euro.text);

    let messages = stored(&env).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].1["payload"], data);
    assert_eq!(messages[0].1["idempotency_key"], "1234-1234-1234");
    assert_eq!(messages[1].1["idempotency_key"], "order €42");
    assert_eq!(messages[1].1["tenant"], "alpha");

    gw.stop_and_clean_up(env).await;
}

#[tokio::test]
async fn batch_mode_reports_each_event_in_order() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &["--max-batch-items", "4"]).await;

    let mut second = structured_example(ledger_payload("b", 2));
    second["id"] = json!("evt-2");
    let mut no_source = structured_example(ledger_payload("c", 3));
    no_source.as_object_mut().expect("object").remove("source");
    let mut bad_data =
        structured_example(json!({"account": "d", "amount_cents": 0, "currency": "EUR"}));
    bad_data["id"] = json!("evt-4");
    let batch = json!([
        structured_example(ledger_payload("a", 1)),
        second,
        no_source,
        bad_data
    ]);
    let reply = gw
        .post_event(&[("Content-Type", BATCH)], batch.to_string())
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let results = reply.body["results"].as_array().expect("results");
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r["status"].as_str().expect("status"))
        .collect();
    assert_eq!(statuses, vec!["queued", "queued", "rejected", "rejected"]);
    assert_eq!(
        results[2]["error"]["type"],
        "https://codigo.dev/problems/cloudevent-missing-attributes"
    );
    assert_eq!(results[2]["error"]["status"], 400);
    assert_eq!(results[2]["error"]["missing_attributes"], json!(["source"]));
    assert_eq!(
        results[3]["error"]["violations"][0]["pointer"],
        "/3/data/amount_cents"
    );
    assert_eq!(stored(&env).await.len(), 2);

    // The batch limit holds here too, and a batch is an array.
    let too_many = json!(vec![structured_example(ledger_payload("a", 1)); 5]);
    gw.post_event(&[("Content-Type", BATCH)], too_many.to_string())
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    gw.post_event(&[("Content-Type", BATCH)], "{}")
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");

    gw.stop_and_clean_up(env).await;
}

#[tokio::test]
async fn bad_events_get_their_status_and_problem_type() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;
    let structured = [("Content-Type", STRUCTURED)];

    // Missing required attributes: 400 naming every one, in both modes.
    let reply = gw
        .post_event(
            &structured,
            json!({"type": "ledger.post", "data": {}}).to_string(),
        )
        .await;
    reply.assert_problem(StatusCode::BAD_REQUEST, "cloudevent-missing-attributes");
    assert_eq!(
        reply.body["missing_attributes"],
        json!(["id", "source", "specversion"])
    );
    let reply = gw
        .post_event(&[("Content-Type", "application/json")], "{}")
        .await;
    reply.assert_problem(StatusCode::BAD_REQUEST, "cloudevent-missing-attributes");
    assert_eq!(
        reply.body["missing_attributes"],
        json!(["id", "source", "specversion", "type"])
    );

    // specversion must be 1.0.
    let mut old = structured_example(ledger_payload("a", 1));
    old["specversion"] = json!("0.3");
    gw.post_event(&structured, old.to_string())
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid-cloudevent");
    let mut binary_old = BINARY_EXAMPLE;
    binary_old[0] = ("ce-specversion", "0.3");
    gw.post_event(&binary_old, ledger_payload("a", 1).to_string())
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid-cloudevent");

    // The JSON event format's own example carries XML data: not a job payload.
    let mut xml = structured_example(json!("<much wow=\"xml\"/>"));
    xml["type"] = json!("com.github.pull_request.opened");
    xml["datacontenttype"] = json!("text/xml");
    gw.post_event(&structured, xml.to_string())
        .await
        .assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    let mut binary_xml = BINARY_EXAMPLE;
    binary_xml[5] = ("Content-Type", "text/xml");
    gw.post_event(&binary_xml, "<much wow=\"xml\"/>")
        .await
        .assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    gw.post_event(&[("Content-Type", "application/cloudevents+xml")], "<e/>")
        .await
        .assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");

    // The job-side checks are those of POST /v1/jobs, with pointers into the event.
    let mut unknown = structured_example(ledger_payload("a", 1));
    unknown["type"] = json!("com.example.someevent");
    gw.post_event(&structured, unknown.to_string())
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "unknown-job-type");
    let invalid = structured_example(json!({"account": "a", "amount_cents": 0, "currency": "eur"}));
    let reply = gw.post_event(&structured, invalid.to_string()).await;
    reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "schema-violation");
    let mut pointers: Vec<&str> = reply.body["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| v["pointer"].as_str().expect("pointer"))
        .collect();
    pointers.sort_unstable();
    assert_eq!(pointers, vec!["/data/amount_cents", "/data/currency"]);
    let reply = gw
        .post_event(
            &BINARY_EXAMPLE,
            json!({"account": "a", "currency": "EUR"}).to_string(),
        )
        .await;
    reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "schema-violation");
    gw.post_raw(
        "/v1/events",
        Some(SCOPED),
        &structured,
        structured_example(ledger_payload("a", 1)).to_string(),
    )
    .await
    .assert_problem(StatusCode::FORBIDDEN, "job-type-forbidden");
    gw.post_raw(
        "/v1/events",
        None,
        &structured,
        structured_example(ledger_payload("a", 1)).to_string(),
    )
    .await
    .assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    gw.post_event(&structured, "{\"specversion\": ")
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "malformed-json");

    assert!(
        stored(&env).await.is_empty(),
        "nothing refused reaches the stream"
    );
    gw.stop_and_clean_up(env).await;
}

#[tokio::test]
async fn events_route_is_documented_and_measured() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;

    let openapi = gw.get("/openapi.json", ALPHA).await.body;
    let events = &openapi["paths"]["/v1/events"]["post"];
    for content_type in [
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/json",
    ] {
        assert!(
            events["requestBody"]["content"].get(content_type).is_some(),
            "{content_type} documented: {events}"
        );
    }
    for status in [
        "202", "400", "401", "403", "413", "415", "422", "429", "503",
    ] {
        assert!(
            events["responses"].get(status).is_some(),
            "{status} documented"
        );
    }

    gw.post_event(&BINARY_EXAMPLE, ledger_payload("m", 1).to_string())
        .await;
    let metrics = gw.get("/metrics", ALPHA).await.text;
    assert!(
        metrics.contains(
            r#"codigo_gateway_requests_total{route="/v1/events",method="POST",status="202"}"#
        ),
        "{metrics}"
    );
    gw.stop_and_clean_up(env).await;
}

/// HTTP messages written by the official CloudEvents Python SDK (tests/sdk/), installed into
/// `.local/venvs/cloudevents` on first use; fails loudly when it cannot be installed.
fn sdk_messages() -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let venv = Command::new("bash")
        .current_dir(&root)
        .args([
            "-c",
            "source scripts/lib/tools.sh && venv_bin cloudevents cloudevents==2.2.0",
        ])
        .output()
        .expect("bash runs");
    assert!(
        venv.status.success(),
        "installing the CloudEvents Python SDK failed (needs python3-venv and PyPI): {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let bin = String::from_utf8(venv.stdout).expect("utf-8 path");
    let output = Command::new(Path::new(bin.trim()).join("python"))
        .arg(root.join("producer/tests/sdk/cloudevents_messages.py"))
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON list of messages")
}

#[tokio::test]
async fn events_are_deduplicated_on_source_and_id_together() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;

    let mut replies = Vec::new();
    for message in sdk_messages() {
        let headers: Vec<(&str, &str)> = message["headers"]
            .as_object()
            .expect("headers")
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str().expect("header value")))
            .collect();
        let body = message["body"].as_str().expect("body").to_owned();
        let reply = gw.post_event(&headers, body).await;
        assert_eq!(
            reply.status,
            StatusCode::ACCEPTED,
            "{message}: {}",
            reply.text
        );
        replies.push(reply);
    }
    let [billing, shipping, billing_binary, batch] = &replies[..] else {
        panic!("four messages from the SDK");
    };
    // Same tenant, type and id, another source: another job, not a duplicate.
    assert_eq!(billing.body["duplicate"], false, "{}", billing.text);
    assert_eq!(shipping.body["duplicate"], false, "{}", shipping.text);
    assert_ne!(billing.body["id"], shipping.body["id"]);
    // Same source and id, whatever the mode: the same job.
    assert_eq!(billing_binary.body["id"], billing.body["id"]);
    assert_eq!(billing_binary.body["duplicate"], true);
    let items = batch.body["results"].as_array().expect("results");
    assert_eq!(
        items
            .iter()
            .map(|item| (item["id"].clone(), item["duplicate"].clone()))
            .collect::<Vec<_>>(),
        vec![
            (billing.body["id"].clone(), json!(true)),
            (shipping.body["id"].clone(), json!(true)),
            (items[2]["id"].clone(), json!(false)),
        ],
        "{}",
        batch.text
    );

    let messages = stored(&env).await;
    let amounts: Vec<(Value, Value)> = messages
        .iter()
        .map(|(_, e)| (e["id"].clone(), e["payload"]["amount_cents"].clone()))
        .collect();
    assert_eq!(
        amounts,
        vec![
            (billing.body["id"].clone(), json!(100)),
            (shipping.body["id"].clone(), json!(200)),
            (items[2]["id"].clone(), json!(300)),
        ],
        "both sources' events stored, each once"
    );

    gw.stop_and_clean_up(env).await;
}
