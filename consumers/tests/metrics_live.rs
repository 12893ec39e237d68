//! The metric contract checked on live binaries: a real producer and a real consumer (in
//! process, against real NATS and Postgres) process accepted, duplicate, rejected,
//! dead-lettered and unstorable jobs; both `/metrics` pages must pass `promtool check metrics`
//! and hold every metric and label of `observability/metrics.txt` with the counts those jobs
//! imply.
//!
//! The metrics recorder is global to the process, so this file holds one test: its counts
//! are exact.
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use codigo_testkit::{flags, Service, TestConsumer, TestEnv, TestProducer, SHORT_RETRIES};
use reqwest::StatusCode;
use serde_json::{json, Value};

const TOKEN: &str = "metrics-token-00000001";
const SIGNING_KEY: &str = "metrics-signing-key-0001";

async fn start_producer(env: &TestEnv) -> TestProducer {
    let settings = format!("--api-keys metrics:{TOKEN} --auth required --publish-timeout-secs 2");
    TestProducer::spawn(env, &flags(&settings)).await
}

/// Short retry delays and four deliveries (the test kit's consumer settings), so the job
/// that keeps failing reaches MaxDeliver within seconds.
async fn start_consumer(env: &TestEnv) -> TestConsumer {
    let settings = format!(
        "--webhook-signing-key {SIGNING_KEY} --webhook-timeout-secs 2 {SHORT_RETRIES} \
         --backoff-secs 5"
    );
    let config = TestConsumer::config(env, &flags(&settings));
    assert!(
        !config.webhook_allow_private,
        "CODIGO_WEBHOOK_ALLOW_PRIVATE must be unset for this test"
    );
    TestConsumer::from_config(config, |app| app).await
}

/// One parsed `/metrics` page.
#[derive(Debug, Default)]
struct Scrape {
    text: String,
    types: BTreeMap<String, String>,
    help: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    fn parse(text: String) -> Self {
        let mut scrape = Scrape::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                scrape.types.insert(name.to_owned(), kind.to_owned());
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP line");
                scrape.help.insert(name.to_owned(), help.to_owned());
            } else if !line.starts_with('#') {
                scrape.samples.push(parse_sample(line));
            }
        }
        scrape.text = text;
        scrape
    }

    /// The value of the one series `name{labels}` (labels given in full), if present.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == wanted)
            .map(|(_, _, v)| *v)
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in\n{}", self.text))
    }

    fn series(&self, name: &str) -> Vec<&BTreeMap<String, String>> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, _)| l)
            .collect()
    }
}

/// `name{a="x",b="y"} value`, with quoted label values that may hold `{`, `}` or `,`.
fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
    let mut labels = BTreeMap::new();
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => panic!("bad sample line {line:?}"),
    };
    let mut rest = rest;
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut end = None;
        let mut key = String::new();
        let mut value = String::new();
        let mut in_value = false;
        while let Some((i, c)) = chars.next() {
            match (in_value, c) {
                (false, '}') => {
                    end = Some(i);
                    break;
                }
                (false, '=') => {}
                (false, ',') => {}
                (false, '"') => in_value = true,
                (false, c) => key.push(c),
                (true, '\\') => {
                    let (_, escaped) = chars.next().expect("escape");
                    value.push(if escaped == 'n' { '\n' } else { escaped });
                }
                (true, '"') => {
                    in_value = false;
                    labels.insert(std::mem::take(&mut key), std::mem::take(&mut value));
                }
                (true, c) => value.push(c),
            }
        }
        let end = end.unwrap_or_else(|| panic!("unterminated labels in {line:?}"));
        rest = &body[end + 1..];
    }
    let value = rest
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no value in {line:?}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().unwrap_or_else(|e| panic!("{e}: {line:?}")),
    };
    (name.to_owned(), labels, value)
}

async fn scrape(http: &reqwest::Client, service: &impl Service) -> Scrape {
    let response = http
        .get(service.url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain"),
        "content type {content_type}"
    );
    Scrape::parse(response.text().await.expect("metrics body"))
}

/// `promtool check metrics` must accept the page (help text, names, units, types).
fn promtool_check(scrape: &Scrape, what: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install the Debian package `prometheus` \
                 (`make test` does) so that the {what} metrics can be checked"
            )
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(scrape.text.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics refused the {what} metrics ({}):\n{}{}\n--- scrape ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        scrape.text
    );
}

/// Every metric of `observability/metrics.txt` owned by this binary is on the page with its
/// type, help text and exactly its labels.
fn assert_contract(scrape: &Scrape, owns: impl Fn(&str) -> bool, what: &str) {
    let contract = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../observability/metrics.txt"
    ))
    .expect("observability/metrics.txt");
    let mut checked = 0;
    for line in contract
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (name, kind) = (fields[0], fields[1]);
        let labels: BTreeSet<String> = fields
            .get(2)
            .map(|l| l.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        if !owns(name) {
            continue;
        }
        checked += 1;
        assert_eq!(
            scrape.types.get(name).map(String::as_str),
            Some(kind),
            "{what}: TYPE of {name}"
        );
        assert!(
            scrape.help.get(name).is_some_and(|h| !h.is_empty()),
            "{what}: no HELP for {name}"
        );
        let series: Vec<(String, BTreeSet<String>)> = if kind == "histogram" {
            let mut with_le = labels.clone();
            with_le.insert("le".to_owned());
            vec![
                (format!("{name}_bucket"), with_le),
                (format!("{name}_sum"), labels.clone()),
                (format!("{name}_count"), labels),
            ]
        } else {
            vec![(name.to_owned(), labels)]
        };
        for (series_name, label_names) in series {
            let found = scrape.series(&series_name);
            assert!(
                !found.is_empty(),
                "{what}: no {series_name} series in\n{}",
                scrape.text
            );
            for labels in found {
                let names: BTreeSet<String> = labels.keys().cloned().collect();
                assert_eq!(
                    names, label_names,
                    "{what}: labels of {series_name}{labels:?}"
                );
            }
        }
    }
    assert!(
        checked >= 3,
        "{what}: only {checked} metrics of the contract apply"
    );
}

async fn submit(
    http: &reqwest::Client,
    producer: &TestProducer,
    body: Value,
) -> (StatusCode, Value) {
    let response = http
        .post(producer.url("/v1/jobs"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("submit");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Submits `body`, which the producer must accept; returns its answer.
async fn submit_accepted(http: &reqwest::Client, producer: &TestProducer, body: Value) -> Value {
    let (status, answer) = submit(http, producer, body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    answer
}

fn ledger(account: &str, amount: i64) -> Value {
    json!({"type": "ledger.post", "payload": codigo_testkit::ledger_payload(account, amount)})
}

/// A series (name and full label set) and its value.
type Expected = (&'static str, &'static [(&'static str, &'static str)], f64);

const LEDGER: &str = "ledger.post";
const WEBHOOK: &str = "webhook.deliver";
const ACKS: &str = "codigo_consumer_acks_total";
const DEAD: &str = "codigo_consumer_dead_letters_total";
const PUBLISHED: &str = "codigo_gateway_jobs_published_total";
const PROCESSED: &str = "codigo_job_processing_duration_seconds_count";
const END_TO_END: &str = "codigo_job_end_to_end_duration_seconds_count";
const PENDING: &str = "codigo_consumer_pending_messages";
/// The dead-letter reason of a job that ran out of deliveries.
const EXHAUSTED: &str = "max_deliveries";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_metrics_match_the_contract_and_the_jobs_processed() {
    let env = TestEnv::new().await;
    let http = reqwest::Client::new();
    let producer = start_producer(&env).await;
    let consumer = start_consumer(&env).await;
    producer.wait_ready().await;
    consumer.wait_ready().await;

    // Three distinct ledger jobs, one repeated submission, one invalid.
    for n in 1..=3 {
        let body =
            submit_accepted(&http, &producer, ledger(&format!("metrics-{n}"), 100 * n)).await;
        assert_eq!(body["duplicate"], false);
    }
    let mut repeated = ledger("metrics-dup", 7);
    repeated["idempotency_key"] = json!("metrics-dup-1");
    let first = submit_accepted(&http, &producer, repeated.clone()).await;
    assert_eq!(first["duplicate"], false);
    let second = submit_accepted(&http, &producer, repeated).await;
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["id"], second["id"]);
    let (status, body) = submit(&http, &producer, ledger("metrics-bad", 0)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // Webhooks: one refused target (loopback, private addresses not allowed) fails
    // permanently; one unresolvable host is retried until MaxDeliver runs out.
    for (n, url) in [
        (1, "http://127.0.0.1:9/hook"),
        (2, "http://codigo-metrics-test.invalid/hook"),
    ] {
        let job = json!({"type": WEBHOOK, "payload": {"url": url, "body": {"n": n}}});
        submit_accepted(&http, &producer, job).await;
    }

    // Upstream systems publishing straight to JetStream: not JSON, and not an envelope.
    let subject = env.names.job_subject(LEDGER);
    for (n, body) in [
        b"not json at all".to_vec(),
        serde_json::to_vec(
            &json!({"id": uuid::Uuid::new_v4(), "type": LEDGER, "payload": {"account": ""}}),
        )
        .expect("json"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("metrics-direct-{n}").as_str());
        env.js
            .publish_with_headers(subject.clone(), headers, body.into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    // Wait until every job has reached its end, then let anything late arrive before the
    // exact comparison.
    let expected_consumer: &[Expected] = &[
        (ACKS, &[("job_type", LEDGER), ("outcome", "ack")], 4.0),
        (ACKS, &[("job_type", LEDGER), ("outcome", "nak")], 0.0),
        (ACKS, &[("job_type", LEDGER), ("outcome", "term")], 2.0),
        (ACKS, &[("job_type", WEBHOOK), ("outcome", "ack")], 0.0),
        (ACKS, &[("job_type", WEBHOOK), ("outcome", "nak")], 4.0),
        (ACKS, &[("job_type", WEBHOOK), ("outcome", "term")], 1.0),
        (DEAD, &[("job_type", LEDGER), ("reason", "decode")], 1.0),
        (DEAD, &[("job_type", LEDGER), ("reason", "schema")], 1.0),
        (DEAD, &[("job_type", LEDGER), ("reason", "permanent")], 0.0),
        (DEAD, &[("job_type", LEDGER), ("reason", EXHAUSTED)], 0.0),
        (DEAD, &[("job_type", WEBHOOK), ("reason", "decode")], 0.0),
        (DEAD, &[("job_type", WEBHOOK), ("reason", "schema")], 0.0),
        (DEAD, &[("job_type", WEBHOOK), ("reason", "permanent")], 1.0),
        (DEAD, &[("job_type", WEBHOOK), ("reason", EXHAUSTED)], 1.0),
        (PROCESSED, &[("job_type", LEDGER)], 4.0),
        (PROCESSED, &[("job_type", WEBHOOK)], 5.0),
        (END_TO_END, &[("job_type", LEDGER)], 4.0),
        ("codigo_consumer_in_flight", &[("job_type", LEDGER)], 0.0),
        ("codigo_consumer_in_flight", &[("job_type", WEBHOOK)], 0.0),
        (PENDING, &[("job_type", LEDGER)], 0.0),
        (PENDING, &[("job_type", WEBHOOK)], 0.0),
    ];
    let matches = |page: &Scrape| {
        expected_consumer
            .iter()
            .all(|(name, labels, want)| page.value(name, labels) == Some(*want))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        if matches(&scrape(&http, &consumer).await) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let page = scrape(&http, &consumer).await;
            for (name, labels, want) in expected_consumer {
                assert_eq!(page.value(name, labels), Some(*want), "{name}{labels:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let page = scrape(&http, &consumer).await;
    promtool_check(&page, "consumer");
    assert_contract(
        &page,
        |name| !name.starts_with("codigo_gateway_"),
        "consumer",
    );
    for (name, labels, want) in expected_consumer {
        assert_eq!(page.get(name, labels), *want, "{name}{labels:?}");
    }
    // The job-success SLI of the contract: ack / (ack + term + max_deliveries dead letters).
    let ack = page.get(ACKS, &[("job_type", LEDGER), ("outcome", "ack")]);
    let term = page.get(ACKS, &[("job_type", LEDGER), ("outcome", "term")]);
    assert!((ack / (ack + term) - 4.0 / 6.0).abs() < 1e-9);
    for job_type in [LEDGER, WEBHOOK] {
        let sum = page.get(
            "codigo_job_processing_duration_seconds_sum",
            &[("job_type", job_type)],
        );
        assert!(
            sum > 0.0 && sum.is_finite(),
            "{job_type} processing time {sum}"
        );
        let inf = page.get(
            "codigo_job_processing_duration_seconds_bucket",
            &[("job_type", job_type), ("le", "+Inf")],
        );
        let count = page.get(PROCESSED, &[("job_type", job_type)]);
        assert_eq!(inf, count);
    }
    let e2e = page.get(
        "codigo_job_end_to_end_duration_seconds_sum",
        &[("job_type", LEDGER)],
    );
    assert!(e2e > 0.0 && e2e < 600.0, "end-to-end seconds {e2e}");

    // A job JetStream cannot store: the work stream is gone (consumer stopped first).
    consumer.stop().await;
    env.js
        .delete_stream(env.names.jobs_stream())
        .await
        .expect("delete the work stream");
    let (status, body) = submit(&http, &producer, ledger("metrics-lost", 1)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");

    let page = scrape(&http, &producer).await;
    promtool_check(&page, "producer");
    assert_contract(
        &page,
        |name| name.starts_with("codigo_gateway_"),
        "producer",
    );
    let post = [("route", "/v1/jobs"), ("method", "POST")];
    let with_status = |status| [post[0], post[1], ("status", status)];
    assert_eq!(
        page.get("codigo_gateway_requests_total", &with_status("202")),
        7.0
    );
    assert_eq!(
        page.get("codigo_gateway_requests_total", &with_status("422")),
        1.0
    );
    assert_eq!(
        page.get("codigo_gateway_requests_total", &with_status("503")),
        1.0
    );
    assert!(
        page.get(
            "codigo_gateway_requests_total",
            &[("route", "/readyz"), ("method", "GET"), ("status", "200")]
        ) >= 1.0
    );
    assert_eq!(
        page.get("codigo_gateway_request_duration_seconds_count", &post),
        9.0
    );
    let bucket = |le| {
        page.get(
            "codigo_gateway_request_duration_seconds_bucket",
            &[post[0], post[1], ("le", le)],
        )
    };
    assert_eq!(bucket("+Inf"), 9.0);
    assert!(bucket("0.5") <= 9.0 && bucket("0.5") >= bucket("0.25"));
    for (job_type, result, want) in [
        (LEDGER, "accepted", 4.0),
        (LEDGER, "duplicate", 1.0),
        (LEDGER, "rejected", 1.0),
        (LEDGER, "error", 1.0),
        (WEBHOOK, "accepted", 2.0),
    ] {
        assert_eq!(
            page.get(PUBLISHED, &[("job_type", job_type), ("result", result)]),
            want,
            "{job_type} {result}"
        );
    }
    for labels in page.series(PUBLISHED) {
        assert!(
            ["accepted", "duplicate", "rejected", "error"].contains(&labels["result"].as_str()),
            "unexpected result label {labels:?}"
        );
    }

    producer.stop().await;
    env.cleanup().await;
}
