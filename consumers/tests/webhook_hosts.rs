//! One black-holed webhook target does not throttle deliveries to the others: the healthy
//! target's delivery rate with a black hole taking jobs is compared with its rate without, in
//! the same test (a ratio, not an absolute; the best of a few rounds per condition, since the
//! machine's load only ever slows a round down). Alone in its
//! test binary so that no other test's load lands on one phase only.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use codigo_testkit::{flags, serve, TestConsumer, TestEnv};
use serde_json::json;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;
use uuid::Uuid;

const JOB_TYPE: &str = "webhook.deliver";
const PER_HOST: usize = 4;
const BLACK_HOLED_JOBS: usize = 16;
const HEALTHY_JOBS: usize = 500;
/// Rounds per condition; the best counts, since a loaded machine only ever slows a round down.
const ROUNDS: usize = 3;

async fn healthy(State(hits): State<Arc<AtomicUsize>>) -> StatusCode {
    hits.fetch_add(1, Ordering::SeqCst);
    StatusCode::OK
}

#[derive(Default)]
struct BlackHole {
    accepted: AtomicUsize,
    open: AtomicUsize,
    most_open: AtomicUsize,
}

async fn publish(env: &TestEnv, url: &str, n: usize) {
    let id = Uuid::now_v7();
    let body = json!({
        "id": id.to_string(),
        "type": JOB_TYPE,
        "payload": {"url": url, "body": {"n": n}},
        "created_at": OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339).unwrap(),
        "tenant": "rates",
    });
    env.publish_envelope(&body).await;
}

/// Publishes `HEALTHY_JOBS` jobs to the healthy target and returns deliveries per second,
/// from the first publish to the last delivery.
async fn healthy_rate(env: &TestEnv, url: &str, hits: &AtomicUsize) -> f64 {
    let before = hits.load(Ordering::SeqCst);
    let started = Instant::now();
    for n in 0..HEALTHY_JOBS {
        publish(env, url, n).await;
    }
    env.eventually(
        "every healthy job delivered",
        Duration::from_secs(300),
        || async { hits.load(Ordering::SeqCst) >= before + HEALTHY_JOBS },
    )
    .await;
    #[allow(clippy::cast_precision_loss)]
    let rate = HEALTHY_JOBS as f64 / started.elapsed().as_secs_f64();
    rate
}

async fn best_rate(env: &TestEnv, url: &str, hits: &AtomicUsize) -> f64 {
    let mut best = 0.0f64;
    for _ in 0..ROUNDS {
        best = best.max(healthy_rate(env, url, hits).await);
    }
    best
}

#[tokio::test]
async fn a_black_holed_target_keeps_healthy_deliveries_at_90_percent_of_their_rate() {
    let env = TestEnv::new().await;
    let hits = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route("/hook", post(healthy))
        .with_state(hits.clone());
    let healthy_url = format!("http://{}/hook", serve(app).await);

    // Accepts connections and never answers (127.0.0.2: another host).
    let hole = Arc::new(BlackHole::default());
    let hole_listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let hole_url = format!("http://{}/hook", hole_listener.local_addr().unwrap());
    let state = hole.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = hole_listener.accept().await {
            state.accepted.fetch_add(1, Ordering::SeqCst);
            let open = state.open.fetch_add(1, Ordering::SeqCst) + 1;
            state.most_open.fetch_max(open, Ordering::SeqCst);
            let state = state.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
                state.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });

    // The timeout is longer than the test: the black hole's requests never end while it
    // measures.
    let settings = format!(
        "--webhook-signing-key host-caps-signing-key-0001 --job-types {JOB_TYPE} \
         --webhook-allow-private --webhook-max-per-host {PER_HOST} --webhook-timeout-secs 600 \
         --ack-wait-secs 30 --concurrency 128 --shutdown-timeout-secs 1"
    );
    let consumer = TestConsumer::spawn(&env, &flags(&settings)).await;

    // Warm-up (connections, pools, the consumer's first pulls), not measured.
    healthy_rate(&env, &healthy_url, &hits).await;
    let without = best_rate(&env, &healthy_url, &hits).await;

    for n in 0..BLACK_HOLED_JOBS {
        publish(&env, &hole_url, n).await;
    }
    env.eventually(
        "the black hole holding its host's every slot",
        Duration::from_secs(120),
        || async { hole.accepted.load(Ordering::SeqCst) >= PER_HOST },
    )
    .await;
    let with = best_rate(&env, &healthy_url, &hits).await;

    eprintln!("healthy deliveries: {without:.1}/s without a black hole, {with:.1}/s with one");
    let most_open = hole.most_open.load(Ordering::SeqCst);
    assert!(
        most_open <= PER_HOST,
        "{most_open} requests in flight to the black hole, over its cap of {PER_HOST}"
    );
    assert!(
        with >= 0.9 * without,
        "healthy deliveries fell to {with:.1}/s with a black-holed target, from {without:.1}/s \
         without ({:.0} %)",
        100.0 * with / without
    );
    consumer.stop().await;
    env.cleanup().await;
}
