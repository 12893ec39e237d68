//! One job, one trace, across the queue: the producer's `http_request` → `validate` /
//! `publish` spans and the consumer's `process_job` → `postgres_tx` / `ack` spans share a
//! trace id, linked by the `traceparent` header the producer writes into the NATS message.
//! Both services export over OTLP/HTTP to a receiver inside this test.
//!
//! The consumer runs as its real binary, a process of its own with its own global tracer
//! and `service.name`, so the trace context can only cross through the message headers. The
//! producer runs in this test's process (the consumer package's tests cannot build the
//! producer binary) with the same `telemetry::init` its `main` calls; this file holds one
//! test because that set-up is global to the process. The consumer's JSON log lines are
//! checked for the `trace_id` and `span_id` of the span they were written in.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use codigo_common::config::{LogFormat, TelemetryArgs};
use codigo_testkit::{flags, serve, ChildProcess, TestEnv, TestProducer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message as _;
use serde_json::{json, Value};

const TOKEN: &str = "tracing-token-00000001";
/// A caller that is itself traced: its trace must be continued, not replaced.
const UPSTREAM_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const UPSTREAM_SPAN: &str = "00f067aa0ba902b7";
/// An upstream system publishing straight to JetStream with its own `traceparent`.
const DIRECT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const DIRECT_SPAN: &str = "b7ad6b7169203331";

#[derive(Debug, Clone)]
struct ExportedSpan {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: BTreeMap<String, String>,
    /// (trace id, span id) of each linked span.
    links: Vec<(String, String)>,
}

type Received = Arc<Mutex<Vec<ExportedSpan>>>;

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(pairs: &[KeyValue]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

/// `POST /v1/traces` of OTLP/HTTP with protobuf bodies, as an OpenTelemetry Collector has it.
async fn receive_traces(State(received): State<Received>, body: Bytes) -> impl IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let mut spans = received.lock().expect("spans");
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                spans.push(ExportedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex::encode(span.trace_id),
                    span_id: hex::encode(span.span_id),
                    parent_span_id: hex::encode(span.parent_span_id),
                    attributes: attributes(&span.attributes),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id)))
                        .collect(),
                });
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

async fn start_receiver() -> (String, Received) {
    let received = Received::default();
    let app = Router::new()
        .route("/v1/traces", post(receive_traces))
        .with_state(received.clone());
    let addr = serve(app).await;
    (format!("http://{addr}"), received)
}

/// The consumer binary as a child process; killed if the test fails before stopping it.
struct ConsumerProcess(ChildProcess);

impl ConsumerProcess {
    fn start(env: &TestEnv, otlp: &str) -> Self {
        let mut command = env.command("codigo-consumer");
        // Loopback only: a proxy from the environment must not carry the exports.
        for proxy in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
        ] {
            command.env_remove(proxy);
        }
        let settings = "--job-types ledger.post --max-deliver 4 --ack-wait-secs 5 \
                        --backoff-secs 5 --fetch-expires-ms 1000 --shutdown-timeout-secs 5";
        command
            .args(flags(settings))
            .env("RUST_LOG", "info")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
            // Export within a fraction of a second instead of the default five.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100");
        Self(ChildProcess::spawn_service("codigo-consumer", command))
    }

    fn lines(&self) -> Vec<String> {
        self.0.stdout().lines().map(str::to_owned).collect()
    }

    /// SIGTERM, as Kubernetes stops it: drains, flushes its spans, exits 0.
    async fn stop(self) {
        let exited = self.0.stop().await;
        assert!(
            exited.status.success(),
            "consumer exited with {}:\n{}",
            exited.status,
            exited.output
        );
    }
}

async fn start_producer(env: &TestEnv) -> TestProducer {
    TestProducer::start(env, &flags(&format!("--api-keys tracing:{TOKEN}"))).await
}

async fn submit(producer: &TestProducer, traceparent: Option<String>, account: &str) -> String {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}/v1/jobs", producer.addr))
        .bearer_auth(TOKEN)
        .json(&json!({"type": "ledger.post",
                      "payload": {"account": account, "amount_cents": 250, "currency": "EUR"}}));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.expect("submit");
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let body: Value = response.json().await.expect("json");
    body["id"].as_str().expect("job id").to_owned()
}

async fn submit_batch(producer: &TestProducer, jobs: usize) -> Vec<String> {
    let items: Vec<Value> = (0..jobs)
        .map(|n| {
            json!({"type": "ledger.post",
                   "payload": {"account": format!("trace-batch-{n}"), "amount_cents": 5, "currency": "EUR"}})
        })
        .collect();
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/jobs/batch", producer.addr))
        .bearer_auth(TOKEN)
        .json(&json!({"jobs": items}))
        .send()
        .await
        .expect("submit batch");
    assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    let body: Value = response.json().await.expect("json");
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("job id").to_owned())
        .collect()
}

async fn wait_succeeded(env: &TestEnv, id: &str) {
    let id = uuid::Uuid::parse_str(id).expect("uuid");
    env.wait_job_status(id, "succeeded").await;
}

fn find<'a>(
    spans: &'a [ExportedSpan],
    what: &str,
    test: impl Fn(&ExportedSpan) -> bool,
) -> &'a ExportedSpan {
    let found: Vec<&ExportedSpan> = spans.iter().filter(|s| test(s)).collect();
    assert_eq!(found.len(), 1, "expected one {what}, found {found:#?}");
    found[0]
}

/// The names of `span`'s ancestors, nearest first, following parent ids across services.
fn ancestors<'a>(spans: &'a [ExportedSpan], span: &ExportedSpan) -> Vec<&'a ExportedSpan> {
    let mut chain = Vec::new();
    let mut parent = span.parent_span_id.clone();
    while let Some(next) = spans
        .iter()
        .find(|s| s.span_id == parent && s.trace_id == span.trace_id)
    {
        chain.push(next);
        parent = next.parent_span_id.clone();
        assert!(chain.len() < 32, "parent cycle");
    }
    chain
}

fn names<'a>(chain: &[&'a ExportedSpan]) -> Vec<&'a str> {
    chain.iter().map(|s| s.name.as_str()).collect()
}

/// The consumer's spans of one job: its `process_job` and the `postgres_tx` and `ack` below
/// it. A job handled alone has its transaction under its `process_job`; jobs handled together
/// share one transaction under a `process_batch` span linked to each job's `process_job`.
fn assert_consumer_side(spans: &[ExportedSpan], process: &ExportedSpan, alone: bool) {
    let under = |span: &ExportedSpan, ancestor: &ExportedSpan| {
        ancestors(spans, span)
            .iter()
            .any(|s| s.span_id == ancestor.span_id)
    };
    let ack = spans
        .iter()
        .find(|s| s.name == "ack" && s.trace_id == process.trace_id && under(s, process))
        .unwrap_or_else(|| panic!("no ack span under {process:#?}"));
    assert_eq!(ack.service, "codigo-consumer");
    let own_tx = spans
        .iter()
        .find(|s| s.name == "postgres_tx" && s.trace_id == process.trace_id && under(s, process));
    let linked_tx = spans
        .iter()
        .filter(|s| s.name == "process_batch")
        .filter(|batch| {
            batch
                .links
                .contains(&(process.trace_id.clone(), process.span_id.clone()))
        })
        .find_map(|batch| {
            spans
                .iter()
                .find(|s| s.name == "postgres_tx" && under(s, batch))
        });
    match (own_tx, linked_tx) {
        (Some(tx), _) => assert_eq!(tx.service, "codigo-consumer"),
        (None, Some(_)) if !alone => {}
        _ => panic!(
            "no postgres_tx under process_job {} nor under a process_batch linked to it: {:#?}",
            process.span_id,
            spans
                .iter()
                .filter(|s| s.service == "codigo-consumer")
                .collect::<Vec<_>>()
        ),
    }
}

/// Checks one job's trace, producer to consumer, and returns its root (the producer's
/// `http_request` span).
fn assert_job_trace<'a>(spans: &'a [ExportedSpan], job_id: &str, alone: bool) -> &'a ExportedSpan {
    let process = find(spans, "process_job of the job", |s| {
        s.name == "process_job" && s.attributes.get("job_id").map(String::as_str) == Some(job_id)
    });
    assert_eq!(process.service, "codigo-consumer");
    assert_eq!(
        process.attributes.get("job_type").map(String::as_str),
        Some("ledger.post")
    );

    // Across the queue: the consumer's span continues the producer's publish.
    let chain = ancestors(spans, process);
    let producer_side: Vec<&str> = names(&chain);
    assert!(
        chain.iter().all(|s| s.service == "codigo-producer"),
        "process_job's ancestors: {chain:#?}"
    );
    assert_eq!(
        producer_side.last().copied(),
        Some("http_request"),
        "process_job's ancestors: {producer_side:?}"
    );
    let publish = chain
        .iter()
        .find(|s| s.name == "publish" || s.name == "publish_batch")
        .unwrap_or_else(|| panic!("no publish span above process_job: {producer_side:?}"));
    assert_eq!(publish.trace_id, process.trace_id);
    let root = *chain.last().expect("root");
    assert_eq!(
        root.attributes.get("http.method").map(String::as_str),
        Some("POST")
    );
    assert_eq!(
        root.attributes.get("http.status_code").map(String::as_str),
        Some("202")
    );
    let validate = spans
        .iter()
        .find(|s| s.name == "validate" && s.parent_span_id == root.span_id)
        .unwrap_or_else(|| panic!("no validate span under {root:#?}"));
    assert_eq!(validate.trace_id, process.trace_id);

    assert_consumer_side(spans, process, alone);
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_spans_producer_queue_and_consumer() {
    let env = TestEnv::new().await;
    let (otlp, received) = start_receiver().await;
    let telemetry = codigo_common::telemetry::init(
        "codigo-producer",
        &TelemetryArgs {
            log_format: Some(LogFormat::Json),
            otel_endpoint: Some(otlp.clone()),
        },
    )
    .expect("telemetry");
    let producer = start_producer(&env).await;
    let consumer = ConsumerProcess::start(&env, &otlp);

    // One job at a time, each handled alone; then three in one batch request.
    let own = submit(&producer, None, "trace-own").await;
    wait_succeeded(&env, &own).await;
    let continued = submit(
        &producer,
        Some(format!("00-{UPSTREAM_TRACE}-{UPSTREAM_SPAN}-01")),
        "trace-upstream",
    )
    .await;
    wait_succeeded(&env, &continued).await;
    let batch = submit_batch(&producer, 3).await;
    for id in &batch {
        wait_succeeded(&env, id).await;
    }
    // Published straight to JetStream, and not a valid envelope: dead-lettered, with a
    // warning logged inside its process_job span.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "tracing-direct-1");
    headers.insert(
        "traceparent",
        format!("00-{DIRECT_TRACE}-{DIRECT_SPAN}-01").as_str(),
    );
    env.js
        .publish_with_headers(
            env.names.job_subject("ledger.post"),
            headers,
            br#"{"type": "ledger.post", "payload": {}}"#.to_vec().into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");

    // The producer's spans are flushed as its `main` does at exit; the consumer exports
    // every 100 ms.
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .expect("flush producer spans");
    env.eventually("spans of both services", Duration::from_secs(30), || {
        let spans = received.lock().expect("spans").clone();
        let processed = |id: &str| {
            spans.iter().any(|s| {
                s.name == "process_job"
                    && s.attributes.get("job_id").map(String::as_str) == Some(id)
            })
        };
        let direct = spans
            .iter()
            .any(|s| s.name == "process_job" && s.trace_id == DIRECT_TRACE);
        let acks = spans.iter().filter(|s| s.name == "ack").count();
        let done = processed(&own)
            && processed(&continued)
            && batch.iter().all(|id| processed(id))
            && direct
            && acks >= 5;
        async move { done }
    })
    .await;
    let logs = consumer.lines();
    consumer.stop().await;
    let spans = received.lock().expect("spans").clone();

    // The job submitted without a trace starts one at the producer.
    let root = assert_job_trace(&spans, &own, true);
    assert_eq!(root.parent_span_id, "", "{root:?}");
    assert_ne!(root.trace_id, UPSTREAM_TRACE);
    assert_eq!(
        root.attributes.get("http.route").map(String::as_str),
        Some("/v1/jobs")
    );
    let process = find(&spans, "process_job", |s| {
        s.name == "process_job" && s.attributes.get("job_id") == Some(&own)
    });
    let publish = find(&spans, "the job's publish span", |s| {
        s.name == "publish" && s.trace_id == root.trace_id
    });
    assert_eq!(
        publish.trace_id, process.trace_id,
        "publish and process_job share the trace"
    );
    assert!(
        ancestors(&spans, process)
            .iter()
            .any(|s| s.span_id == publish.span_id),
        "process_job is not below publish"
    );

    // The caller's trace is continued through producer, queue and consumer.
    let root = assert_job_trace(&spans, &continued, true);
    assert_eq!(root.trace_id, UPSTREAM_TRACE);
    assert_eq!(root.parent_span_id, UPSTREAM_SPAN);

    // A batch request is one trace holding every job of the batch.
    let roots: Vec<&ExportedSpan> = batch
        .iter()
        .map(|id| assert_job_trace(&spans, id, false))
        .collect();
    assert!(
        roots.iter().all(|r| r.span_id == roots[0].span_id),
        "{roots:#?}"
    );
    assert_eq!(
        roots[0].attributes.get("http.route").map(String::as_str),
        Some("/v1/jobs/batch")
    );

    // A message published straight to JetStream keeps its publisher's trace too.
    let direct = find(&spans, "process_job of the direct message", |s| {
        s.name == "process_job" && s.trace_id == DIRECT_TRACE
    });
    assert_eq!(direct.parent_span_id, DIRECT_SPAN);

    // JSON logs: one object per line; inside a span they name its trace and span.
    let records: Vec<Value> = logs
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(!records.is_empty(), "the consumer logged nothing");
    for record in &records {
        assert!(
            record["timestamp"].is_string() && record["level"].is_string(),
            "{record}"
        );
        if let Some(trace_id) = record.get("trace_id") {
            let (trace_id, span_id) = (
                trace_id.as_str().expect("hex"),
                record["span_id"].as_str().expect("hex"),
            );
            assert!(trace_id.len() == 32 && span_id.len() == 16, "{record}");
            assert!(
                spans
                    .iter()
                    .any(|s| s.trace_id == trace_id && s.span_id == span_id),
                "log line names a span that was not exported: {record}"
            );
        }
    }
    let started = records
        .iter()
        .find(|r| r["message"] == "codigo-consumer running")
        .expect("start-up line");
    assert!(started.get("trace_id").is_none(), "{started}");
    let dead_lettered = records
        .iter()
        .find(|r| r["message"] == "job dead-lettered")
        .unwrap_or_else(|| panic!("no dead-letter warning in {records:#?}"));
    assert_eq!(dead_lettered["trace_id"], DIRECT_TRACE, "{dead_lettered}");
    assert_eq!(
        dead_lettered["span_id"],
        direct.span_id.as_str(),
        "{dead_lettered}"
    );
    assert_eq!(dead_lettered["span"]["name"], "process_job");

    producer.stop().await;
    env.cleanup().await;
}
