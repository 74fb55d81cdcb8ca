//! OpenTelemetry traces: every `tracing` span can also be an OpenTelemetry span, exported over
//! OTLP when the standard `OTEL_*` variables ask for it (off by default), and linked across
//! processes through the W3C `traceparent` that travels in NATS headers and MCP `_meta`.
//!
//! Spans are exported only when a process installed an exporter ([`otlp_layer`], or a test's
//! own); otherwise the helpers here fall back to Wharf's own [`TraceContext`] ids, so logs still
//! carry a trace id that follows the task.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::TraceContext;

static EXPORTING: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// True once spans are exported: per-event spans (the recorder's) are only made then.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Whether the environment asks for OTLP export: an endpoint is set
/// (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `OTEL_TRACES_EXPORTER`
/// is not `none`, and `OTEL_SDK_DISABLED` is not `true`.
pub fn otlp_requested() -> bool {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    let is = |k: &str, v: &str| std::env::var(k).is_ok_and(|x| x.trim().eq_ignore_ascii_case(v));
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_TRACES_EXPORTER", "none")
        && !is("OTEL_SDK_DISABLED", "true")
}

/// A layer exporting spans over OTLP/HTTP (protobuf), configured by the `OTEL_*` variables
/// (endpoint, headers, timeout, `OTEL_SERVICE_NAME`, default `service`); `None` when export is
/// not requested or the exporter cannot be built (then the reason is printed once).
pub fn otlp_layer<S>(service: &str) -> Option<impl tracing_subscriber::Layer<S>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    if !otlp_requested() {
        return None;
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("wharf: OTLP trace export disabled: {e}");
            return None;
        }
    };
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(name)
                .build(),
        )
        .build();
    Some(layer_for(provider))
}

/// A layer exporting spans through `provider` (a test's in-memory exporter, say); marks spans as
/// exported for the helpers below.
pub fn layer_for<S>(provider: SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let tracer = provider.tracer("wharf");
    let _ = PROVIDER.set(provider);
    EXPORTING.store(true, Ordering::Relaxed);
    tracing_opentelemetry::layer().with_tracer(tracer)
}

/// Sends the spans still buffered. Call before the process exits.
pub fn flush() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.force_flush();
    }
}

/// Makes `span` a child of the remote span `parent` (from a `traceparent`).
pub fn set_parent(span: &tracing::Span, parent: &TraceContext) {
    if !exporting() {
        return;
    }
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id.to_be_bytes()),
        SpanId::from_bytes(parent.span_id.to_be_bytes()),
        if parent.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        },
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// The trace context to pass on from inside `span`: the exported span's own ids when spans are
/// exported, else `fallback`.
pub fn context_of(span: &tracing::Span, fallback: &TraceContext) -> TraceContext {
    if !exporting() {
        return *fallback;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return *fallback;
    }
    TraceContext {
        trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
        sampled: sc.is_sampled(),
        propagated: fallback.propagated,
    }
}
