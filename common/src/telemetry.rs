//! Logs, traces and metrics, set up once per process.
//!
//! Logs go to stdout (text on a terminal, JSON elsewhere; JSON lines inside a span carry its
//! `trace_id` and `span_id`). Spans always get OpenTelemetry ids, so `traceparent` headers
//! (HTTP and NATS alike) are written and continued whether or not traces are exported; they
//! are exported over OTLP/HTTP when an endpoint is configured. Metrics are rendered in the
//! Prometheus text format by whoever serves `/metrics`.
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{SpanId, TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryArgs};

/// Histogram buckets in seconds: fine below 100 ms where jobs live, and 0.5 s exactly for the
/// latency SLO.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid RUST_LOG filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("cannot set up the OTLP exporter for {endpoint}: {source}; check OTEL_EXPORTER_OTLP_ENDPOINT")]
    Exporter {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Keeps the tracer provider alive; `shutdown` flushes spans still buffered for export.
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Err(error) = self.tracer_provider.shutdown() {
            tracing::warn!(%error, "flushing traces failed");
        }
    }
}

/// Installs the global logger and tracer of a service (logs on stdout, `info` unless
/// `RUST_LOG` says otherwise). Call once, first thing in `main`.
pub fn init(service: &'static str, args: &TelemetryArgs) -> Result<Telemetry, TelemetryError> {
    init_with(service, args, LogTarget::Service)
}

/// The same for a command-line tool: logs go to stderr, so that stdout stays the tool's
/// output (tables, JSON), and only warnings show unless `RUST_LOG` says otherwise.
pub fn init_cli(service: &'static str, args: &TelemetryArgs) -> Result<Telemetry, TelemetryError> {
    init_with(service, args, LogTarget::Cli)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LogTarget {
    Service,
    Cli,
}

fn init_with(
    service: &'static str,
    args: &TelemetryArgs,
    target: LogTarget,
) -> Result<Telemetry, TelemetryError> {
    let default_level = if target == LogTarget::Cli {
        "warn"
    } else {
        "info"
    };
    let filter =
        EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(default_level))?;
    let on_terminal = match target {
        LogTarget::Service => std::io::stdout().is_terminal(),
        LogTarget::Cli => std::io::stderr().is_terminal(),
    };
    let format = args.log_format.unwrap_or(if on_terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    // The JSON formatter reads span ids through the finished subscriber, which exists only
    // after the layers are assembled: it gets a handle to it once it is built.
    let dispatch_handle = Arc::new(OnceLock::new());
    let fmt_layer = match (format, target) {
        (LogFormat::Text, LogTarget::Service) => tracing_subscriber::fmt::layer().boxed(),
        (LogFormat::Text, LogTarget::Cli) => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        (LogFormat::Json, LogTarget::Service) => json_layer(dispatch_handle.clone()).boxed(),
        (LogFormat::Json, LogTarget::Cli) => json_layer(dispatch_handle.clone())
            .with_writer(std::io::stderr)
            .boxed(),
    };

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Without an exporter spans still get ids: `traceparent` is written into every message
    // (the contract), an upstream trace is continued, and log lines name their trace.
    let tracer_provider = match &args.otel_endpoint {
        Some(endpoint) if !endpoint.is_empty() => otlp_provider(service, endpoint)?,
        _ => SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name(service).build())
            .build(),
    };
    let exporting = args.otel_endpoint.as_deref().is_some_and(|e| !e.is_empty());
    // Busy/idle timings and thread attributes cost a clock read or an allocation on every
    // poll of every span, and nobody reads them: left out.
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_tracer(tracer_provider.tracer(service));

    let dispatch = Dispatch::new(
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt_layer)
            .with(otel_layer),
    );
    let _ = dispatch_handle.set(dispatch.downgrade());
    // A second init (tests starting several services in one process) keeps the first.
    if dispatch.try_init().is_ok() {
        TRACES_EXPORTED.store(exporting, Ordering::Relaxed);
    }
    Ok(Telemetry { tracer_provider })
}

static TRACES_EXPORTED: AtomicBool = AtomicBool::new(false);

/// Whether this process exports its spans. Spans that only a trace viewer reads (one per job
/// where a group of jobs already shares a span) are worth their cost only when it does.
pub fn traces_exported() -> bool {
    TRACES_EXPORTED.load(Ordering::Relaxed)
}

/// A span that only adds detail to an exported trace (`make()` when traces are exported, a
/// disabled span otherwise). Work under a disabled span stays in its parent's span, so log
/// lines and `traceparent` headers still carry the trace.
pub fn detail_span(make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if traces_exported() {
        make()
    } else {
        tracing::Span::none()
    }
}

/// One JSON object per line: `timestamp`, `level`, `target`, the event's fields flattened,
/// the current `span`, and the span's `trace_id` and `span_id`.
fn json_layer<S>(
    dispatch: Arc<OnceLock<WeakDispatch>>,
) -> tracing_subscriber::fmt::Layer<S, JsonFields, JsonWithTraceIds>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .json()
        .event_format(JsonWithTraceIds {
            inner: tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false),
            dispatch,
        })
}

/// tracing-subscriber's JSON line plus the OpenTelemetry ids of the event's span (explicit
/// parent or current span), hex-encoded as in `traceparent`, so Loki lines link to Tempo
/// traces and back.
struct JsonWithTraceIds {
    inner: Format<Json>,
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

impl JsonWithTraceIds {
    fn ids(&self, span: &tracing::span::Id) -> Option<(TraceId, SpanId)> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let context = tracing_opentelemetry::get_otel_context(span, &dispatch)?;
        let span = context.span();
        let ids = span.span_context();
        ids.is_valid().then(|| (ids.trace_id(), ids.span_id()))
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithTraceIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let ids = ctx
            .parent_span()
            .map(|span| span.id())
            .and_then(|id| self.ids(&id));
        match (ids, line.trim_end().strip_suffix('}')) {
            (Some((trace_id, span_id)), Some(object)) => {
                writeln!(
                    writer,
                    r#"{object},"trace_id":"{trace_id}","span_id":"{span_id}"}}"#
                )
            }
            _ => writer.write_str(&line),
        }
    }
}

fn otlp_provider(
    service: &'static str,
    endpoint: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let traces_url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url)
        .build()
        .map_err(|source| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is already global (only in unusual test set-ups): render
                // this one's own, empty registry rather than fail.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .ok();
            handle
        })
        .clone()
}

struct NatsHeaders<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct NatsHeadersRef<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsHeadersRef<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

/// Writes the current span's context into NATS headers as `traceparent`/`tracestate`.
pub fn inject_trace_context(headers: &mut async_nats::HeaderMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut NatsHeaders(headers));
    });
}

/// The current span's context as HTTP header pairs (`traceparent`, `tracestate`).
pub fn trace_context_headers() -> std::collections::HashMap<String, String> {
    let context = tracing::Span::current().context();
    let mut headers = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut headers);
    });
    headers
}

/// Makes `span` a child of the trace carried in NATS headers, if any.
pub fn link_to_remote_parent(span: &tracing::Span, headers: Option<&async_nats::HeaderMap>) {
    if let Some(headers) = headers {
        link_to_parent(span, &NatsHeadersRef(headers));
    }
}

/// Makes `span` a child of the trace carried by any header carrier (HTTP, NATS).
pub fn link_to_parent(span: &tracing::Span, carrier: &dyn Extractor) {
    let parent =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(carrier));
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Mutex;

    use opentelemetry::trace::TraceContextExt as _;
    use serde_json::Value;
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("buffer").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Self;

        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<Value> {
            let bytes = self.0.lock().expect("buffer").clone();
            String::from_utf8(bytes)
                .expect("utf-8")
                .lines()
                .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
                .collect()
        }
    }

    /// The subscriber `init` builds for LOG_FORMAT=json, writing into a buffer.
    fn json_subscriber(out: Captured) -> (Dispatch, SdkTracerProvider) {
        let handle = Arc::new(OnceLock::new());
        let provider = SdkTracerProvider::builder().build();
        let dispatch = Dispatch::new(
            tracing_subscriber::registry()
                .with(json_layer(handle.clone()).with_writer(out))
                .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test"))),
        );
        handle.set(dispatch.downgrade()).expect("fresh handle");
        (dispatch, provider)
    }

    fn ids_of(span: &tracing::Span) -> (String, String) {
        let context = span.context();
        let otel = context.span();
        let ids = otel.span_context();
        (ids.trace_id().to_string(), ids.span_id().to_string())
    }

    #[test]
    fn json_lines_carry_the_ids_of_their_span() {
        let out = Captured::default();
        let (dispatch, _provider) = json_subscriber(out.clone());
        let (outer_ids, inner_ids) = tracing::dispatcher::with_default(&dispatch, || {
            let outer = tracing::info_span!("process_job", job_type = "ledger.post");
            let inner = outer.in_scope(|| tracing::info_span!("postgres_tx"));
            outer.in_scope(|| tracing::info!(attempt = 2, "in the outer span"));
            inner.in_scope(|| tracing::warn!("in the inner span"));
            tracing::info!(parent: &inner, "explicit parent");
            tracing::info!("outside any span");
            (ids_of(&outer), ids_of(&inner))
        });

        let lines = out.lines();
        assert_eq!(lines.len(), 4, "{lines:?}");
        let ids = |line: &Value| {
            (
                line["trace_id"].as_str().map(str::to_owned),
                line["span_id"].as_str().map(str::to_owned),
            )
        };
        assert_eq!(lines[0]["message"], "in the outer span");
        assert_eq!(lines[0]["attempt"], 2);
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["span"]["name"], "process_job");
        assert!(lines[0]["timestamp"].is_string() && lines[0]["target"].is_string());
        assert_eq!(
            ids(&lines[0]),
            (Some(outer_ids.0.clone()), Some(outer_ids.1.clone()))
        );
        assert_eq!(
            ids(&lines[1]),
            (Some(inner_ids.0.clone()), Some(inner_ids.1.clone()))
        );
        assert_eq!(
            ids(&lines[2]),
            (Some(inner_ids.0.clone()), Some(inner_ids.1))
        );
        assert_eq!(ids(&lines[3]), (None, None));

        // One trace, two spans; hex as in `traceparent`.
        assert_eq!(outer_ids.0, inner_ids.0);
        assert_eq!(outer_ids.0.len(), 32);
        assert_eq!(outer_ids.1.len(), 16);
        assert!(outer_ids
            .0
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(outer_ids.0, "0".repeat(32));
    }

    #[test]
    fn traceparent_written_into_nats_headers_continues_the_trace() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let (dispatch, _provider) = json_subscriber(Captured::default());
        tracing::dispatcher::with_default(&dispatch, || {
            let publish = tracing::info_span!("publish");
            let mut headers = async_nats::HeaderMap::new();
            publish.in_scope(|| inject_trace_context(&mut headers));
            let (trace_id, span_id) = ids_of(&publish);
            assert_eq!(
                headers.get("traceparent").map(|v| v.as_str().to_owned()),
                Some(format!("00-{trace_id}-{span_id}-01"))
            );

            let process = tracing::info_span!("process_job");
            link_to_remote_parent(&process, Some(&headers));
            assert_eq!(ids_of(&process).0, trace_id);
            assert_ne!(ids_of(&process).1, span_id);

            let unrelated = tracing::info_span!("process_job");
            link_to_remote_parent(&unrelated, None);
            assert_ne!(ids_of(&unrelated).0, trace_id);
        });
    }
}
