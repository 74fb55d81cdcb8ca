//! `/api/v1/tasks`: submit (one or a batch), read, list, cancel, and follow a task's events.

mod batch;
mod cancel;
mod follow;
mod read;
mod submit;

pub use batch::{create_batch, submit_batch};
pub use cancel::{cancel, request_cancel};
pub use follow::{client_error, events, follow, submit_and_follow};
use read::find_latest;
pub use read::{find, find_owned, get, list, not_found};
pub use submit::{Admission, Origin, admit, create, idempotency_header, submit};
use submit::{context, prepare, publish, within_cap};

use axum::http::HeaderMap;
use uuid::Uuid;
use wharf_contract::ErrorCode;
use wharf_telemetry::TraceContext;

use crate::problem::ApiError;

/// The trace context of an incoming request: its exported span's when spans are exported (a
/// child of the caller's `traceparent`, see `ops::measure`), else a child of the caller's, or a
/// new trace.
pub(crate) fn trace_of(headers: &HeaderMap) -> TraceContext {
    let traceparent = headers
        .get(wharf_contract::TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok());
    trace_in(&tracing::Span::current(), traceparent)
}

/// The trace context of a request handled in `span`: the span's own when spans are exported,
/// else a child of the caller's `traceparent`, or a new trace. HTTP and the NATS service alike.
pub(crate) fn trace_in(span: &tracing::Span, traceparent: Option<&str>) -> TraceContext {
    let fallback = traceparent
        .and_then(TraceContext::parse)
        .map_or_else(TraceContext::new_root, |t| t.child());
    wharf_telemetry::traces::context_of(span, &fallback)
}

pub(crate) fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::new(ErrorCode::TaskNotFound, format!("{raw:?} is not a task id")))
}
