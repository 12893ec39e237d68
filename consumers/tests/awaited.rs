//! Awaiting a job's outcome, end to end against real NATS and Postgres:
//! `GET /v1/jobs/{id}?wait=` answers once the job is final, holds no request slot while it
//! waits, has a bound of its own, and lets go of every waiter when the gateway drains.
use std::time::{Duration, Instant};

use codigo_testkit::http::{read, Reply, ALPHA};
use codigo_testkit::{ledger_job, TestConsumer, TestEnv, TestProducer};
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn ledger(account: &str, delay: f64) -> Value {
    let mut job = ledger_job(account);
    job["delay"] = json!(delay);
    job
}

async fn await_job(
    gateway: &TestProducer,
    id: impl std::fmt::Display,
    wait: &str,
) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = gateway
        .get(&format!("/v1/jobs/{id}?wait={wait}"), ALPHA)
        .await;
    (reply, started.elapsed())
}

#[tokio::test]
async fn a_waiting_request_answers_when_its_job_is_done_without_holding_a_slot() {
    let env = TestEnv::new().await;
    // Four request slots: the waiters below would take them all if waiting held one.
    let gateway = TestProducer::start(&env, &["--max-concurrent-requests", "4"]).await;
    let consumer = TestConsumer::spawn(&env, &["--job-types", "ledger.post"]).await;

    let id = gateway.submit(ALPHA, ledger("awaited", 2.0)).await;
    // One after the other: each needs a slot only to be admitted and read the job once.
    let waiters = join_all((0..20u64).map(|n| {
        let gateway = &gateway;
        async move {
            tokio::time::sleep(Duration::from_millis(25 * n)).await;
            await_job(gateway, id, "30s").await
        }
    }));
    let submit_meanwhile = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        // Still admitted while twenty requests wait.
        gateway.submit(ALPHA, ledger("meanwhile", 0.0)).await
    };
    let (answers, _) = tokio::join!(waiters, submit_meanwhile);
    for (reply, waited) in answers {
        reply.assert_status(StatusCode::OK);
        assert_eq!(reply.body["status"], "succeeded", "{}", reply.text);
        assert!(
            waited >= Duration::from_millis(500),
            "answered after {waited:?}, before the job could run"
        );
        assert!(
            waited < Duration::from_secs(25),
            "answered after {waited:?}: when the wait ran out, not when the job was done"
        );
    }
    // A final job answers at once.
    let (done, waited) = await_job(&gateway, &id, "30s").await;
    assert_eq!(done.body["status"], "succeeded");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    gateway.stop().await;
    consumer.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn waits_are_bounded_and_answer_the_state_they_end_in() {
    let env = TestEnv::new().await;
    let gateway = TestProducer::start(&env, &["--max-waiting-requests", "2"]).await;

    // Nothing runs it: the wait ends, and the job is still scheduled.
    let id = gateway.submit(ALPHA, ledger("unserved", 60.0)).await;
    let (reply, waited) = await_job(&gateway, id, "1s").await;
    reply.assert_status(StatusCode::OK);
    assert_eq!(reply.body["status"], "scheduled", "{}", reply.text);
    assert!(waited >= Duration::from_millis(900), "{waited:?}");

    // Unknown: held for the wait, then 404, as without a wait.
    let unknown = "0190f3a2-0000-7000-8000-0000000000ff";
    let (reply, waited) = await_job(&gateway, unknown, "500ms").await;
    reply.assert_problem(StatusCode::NOT_FOUND, "not-found");
    assert!(waited >= Duration::from_millis(400), "{waited:?}");

    for bad in ["soon", "-1", "1fortnight"] {
        let (reply, _) = await_job(&gateway, &id, bad).await;
        reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    }

    // Two may wait; the third is told to come back.
    let held = join_all((0..2).map(|_| await_job(&gateway, &id, "3s")));
    let third = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        await_job(&gateway, &id, "3s").await.0
    };
    let (held, third) = tokio::join!(held, third);
    third.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    assert!(third.headers.contains_key("retry-after"));
    for (reply, _) in held {
        assert_eq!(reply.body["status"], "scheduled", "{}", reply.text);
    }

    // Draining lets go of a waiter at once instead of holding it for its whole wait.
    let url = gateway.url(&format!("/v1/jobs/{id}?wait=60s"));
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let response = reqwest::Client::new()
            .get(url)
            .bearer_auth(ALPHA)
            .send()
            .await
            .expect("answered");
        (read(response).await, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    gateway.stop().await;
    let (reply, waited) = waiting.await.expect("the waiting request");
    assert_eq!(reply.body["status"], "scheduled", "{}", reply.text);
    assert!(
        waited < Duration::from_secs(20),
        "held {waited:?} while draining"
    );

    env.cleanup().await;
}
