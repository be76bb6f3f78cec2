//! Logging and tracing. Logs go to stderr through `tracing` (librdkafka's and sqlx's too);
//! spans carry OpenTelemetry contexts so that a saga's trace context can travel in the outbox
//! row and the Kafka `traceparent` header from one service to the next, and, when an OTLP
//! endpoint is configured, are exported to it (Jaeger, say).
//!
//! The log output and the trace each have their own filter (per-layer filtering). `RUST_LOG`
//! decides which lines are written; it does not decide which spans exist. So with
//! `RUST_LOG=warn` the request, publish and process spans are still made, the `traceparent`
//! still travels, and the exported trace still covers the whole saga.

use std::collections::HashMap;
use std::io::IsTerminal;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Metadata};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{FilterFn, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The log filter when `RUST_LOG` is unset.
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn,sea_orm=warn,librdkafka=warn";

/// The crates whose spans make up a saga's trace: the services, their shared runtime and the
/// HTTP layer's request span. The exporter's own HTTP client (hyper, reqwest) is left out, or
/// exporting a batch would make spans to export.
const TRACED_TARGETS: [&str; 5] = [
    "saga_runtime",
    "orders_svc",
    "payments_svc",
    "inventory_svc",
    "tower_http",
];

/// Keeps the tracer provider alive; dropping it at exit flushes the exporter's last batch.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Nothing useful can be done with a failed flush at exit.
        let _ = self.provider.shutdown();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("RUST_LOG is invalid: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
    #[error("the OTLP exporter cannot be built: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// Whether spans are exported: only when an OTLP endpoint is configured, by the standard
/// variables the exporter itself reads.
fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// Installs the global subscriber. `RUST_LOG` filters the log lines (default
/// [`DEFAULT_LOG_FILTER`]); `LOG_FORMAT=json` switches to one JSON object per line for log
/// shippers. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are exported over OTLP/HTTP
/// (protobuf) as `OTEL_SERVICE_NAME` (default: the service's name), sampled by
/// `OTEL_TRACES_SAMPLER` (default `parentbased_always_on`).
pub fn init(service_name: &'static str) -> Result<TelemetryGuard, TelemetryError> {
    let log_filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::try_new(spec)?,
        _ => EnvFilter::try_new(DEFAULT_LOG_FILTER)?,
    };
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(log_filter)
            .boxed()
    } else {
        // Colours only on a terminal: a log file or a container's log would otherwise carry
        // the escape codes into every search of it.
        let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(colour)
            .with_filter(log_filter)
            .boxed()
    };

    // Spans get real trace and span IDs without an exporter too, which is all the
    // propagation below needs. The sampler comes from OTEL_TRACES_SAMPLER (read by the SDK).
    let mut provider = SdkTracerProvider::builder().with_resource(resource(service_name));
    if otlp_configured() {
        // The blocking HTTP client: the batch processor runs on a thread of its own, where an
        // async client has no runtime and silently drops spans (opentelemetry-rust#2673).
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    let tracer = provider.tracer(service_name);
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    tracing_subscriber::registry()
        .with(fmt)
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(trace_filter()),
        )
        .try_init()?;
    Ok(TelemetryGuard { provider })
}

/// `service.name` is the service's own name unless `OTEL_SERVICE_NAME` says otherwise (the
/// SDK's environment detector reads it, and `OTEL_RESOURCE_ATTRIBUTES`).
fn resource(service_name: &'static str) -> Resource {
    let builder = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty()) {
        builder.build()
    } else {
        builder.with_service_name(service_name).build()
    }
}

/// What the trace records, whatever `RUST_LOG` says: the INFO spans of [`TRACED_TARGETS`], and
/// their warnings and errors as span events.
fn trace_filter() -> FilterFn<fn(&Metadata<'_>) -> bool> {
    filter_fn(traced)
}

fn traced(metadata: &Metadata<'_>) -> bool {
    let ours = TRACED_TARGETS
        .iter()
        .any(|target| metadata.target().starts_with(target));
    // A consumer lane's span lasts as long as the process: it names the lane in log lines,
    // and in a trace viewer it would only be a process-long bar of its own.
    if metadata.name() == "consumer_lane" {
        return false;
    }
    let most_verbose = if metadata.is_span() {
        Level::INFO
    } else {
        Level::WARN
    };
    ours && *metadata.level() <= most_verbose
}

/// The W3C `traceparent` of the current span, if a trace is active.
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// The W3C `traceparent` of `span`, if it belongs to a trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the trace named by `traceparent`, when there is one, and records
/// its trace and span IDs (see [`record_ids`]).
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(traceparent) = traceparent {
        let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        let parent = TraceContextPropagator::new().extract(&carrier);
        // An invalid header leaves the span as the root of a new trace, the best we can do.
        let _ = span.set_parent(parent);
    }
    record_ids(span);
}

/// Writes the span's OpenTelemetry IDs into its `trace_id` and `span_id` fields (declared
/// `Empty` by the span), so that every log line inside it names the trace, in text and in
/// JSON (`LOG_FORMAT=json`), and a log search leads to the trace in Jaeger.
pub fn record_ids(span: &tracing::Span) {
    let context = span.context();
    let ids = context.span().span_context().clone();
    if ids.is_valid() {
        span.record("trace_id", ids.trace_id().to_string());
        span.record("span_id", ids.span_id().to_string());
    }
}

/// Makes `span`, which processes a message, a child of the span that sent it and links it to
/// that span too, as the messaging semantic conventions describe: the parent keeps one saga
/// in one trace, and the link names the producer explicitly for tools that follow links.
pub fn continue_trace_from_message(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        record_ids(span);
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    let sender = parent.span().span_context().clone();
    if sender.is_valid() {
        span.add_link(sender);
    }
    let _ = span.set_parent(parent);
    record_ids(span);
}
