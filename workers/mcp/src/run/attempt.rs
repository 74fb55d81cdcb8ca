//! One attempt's call: the tool found on its server, its start noted, the call made with the
//! task id and trace context in `_meta`, its progress forwarded, its start announced if it runs
//! long, and its lease kept until it answers (or the worker gives the task back).

use std::future::Future;
use std::time::{Duration, Instant};

use rmcp::model::{CallToolResult, ProgressNotificationParam};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::Instrument;
use wharf_bus::{Delivery, Message};
use wharf_contract::{
    EventKind, Progress, TASK_ID_META, TRACEPARENT_META, TaskErrorCode, TaskEvent, task::split_tool,
};
use wharf_telemetry::TraceContext;

use super::outcome::{Outcome, classify, failed};
use super::publish::Publisher;
use crate::mcp::CallError;

/// Runs the attempt: calls the tool and says what its result makes of the task.
pub(super) async fn execute(
    p: &Publisher<'_>,
    message: &Message,
    cancel: &tokio_util::sync::CancellationToken,
) -> Outcome {
    let task = p.task;
    let Some((server_name, tool)) = split_tool(&task.tool) else {
        return failed(
            TaskErrorCode::UnknownTool,
            format!("{:?} is not <server>.<tool>", task.tool),
        );
    };
    let Some(server) = p.shared.server(server_name) else {
        return failed(
            TaskErrorCode::UnknownTool,
            format!("this worker has no mcp server named {server_name:?}"),
        );
    };
    p.begin().await;
    super::count_started(task, p.attempt);

    // The call is a span of its own when spans are exported (the server gets its context in
    // `_meta`); otherwise it would only cost memory for as long as the call runs.
    let call_span = if wharf_telemetry::traces::exporting() {
        tracing::info_span!(
            "mcp.call",
            otel.name = %format!("tools/call {tool}"),
            otel.kind = "client",
            server = %server_name,
            tool = %tool,
        )
    } else {
        tracing::Span::none()
    };
    let mut meta = Map::new();
    meta.insert(TASK_ID_META.into(), Value::String(task.id.to_string()));
    meta.insert(
        TRACEPARENT_META.into(),
        Value::String(call_traceparent(&call_span, p.traceparent)),
    );
    let (progress_tx, progress_rx) = mpsc::unbounded_channel();
    let timeout = task.timeout_secs.map(Duration::from_secs);
    let call_started = Instant::now();
    let call = server
        .call(
            tool,
            task.arguments.clone(),
            meta,
            progress_tx,
            cancel,
            timeout,
        )
        .instrument(call_span);
    let Some(result) = follow(p, message, call, progress_rx).await else {
        return Outcome::HandBack;
    };
    crate::mcp::measure_call(server_name, tool, &result, call_started.elapsed());
    classify(result, task, p.attempt, server.retry_tool_errors())
}

/// Waits for `call` to answer, forwarding its progress and renewing the lease every heartbeat;
/// `None` when the worker gives the task back instead (its grace period is over). An attempt
/// still running `started_event_after` after its start gets its `started` event then, at the
/// first tick (which comes that early when the heartbeat period is longer).
async fn follow(
    p: &Publisher<'_>,
    message: &Message,
    call: impl Future<Output = Result<CallToolResult, CallError>>,
    mut progress: mpsc::UnboundedReceiver<Box<ProgressNotificationParam>>,
) -> Option<Result<CallToolResult, CallError>> {
    let mut call = std::pin::pin!(call);
    // The first heartbeat is one period from now. (`interval` ticks at once, but awaiting that
    // first tick still waits for the timer wheel, up to a millisecond added to every task.)
    let begun = tokio::time::Instant::now();
    let announce_at = begun + p.shared.started_event_after;
    let mut first = begun + p.shared.heartbeat;
    if p.start_unreported() {
        first = first.min(announce_at);
    }
    let mut heartbeat = tokio::time::interval_at(first, p.shared.heartbeat);
    let mut forwarded = Forwarded::default();
    loop {
        tokio::select! {
            result = &mut call => {
                // Progress sent just before the answer may still be queued: keep it.
                while let Ok(note) = progress.try_recv() {
                    forwarded.forward(p, note).await;
                }
                return Some(result);
            }
            Some(note) = progress.recv() => forwarded.forward(p, note).await,
            () = p.shared.abandon.cancelled() => return None,
            now = heartbeat.tick() => {
                if now >= announce_at && p.start_unreported() {
                    Box::pin(p.announce()).await;
                }
                match Box::pin(Delivery::KeepAlive.settle(message)).await {
                    Ok(()) => p.renewed(),
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
            }
        }
    }
}

/// The progress of a call forwarded so far. MCP progress must increase; notifications can reach
/// the worker out of order, so a stale one (not above the last forwarded) is dropped.
struct Forwarded {
    last: f64,
}

impl Default for Forwarded {
    fn default() -> Self {
        Forwarded {
            last: f64::NEG_INFINITY,
        }
    }
}

impl Forwarded {
    async fn forward(&mut self, p: &Publisher<'_>, note: Box<ProgressNotificationParam>) {
        if note.progress <= self.last {
            return;
        }
        // Progress shows a running task: its start goes first.
        if p.start_unreported() {
            Box::pin(p.announce()).await;
        }
        self.last = note.progress;
        let note = *note;
        let event = TaskEvent::new(
            p.task.id,
            p.attempt,
            EventKind::Progress(Progress {
                progress: note.progress,
                total: note.total,
                message: note.message,
            }),
        );
        if let Err(e) = p.emit(&event).await {
            tracing::warn!(error = %e, "could not publish progress");
        }
    }
}

/// The traceparent an MCP call passes on: its span's when spans are exported, else the
/// attempt's.
fn call_traceparent(span: &tracing::Span, attempt: &str) -> String {
    match TraceContext::parse(attempt) {
        Some(t) => wharf_telemetry::traces::context_of(span, &t).header(),
        None => attempt.to_owned(),
    }
}
