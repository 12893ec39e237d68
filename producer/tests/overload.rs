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
                reply.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
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
