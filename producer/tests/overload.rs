//! Overload pushes back: when the work stream is full (discard new), the gateway answers 503
//! with Retry-After instead of dropping jobs, and every 202 it gave is on the stream.
mod gateway;

use std::collections::BTreeSet;

use codigo_testkit::TestEnv;
use gateway::{ledger, stored, Gateway, ALPHA};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_full_stream_answers_503_with_retry_after_and_every_202_is_stored() {
    let env = TestEnv::new().await;
    // The gateway brings the stream's limit down to 5 messages when it starts; no worker runs,
    // so the stream fills up.
    let gateway = Gateway::start(&env, &["--stream-max-messages", "5"]).await;

    let mut accepted = BTreeSet::new();
    let mut refused = 0;
    for amount in 1..=8 {
        let reply = gateway
            .post("/v1/jobs", ALPHA, ledger("overload", amount))
            .await;
        match reply.status {
            StatusCode::ACCEPTED => {
                accepted.insert(reply.body["id"].as_str().expect("id").to_owned());
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                reply.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "queue-full");
                assert!(
                    reply.body["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("queue is full")),
                    "{}",
                    reply.text
                );
                let retry_after = reply
                    .headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                assert!(retry_after.is_some_and(|s| s > 0), "{:?}", reply.headers);
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", reply.text),
        }
    }
    assert_eq!((accepted.len(), refused), (5, 3));

    // A batch against the full stream: every item is an error, none is stored.
    let batch = json!({"jobs": [ledger("overload", 100), ledger("overload", 200)]});
    let reply = gateway.post("/v1/jobs/batch", ALPHA, batch).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    for item in reply.body["results"].as_array().expect("results") {
        assert_eq!(item["status"], "error", "{item}");
        assert_eq!(item["error"]["status"], 503, "{item}");
        assert_eq!(
            item["error"]["type"], "https://codigo.dev/problems/queue-full",
            "{item}"
        );
    }

    let on_stream: BTreeSet<String> = stored(&env)
        .await
        .into_iter()
        .map(|(_, envelope)| envelope["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(on_stream, accepted, "exactly the accepted jobs are stored");

    let metrics = gateway.get("/metrics", ALPHA).await.text;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("codigo_gateway_jobs_published_total")
                && l.contains("result=\"error\"")
                && l.ends_with(" 5")),
        "3 single and 2 batch items counted as errors:\n{metrics}"
    );
    gateway.stop().await;
    env.cleanup().await;
}

/// Publishes `count` messages with distinct ids to `subject`; the acks, in order.
async fn publish_n(env: &TestEnv, subject: &str, count: usize) -> Vec<bool> {
    let mut acks = Vec::new();
    for n in 0..count {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("bound-{n}").as_str());
        let stored = match env
            .js
            .publish_with_headers(subject.to_owned(), headers, "{}".into())
            .await
        {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        acks.push(stored);
    }
    acks
}

#[tokio::test]
async fn dead_letter_and_advisory_streams_are_bounded_and_refuse_rather_than_drop() {
    let env = TestEnv::new().await;
    let mut args = env.jetstream_args();
    args.dlq_max_messages = 3;
    args.advisories_max_messages = 2;
    codigo_common::jetstream::ensure_topology(&env.js, &env.names, &args, [])
        .await
        .expect("topology with small bounds");

    let dlq = env.names.dlq_subject("ledger.post");
    assert_eq!(
        publish_n(&env, &dlq, 5).await,
        [true, true, true, false, false]
    );
    let advisory = env
        .names
        .max_deliveries_advisories()
        .replace('*', "codigo-ledger-post");
    assert_eq!(publish_n(&env, &advisory, 3).await, [true, true, false]);

    // Discard new: what was stored first is all still there.
    for (stream, expected) in [
        (env.names.dlq_stream(), 3),
        (env.names.advisories_stream(), 2),
    ] {
        let mut stream = env.js.get_stream(&stream).await.expect("stream");
        let info = stream.info().await.expect("info");
        assert_eq!(info.state.messages, expected);
        assert_eq!(info.state.first_sequence, 1, "nothing old was dropped");
    }
    env.cleanup().await;
}
