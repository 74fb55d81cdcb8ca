//! Logging set-up and W3C trace-context propagation shared by every Wharf process.
//!
//! It owns the `tracing` subscriber (human-readable or JSON lines) and the [`TraceContext`] that
//! travels with a task from the gateway through NATS headers to the worker and its events. It
//! depends on no other Wharf crate.

pub mod metrics;
pub mod redact;
pub mod traces;

use rand::Rng;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For people at a terminal (`wharf dev`).
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber: logs to stderr, plus OpenTelemetry span export when the
/// `OTEL_*` variables ask for it (see [`traces::otlp_layer`]; `service` is the default service
/// name). `RUST_LOG` overrides `default_filter`. Safe to call twice (the second call does
/// nothing), so tests may call it freely.
pub fn init_logging(format: LogFormat, default_filter: &str, service: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Secrets registered with `redact::keep_out_of_logs` never reach a line.
    let stderr = || redact::Scrubbed(std::io::stderr);
    let fmt = tracing_subscriber::fmt::layer().with_writer(stderr());
    let (pretty, json) = match format {
        LogFormat::Pretty => (Some(fmt.compact()), None),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(stderr())
                    .json()
                    .flatten_event(true),
            ),
        ),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(pretty)
        .with(json)
        .with(traces::otlp_layer(service))
        .try_init();
}

/// A W3C trace context (`traceparent`): which trace a piece of work belongs to and which span
/// caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
    /// Whether this context continues one that came from elsewhere (a `traceparent` read from
    /// a request or a message, or the trace id a task carries), rather than a trace begun in
    /// this process. A trace begun here whose spans are not exported has nothing for a
    /// `traceparent` to point at: its trace id alone, which the task carries, is all another
    /// process needs (see [`TraceContext::continuing`]).
    pub propagated: bool,
}

impl TraceContext {
    /// Starts a new trace.
    pub fn new_root() -> TraceContext {
        let mut rng = rand::rng();
        TraceContext {
            trace_id: rng.random::<u128>().max(1),
            span_id: rng.random::<u64>().max(1),
            sampled: true,
            propagated: false,
        }
    }

    /// A context in the trace `trace_id` (32 hex digits, as a task carries it) whose parent
    /// span was never recorded: the parent of a task's work when its message came without a
    /// `traceparent`, because the gateway that began the trace exports no spans. Its span id
    /// is derived from the trace id, so every process continuing the trace (each attempt, the
    /// recorder) hangs off the same missing root rather than each off one of its own. Sampled,
    /// as every trace Wharf begins is; `None` for anything but 32 hex digits, not all zero.
    pub fn continuing(trace_id: &str) -> Option<TraceContext> {
        if trace_id.len() != 32 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace_id, 16).ok()?;
        (trace_id != 0).then(|| TraceContext {
            trace_id,
            // The low half, or 1 (a span id must not be zero).
            span_id: (trace_id as u64).max(1),
            sampled: true,
            propagated: true,
        })
    }

    /// The context a task's work continues: its message's `traceparent`, else the trace id
    /// the task carries (see [`TraceContext::continuing`]); `None` when neither reads.
    pub fn carried(traceparent: Option<&str>, trace_id: Option<&str>) -> Option<TraceContext> {
        traceparent
            .and_then(TraceContext::parse)
            .or_else(|| trace_id.and_then(TraceContext::continuing))
    }

    /// Whether a message should carry this context as its `traceparent`: when it came from
    /// elsewhere (the caller chose it, sampled or not) or when this process exports its spans.
    /// Otherwise the header would name a span nobody records, and nats-server looks into the
    /// headers of every message whose `traceparent` is sampled (to trace the message itself),
    /// a cost per message for nothing.
    pub fn worth_sending(&self) -> bool {
        self.propagated || traces::exporting()
    }

    /// A new span in the same trace, caused by this one.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: rand::rng().random::<u64>().max(1),
            ..*self
        }
    }

    /// Parses a `traceparent` header value; `None` for anything malformed (then start a new
    /// trace, as the W3C recommendation says).
    pub fn parse(header: &str) -> Option<TraceContext> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
            propagated: true,
        })
    }

    /// The `traceparent` header value.
    pub fn header(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }

    /// The trace id as 32 hex digits, for log fields.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

/// Makes ring the process's TLS crypto provider, for every HTTPS client it builds (MCP servers
/// over streamable HTTP, a JWKS URL, OTLP export): the HTTP client is built without a provider
/// of its own, so that one crypto library serves the whole binary. Call it before building any
/// client; calling it again does nothing.
pub fn install_crypto() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_children_share_the_trace() {
        let root = TraceContext::new_root();
        let parsed = TraceContext::parse(&root.header()).unwrap();
        assert_eq!(
            parsed,
            TraceContext {
                propagated: true,
                ..root
            }
        );
        assert!(!root.propagated && !root.child().propagated);
        assert!(parsed.child().propagated, "a child continues what came in");
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-zzad6b7169203331-01",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad:?}");
        }
        let ok = TraceContext::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        assert!(ok.unwrap().sampled);
    }

    #[test]
    fn a_task_trace_id_is_continued_with_a_parent_of_its_own() {
        let root = TraceContext::new_root();
        let continued = TraceContext::continuing(&root.trace_id_hex()).unwrap();
        assert_eq!(continued.trace_id, root.trace_id);
        assert_ne!(continued.span_id, 0);
        assert!(continued.sampled && continued.propagated);
        assert_eq!(
            TraceContext::continuing(&root.trace_id_hex()),
            Some(continued),
            "every process continuing a trace names the same root"
        );
        let low_zero = TraceContext::continuing("00000000000000010000000000000000").unwrap();
        assert_eq!(low_zero.span_id, 1);
        let header = continued.child().header();
        assert_eq!(
            TraceContext::carried(Some(&header), Some("ffffffffffffffffffffffffffffffff")),
            TraceContext::parse(&header),
            "a traceparent comes first"
        );
        assert_eq!(
            TraceContext::carried(Some("garbled"), Some(&root.trace_id_hex())),
            Some(continued)
        );
        assert_eq!(TraceContext::carried(None, None), None);
        let (zeros, not_hex) = ("0".repeat(32), "g".repeat(32));
        for bad in ["", "0af7651916cd43dd", &zeros, &not_hex] {
            assert!(TraceContext::continuing(bad).is_none(), "{bad:?}");
        }
    }
}
