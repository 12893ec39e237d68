//! Completion callbacks: a job submitted with a `callback_url` (a field, or the CloudEvents
//! attribute `callbackurl`) has its final state POSTed there as a binary-mode CloudEvent,
//! signed with its tenant's Standard Webhooks secret, which the official `standardwebhooks`
//! library verifies; through the `webhook.deliver` path, once per state.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use codigo_common::webhook_secret::TenantSecret;
use codigo_testkit::http::ALPHA;
use codigo_testkit::webhooks::verifies;
use codigo_testkit::{flags, ledger_job, serve, TestConsumer, TestEnv, TestProducer};
use serde_json::{json, Value};
use uuid::Uuid;

const SIGNING_KEY: &str = "callbacks-test-master-key-01";

/// What the receiver got: each POST's headers and body.
#[derive(Default)]
struct Receiver {
    seen: Mutex<Vec<(HeaderMap, Bytes)>>,
}

async fn receive(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) {
    receiver.seen.lock().unwrap().push((headers, body));
}

async fn start_receiver() -> (String, Arc<Receiver>) {
    let receiver = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/done", post(receive))
        .with_state(receiver.clone());
    (format!("http://{}/done", serve(app).await), receiver)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn final_states_are_posted_as_cloudevents_signed_with_the_tenants_secret() {
    let env = TestEnv::new().await;
    let (url, receiver) = start_receiver().await;
    let gateway = TestProducer::start(&env, &[]).await;
    let with_callback = |mut job: Value| {
        job["callback_url"] = json!(url);
        job
    };

    // Not started within its second: it expires once a worker meets it.
    let mut late = with_callback(ledger_job("late"));
    late["ttl"] = json!(1);
    let expired = gateway.submit(ALPHA, late).await;
    // Cancelled while it waits for its time.
    let mut delayed = with_callback(ledger_job("cancelled"));
    delayed["delay"] = json!(600);
    let cancelled = gateway.submit(ALPHA, delayed).await;
    gateway
        .delete(&format!("/v1/jobs/{cancelled}"), ALPHA)
        .await
        .assert_status(StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let consumer = TestConsumer::spawn(
        &env,
        &flags(&format!(
            "--job-types ledger.post,webhook.deliver --webhook-signing-key {SIGNING_KEY} \
             --webhook-allow-private --retry-base-ms 50 --retry-max-secs 1"
        )),
    )
    .await;
    let succeeded = gateway
        .submit(ALPHA, with_callback(ledger_job("done")))
        .await;
    // The CloudEvents extension attribute does the same.
    let event = gateway
        .post_event(
            ALPHA,
            json!({"specversion": "1.0", "id": "evt-1", "source": "/billing",
                   "type": "ledger.post", "callbackurl": url,
                   "data": {"account": "event", "amount_cents": 100, "currency": "EUR"}}),
        )
        .await;
    event.assert_status(StatusCode::ACCEPTED);
    let from_event = codigo_testkit::id_of(&event.body);

    env.eventually("four callbacks", Duration::from_secs(60), || async {
        receiver.seen.lock().unwrap().len() >= 4
    })
    .await;
    // Each state is announced once, however often the producers look.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = receiver.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "one POST per final job");
    let by_subject: BTreeMap<Uuid, (HeaderMap, Bytes)> = seen
        .into_iter()
        .map(|(headers, body)| {
            let subject = Uuid::parse_str(header(&headers, "ce-subject")).expect("a job id");
            (subject, (headers, body))
        })
        .collect();
    let own = TenantSecret::derive(SIGNING_KEY.as_bytes(), "alpha").whsec();
    let other = TenantSecret::derive(SIGNING_KEY.as_bytes(), "acme").whsec();
    for (id, state) in [
        (succeeded, "succeeded"),
        (from_event, "succeeded"),
        (cancelled, "cancelled"),
        (expired, "expired"),
    ] {
        let (headers, body) = by_subject
            .get(&id)
            .unwrap_or_else(|| panic!("no callback for the {state} job {id}"));
        assert_eq!(header(headers, "ce-specversion"), "1.0");
        assert_eq!(
            header(headers, "ce-type"),
            format!("dev.codigo.job.{state}")
        );
        assert_eq!(header(headers, "ce-source"), "/codigo/jobs");
        assert_eq!(header(headers, "ce-id"), format!("{id}.{state}"));
        assert!(!header(headers, "ce-time").is_empty());
        assert_eq!(header(headers, "content-type"), "application/json");
        let data: Value = serde_json::from_slice(body).expect("a JSON body");
        assert_eq!(data["id"], json!(id), "{data}");
        assert_eq!(data["status"], state, "{data}");
        assert_eq!(data["type"], "ledger.post", "{data}");
        assert!(
            verifies(&own, headers, body).await,
            "{state}: not the tenant's signature"
        );
        assert!(
            !verifies(&other, headers, body).await,
            "{state}: another tenant's secret verifies"
        );
    }
    let (_, expired_body) = &by_subject[&expired];
    let expired_data: Value = serde_json::from_slice(expired_body).expect("json");
    assert!(expired_data["error"]
        .as_str()
        .is_some_and(|e| e.contains("deadline")));
    assert_eq!(env.ledger_entries("done").await, 1);

    gateway.stop().await;
    consumer.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_callback_url_that_is_not_an_http_url_is_refused() {
    let env = TestEnv::new().await;
    let gateway = TestProducer::start(&env, &[]).await;
    for bad in ["ftp://example.com/x", "not a url", "http://"] {
        let mut job = ledger_job("refused");
        job["callback_url"] = json!(bad);
        let reply = gateway.post("/v1/jobs", ALPHA, job).await;
        reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
        assert!(reply.text.contains("callback_url"), "{bad}: {}", reply.text);
    }
    gateway.stop().await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_replayed_to_success_is_announced_again() {
    let env = TestEnv::new().await;
    let (callback_url, receiver) = start_receiver().await;
    // The job's own target refuses it (a permanent 400) until it is told to take it.
    let accepting = Arc::new(AtomicBool::new(false));
    let target = axum::Router::new()
        .route(
            "/target",
            post(|State(accepting): State<Arc<AtomicBool>>| async move {
                if accepting.load(Ordering::SeqCst) {
                    StatusCode::OK
                } else {
                    StatusCode::BAD_REQUEST
                }
            }),
        )
        .with_state(accepting.clone());
    let target_url = format!("http://{}/target", serve(target).await);
    let gateway = TestProducer::start(&env, &[]).await;
    let consumer = TestConsumer::spawn(
        &env,
        &flags(&format!(
            "--job-types webhook.deliver --webhook-signing-key {SIGNING_KEY} \
             --webhook-allow-private --retry-base-ms 50 --retry-max-secs 1"
        )),
    )
    .await;
    let id = gateway
        .submit(
            ALPHA,
            json!({"type": "webhook.deliver",
                   "payload": {"url": target_url, "body": {"order": 7}},
                   "callback_url": callback_url}),
        )
        .await;
    let announced = |count: usize| {
        let receiver = receiver.clone();
        async move { receiver.seen.lock().unwrap().len() >= count }
    };
    env.eventually(
        "the dead letter's callback",
        Duration::from_secs(60),
        || announced(1),
    )
    .await;

    accepting.store(true, Ordering::SeqCst);
    env.ctl_ok(&["dlq", "replay", "--reason", "permanent"])
        .await;
    env.eventually("the success's callback", Duration::from_secs(60), || {
        announced(2)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = receiver.seen.lock().unwrap().clone();
    let states: Vec<&str> = seen
        .iter()
        .map(|(headers, _)| header(headers, "ce-type"))
        .collect();
    assert_eq!(
        states,
        ["dev.codigo.job.dead_lettered", "dev.codigo.job.succeeded"],
        "each state announced once, in order"
    );
    let own = TenantSecret::derive(SIGNING_KEY.as_bytes(), "alpha").whsec();
    for (headers, body) in &seen {
        assert_eq!(header(headers, "ce-subject"), id.to_string());
        assert!(verifies(&own, headers, body).await);
    }
    let (_, last) = &seen[1];
    let data: Value = serde_json::from_slice(last).expect("a JSON body");
    assert_eq!(data["status"], "succeeded", "{data}");

    gateway.stop().await;
    consumer.stop().await;
    env.cleanup().await;
}
