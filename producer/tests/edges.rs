//! The gateway at its edges, against real NATS and Postgres and over real sockets: text
//! Postgres cannot store, messages NATS cannot carry, callers that are not authenticated,
//! slow or too many, rates that count jobs, and publishes whose ack was lost.
mod gateway;

use std::time::Duration;

use codigo_testkit::TestEnv;
use gateway::{
    keyed_ledger, ledger, ledger_payload, raw_request, raw_status, stored, stored_at, Gateway,
    PrivateNats, Reply, ALPHA, BETA,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

fn assert_nul_at(reply: &Reply, pointer: &str) {
    reply.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "nul-character");
    assert_eq!(
        reply.body["violations"][0]["pointer"], pointer,
        "{}",
        reply.text
    );
}

fn event(source: &str, id: &str, data: Value) -> Value {
    json!({"specversion": "1.0", "type": "ledger.post", "source": source, "id": id, "data": data})
}

#[tokio::test]
async fn nul_characters_are_refused_with_their_pointer_and_nothing_is_published() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;

    // /v1/jobs: a string value, a nested member name, the idempotency key.
    let reply = gw.post("/v1/jobs", ALPHA, ledger("acct\u{0}x", 1)).await;
    assert_nul_at(&reply, "/payload/account");
    let webhook = json!({"type": "webhook.deliver", "payload": {"url": "https://example.com/hook",
        "body": {"outer": [1, {"in\u{0}ner": true}]}}});
    let reply = gw.post("/v1/jobs", ALPHA, webhook).await;
    assert_nul_at(&reply, "/payload/body/outer/1/in\u{0}ner");
    let keyed = keyed_ledger("acct", 1, "key\u{0}");
    assert_nul_at(&gw.post("/v1/jobs", ALPHA, keyed).await, "/idempotency_key");

    // A batch: the item alone is rejected, its neighbours are stored.
    let mut bad = ledger("acct", 2);
    bad["payload"]["memo"] = json!("memo \u{0}");
    let batch = gw
        .post(
            "/v1/jobs/batch",
            ALPHA,
            json!({"jobs": [ledger("batch-ok", 1), bad, ledger("batch-ok", 3)]}),
        )
        .await;
    assert_eq!(batch.status, StatusCode::ACCEPTED, "{}", batch.text);
    let items = batch.body["results"].as_array().expect("results");
    assert_eq!(items[0]["status"], "queued");
    assert_eq!(items[1]["status"], "rejected");
    assert_eq!(items[1]["error"]["status"], 422);
    assert_eq!(
        items[1]["error"]["violations"][0]["pointer"],
        "/jobs/1/payload/memo"
    );
    assert_eq!(items[2]["status"], "queued");

    // /v1/events in each mode.
    let structured = event("/s", "1", ledger_payload("acct\u{0}", 1));
    let reply = gw
        .post_event(&[("Content-Type", STRUCTURED)], structured.to_string())
        .await;
    assert_nul_at(&reply, "/data/account");
    let reply = gw
        .post_event(
            &[("Content-Type", STRUCTURED)],
            event("/s\u{0}", "1", ledger_payload("a", 1)).to_string(),
        )
        .await;
    assert_nul_at(&reply, "/source");
    let events = json!([
        event("/s", "ok", ledger_payload("events-ok", 1)),
        event("/s", "bad", ledger_payload("a\u{0}", 1))
    ]);
    let reply = gw
        .post_event(&[("Content-Type", BATCH)], events.to_string())
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.body["results"][0]["status"], "queued");
    assert_eq!(reply.body["results"][1]["status"], "rejected");
    assert_eq!(
        reply.body["results"][1]["error"]["violations"][0]["pointer"],
        "/1/data/account"
    );
    let binary = [
        ("ce-specversion", "1.0"),
        ("ce-type", "ledger.post"),
        ("ce-source", "/s"),
        ("ce-id", "bin"),
        ("Content-Type", "application/json"),
    ];
    let reply = gw
        .post_event(&binary, ledger_payload("a\u{0}", 1).to_string())
        .await;
    assert_nul_at(&reply, "/account");
    let mut escaped_id = binary;
    escaped_id[3] = ("ce-id", "bin%00");
    let reply = gw
        .post_event(&escaped_id, ledger_payload("a", 1).to_string())
        .await;
    assert_nul_at(&reply, "ce-id header");

    // Only the valid neighbours reached the stream.
    let accounts: Vec<Value> = stored(&env)
        .await
        .into_iter()
        .map(|(_, envelope)| envelope["payload"]["account"].clone())
        .collect();
    assert_eq!(
        accounts,
        vec![json!("batch-ok"), json!("batch-ok"), json!("events-ok")]
    );

    gw.stop_and_clean_up(env).await;
}

/// A webhook job whose request body is `size` bytes long.
fn webhook_of_size(size: usize) -> String {
    let shell = json!({"type": "webhook.deliver",
        "payload": {"url": "https://example.com/hook", "body": ""}})
    .to_string();
    let filler = "x".repeat(size - shell.len());
    let body = shell.replace(r#""body":"""#, &format!(r#""body":"{filler}""#));
    assert_eq!(body.len(), size);
    body
}

#[tokio::test]
async fn a_body_that_fits_the_limit_but_not_max_payload_gets_413_not_503() {
    const LIMIT: usize = 1_048_576;
    let env = TestEnv::new().await;
    // The standard test server takes 2 MiB messages (deploy/nats/server.conf): a body just
    // under CODIGO_MAX_BODY_BYTES is stored.
    let standard = Gateway::start(&env, &["--max-body-bytes", "1048576"]).await;
    let json_type = [("Content-Type", "application/json")];
    let near_limit = webhook_of_size(LIMIT - 16);
    let reply = standard
        .post_raw("/v1/jobs", Some(ALPHA), &json_type, near_limit.clone())
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    standard.stop().await;

    // A server whose max_payload is the body limit itself: the envelope cannot fit.
    let nats = PrivateNats::start(&format!("max_payload: {LIMIT}"));
    let gw = Gateway::start(
        &env,
        &["--max-body-bytes", "1048576", "--nats-url", &nats.url()],
    )
    .await;
    let reply = gw
        .post_raw("/v1/jobs", Some(ALPHA), &json_type, near_limit.clone())
        .await;
    reply.assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large");
    assert!(
        reply.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&LIMIT.to_string())),
        "the detail names the limit: {}",
        reply.text
    );
    assert!(
        reply.headers.get("retry-after").is_none(),
        "{:?}",
        reply.headers
    );
    // In a batch, the item alone is refused with 413; the connection to NATS survives and the
    // small neighbour is stored.
    // The item is 120 bytes under the limit, its envelope and headers add about 240.
    let big = webhook_of_size(LIMIT - 120);
    let batch = json!({"jobs": [ledger("small", 1)]});
    let mut batch_text = batch.to_string();
    batch_text.insert_str(batch_text.len() - 2, &format!(",{big}"));
    assert!(batch_text.len() <= LIMIT, "{}", batch_text.len());
    let reply = gw
        .post_raw("/v1/jobs/batch", Some(ALPHA), &json_type, batch_text)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(
        reply.body["results"][0]["status"], "queued",
        "{}",
        reply.text
    );
    assert_eq!(
        reply.body["results"][1]["status"], "rejected",
        "{}",
        reply.text
    );
    assert_eq!(reply.body["results"][1]["error"]["status"], 413);
    let on_stream = stored_at(&nats.url(), &env.names.jobs_stream()).await;
    assert_eq!(on_stream.len(), 1);
    assert_eq!(on_stream[0]["payload"]["account"], "small");

    gw.stop().await;
    drop(nats);
    env.cleanup().await;
}

#[tokio::test]
async fn rate_limits_count_jobs_and_refuse_a_batch_whole() {
    let env = TestEnv::new().await;
    // rate=2 jobs/s: a bucket of 4 jobs.
    let keys = format!("alpha:{ALPHA};rate=2,beta:{BETA};tenant=acme");
    let gw = Gateway::start(&env, &["--api-keys", &keys]).await;

    let four = json!({"jobs": (1..=4).map(|n| ledger("rated", n)).collect::<Vec<_>>()});
    let first = gw.post("/v1/jobs/batch", ALPHA, four.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    // The bucket is empty now (it refills 2 jobs/s): the next batch is refused whole, with
    // the time to wait, and none of it is stored.
    let second = gw.post("/v1/jobs/batch", ALPHA, four).await;
    second.assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate-limited");
    assert!(second
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|s| s >= 1));
    // More jobs than the bucket ever holds can never pass: 422, not a 429 to retry forever.
    let five = json!({"jobs": (1..=5).map(|n| ledger("rated", n)).collect::<Vec<_>>()});
    gw.post("/v1/jobs/batch", ALPHA, five)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "batch-over-rate-limit");
    // Another tenant's key has its own bucket (unlimited in this gateway).
    let other = gw.post("/v1/jobs", BETA, ledger("other", 1)).await;
    assert_eq!(other.status, StatusCode::ACCEPTED, "{}", other.text);

    assert_eq!(
        stored(&env).await.len(),
        5,
        "4 from the first batch, 1 from beta"
    );
    gw.stop_and_clean_up(env).await;
}

#[tokio::test]
async fn callers_are_authenticated_from_headers_before_the_body_is_read() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &[]).await;
    let patience = Duration::from_secs(30);

    for (auth, length) in [
        (
            "Authorization: Bearer wrong-token-00000000000",
            "10000000000",
        ),
        ("Authorization: Bearer wrong-token-00000000000", "1000"),
        ("X-Nothing: 1", "1000"),
    ] {
        // Headers only: the body never comes, yet the answer does.
        let mut socket = raw_request(
            gw.addr,
            &format!(
                "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}\r\nContent-Length: {length}"
            ),
        )
        .await;
        let (status, text) = raw_status(&mut socket, patience).await;
        assert_eq!(status, 401, "{auth} / {length}: {text}");
        assert!(
            text.contains("https://codigo.dev/problems/unauthorized"),
            "{text}"
        );
    }

    gw.stop_and_clean_up(env).await;
}

#[tokio::test]
async fn a_body_trickled_slowly_is_cut_off_with_408() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &["--request-read-timeout-secs", "2"]).await;

    let mut socket = raw_request(
        gw.addr,
        &format!(
            "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer {ALPHA}\r\nContent-Length: 100"
        ),
    )
    .await;
    let (mut reader, mut writer) = socket.split();
    let trickle = async {
        // One byte every 200 ms: the 100 bytes would take 20 s.
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let answer = async {
        let mut buffer = vec![0u8; 4096];
        let mut received = Vec::new();
        loop {
            match tokio::io::AsyncReadExt::read(&mut reader, &mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
            if String::from_utf8_lossy(&received).contains("request-timeout") {
                break;
            }
        }
        String::from_utf8_lossy(&received).into_owned()
    };
    let text = tokio::select! {
        text = answer => text,
        () = trickle => panic!("the body was read to its end: no read timeout"),
    };
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains("https://codigo.dev/problems/request-timeout"),
        "{text}"
    );
    assert!(stored(&env).await.is_empty());

    gw.stop_and_clean_up(env).await;
}

#[tokio::test]
async fn headers_trickled_slowly_lose_their_connection() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(&env, &["--request-read-timeout-secs", "2"]).await;

    let mut socket = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let (mut reader, mut writer) = socket.split();
    let head = format!("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALPHA}\r\n");
    let trickle = async {
        // One header byte every 200 ms: the head would never end.
        for byte in head.bytes().cycle().take(100) {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let closed = async {
        let mut buffer = [0u8; 1024];
        loop {
            match tokio::io::AsyncReadExt::read(&mut reader, &mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        () = closed => {}
        () = trickle => panic!("a request head trickled for 20 s kept its connection: no header read timeout"),
    }
    assert!(stored(&env).await.is_empty());

    gw.stop_and_clean_up(env).await;
}

#[tokio::test]
async fn requests_over_the_concurrency_limit_are_shed_with_503() {
    let env = TestEnv::new().await;
    let gw = Gateway::start(
        &env,
        &[
            "--max-concurrent-requests",
            "2",
            "--request-read-timeout-secs",
            "300",
        ],
    )
    .await;

    // Two requests hold both slots: headers sent, body still owed.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            raw_request(
                gw.addr,
                &format!(
                    "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer {ALPHA}\r\nContent-Length: 1000"
                ),
            )
            .await,
        );
    }
    // Once the gateway has taken them in, a third is shed at once, not queued.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let shed = loop {
        let reply = gw.post("/v1/jobs", ALPHA, ledger("shed", 1)).await;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            break reply;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never shed: {}",
            reply.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    shed.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    assert!(
        shed.headers.get("retry-after").is_some(),
        "{:?}",
        shed.headers
    );
    // Probes are not counted against the limit.
    let health = gw
        .http
        .get(gw.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);

    // The held requests go away: the slots come back.
    drop(held);
    env.eventually("a slot freed", Duration::from_secs(60), || async {
        gw.post("/v1/jobs", ALPHA, ledger("after", 1)).await.status == StatusCode::ACCEPTED
    })
    .await;

    gw.stop_and_clean_up(env).await;
}

#[tokio::test]
async fn a_publish_whose_ack_is_lost_is_sent_again_and_stored_once() {
    let env = TestEnv::new().await;
    let mut nats = PrivateNats::start("");
    let gw = Gateway::start(
        &env,
        &[
            "--nats-url",
            &nats.url(),
            "--publish-timeout-secs",
            "60",
            "--publish-attempt-timeout-ms",
            "1000",
        ],
    )
    .await;
    let submit = |account: &'static str| {
        let http = gw.http.clone();
        let url = gw.url("/v1/jobs");
        tokio::spawn(async move {
            gateway::read(
                http.post(url)
                    .bearer_auth(ALPHA)
                    .json(&ledger(account, 1))
                    .send()
                    .await
                    .expect("request"),
            )
            .await
        })
    };

    // A paused server: the first attempt and its repeats wait in the socket, and all reach
    // the server when it resumes. De-duplication keeps one.
    nats.pause();
    let paused = submit("paused");
    tokio::time::sleep(Duration::from_millis(3500)).await;
    nats.resume();
    let reply = paused.await.expect("task");
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(reply.body["duplicate"], false, "{}", reply.text);

    // A server killed while the publish sat unread in its socket: that copy is lost, and
    // only a repeat after the restart can store the job.
    nats.pause();
    let killed = submit("killed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.kill_and_restart();
    let reply_killed = killed.await.expect("task");
    assert_eq!(
        reply_killed.status,
        StatusCode::ACCEPTED,
        "{}",
        reply_killed.text
    );

    let on_stream = stored_at(&nats.url(), &env.names.jobs_stream()).await;
    let ids: Vec<&Value> = on_stream.iter().map(|e| &e["id"]).collect();
    assert_eq!(
        ids,
        vec![&reply.body["id"], &reply_killed.body["id"]],
        "each job stored exactly once"
    );

    gw.stop().await;
    drop(nats);
    env.cleanup().await;
}
