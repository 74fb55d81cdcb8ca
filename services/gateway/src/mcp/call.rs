//! `tools/call`: the call is submitted as a task (the REST API's checks, the agent's
//! defaults), its progress relayed on the caller's progress token, and its end awaited:
//! the tool's result as the tool gave it; or, past a short wait, an MCP task for clients that
//! declared the tasks extension; or, past `max_wait_secs`, an error naming the task, which
//! runs on.

use futures::StreamExt;
use rmcp::RoleServer;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, CreateTaskResult,
    ErrorData, MetaObject, ProgressNotificationParam, ProtocolVersion, ResultType,
};
use rmcp::service::RequestContext;
use serde_json::{Value, json};
use uuid::Uuid;
use wharf_contract::{ErrorCode, SubmitTask, TaskError, WsServerMessage};

use super::server::{Caller, TASK_ID_META, WharfMcp, detailed, rpc_error, tool_result};
use crate::problem::ApiError;
use crate::tasks;

/// The `_meta` key a client may send an idempotency key in: a repeated call with the same key
/// (and the same tool and arguments) is the same task, not a second one.
pub(super) const IDEMPOTENCY_META: &str = "wharf/idempotencyKey";

pub(super) async fn call(
    mcp: &WharfMcp,
    request: CallToolRequestParams,
    ctx: RequestContext<RoleServer>,
) -> Result<CallToolResponse, ErrorData> {
    let state = &mcp.state;
    let caller = Caller::of(&ctx)?;
    let req = match submission(&caller, request, &ctx) {
        Ok(req) => req,
        Err(e) => return Ok(refused(e).into()),
    };
    let trace = caller.trace;
    let (view, events) = match tasks::submit_and_follow(state, &caller.principal, req, trace).await
    {
        Ok(submitted) => submitted,
        Err(e) if is_tool_error(&e) => return Ok(refused(e).into()),
        Err(e) => return Err(rpc_error(e)),
    };
    let id = view.id;
    let _registered = mcp.calls.register(&caller.principal, &ctx.id, id);
    let with_tasks = ctx
        .client_capabilities()
        .is_some_and(|c| c.supports_tasks());
    let config = &state.config.mcp;
    let wait = if with_tasks {
        config.task_after()
    } else {
        config.max_wait()
    };
    match follow(&ctx, events, wait).await {
        Followed::Ended(m) => return Ok(outcome(id, m).into()),
        Followed::Closed => {
            closed(mcp, &caller, &ctx, id).await;
            return Err(ErrorData::internal_error("the client went away", None));
        }
        Followed::Waited => {}
    }
    // Not ended in time: hand the task over, or say where it can be found.
    let now = tasks::find(state, id).await.ok().flatten().unwrap_or(view);
    if now.status.is_terminal() {
        return Ok(result_of_view(&now).into());
    }
    if with_tasks {
        let task = detailed(&now, config.poll_interval_ms).task;
        return Ok(CallToolResponse::Task(CreateTaskResult::new(task)));
    }
    Err(ErrorData::internal_error(
        format!(
            "task {id} has not ended after {} s; it runs on: read it at /api/v1/tasks/{id}, \
             or call with the MCP tasks extension to poll it with tasks/get",
            wait.as_secs()
        ),
        Some(json!({ "taskId": id, "status": now.status })),
    ))
}

/// The task a call asks for: its tool and arguments, the agent of the endpoint, the
/// idempotency key of its `_meta`.
fn submission(
    caller: &Caller,
    request: CallToolRequestParams,
    ctx: &RequestContext<RoleServer>,
) -> Result<SubmitTask, ApiError> {
    let idempotency_key = match ctx.meta.get(IDEMPOTENCY_META) {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                "/_meta/wharf~1idempotencyKey",
                "an idempotency key is a string",
            ));
        }
    };
    Ok(SubmitTask {
        tool: request.name.to_string(),
        arguments: request.arguments.unwrap_or_default(),
        queue: None,
        timeout_secs: None,
        max_attempts: None,
        idempotency_key,
        session_id: None,
        metadata: None,
        run_at: None,
        delay_secs: None,
        priority: None,
        agent: caller.agent.as_ref().map(|a| a.name.clone()),
        callback: None,
    })
}

/// How following a call's task ended.
enum Followed {
    /// With the task's terminal message.
    Ended(WsServerMessage),
    /// The client closed the call's stream first.
    Closed,
    /// The wait was over first (or the live events broke off).
    Waited,
}

/// Follows the task's events for up to `wait`, relaying its progress on the request's
/// progress token.
async fn follow(
    ctx: &RequestContext<RoleServer>,
    events: impl futures::Stream<Item = WsServerMessage>,
    wait: std::time::Duration,
) -> Followed {
    let progress = ctx.meta.get_progress_token();
    let mut events = std::pin::pin!(events);
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        let message = tokio::select! {
            m = events.next() => m,
            () = &mut deadline => return Followed::Waited,
            () = ctx.ct.cancelled() => return Followed::Closed,
        };
        match message {
            Some(WsServerMessage::Progress {
                progress: done,
                total,
                message,
                ..
            }) => {
                if let Some(token) = &progress {
                    let mut p = ProgressNotificationParam::new(token.clone(), done);
                    p.total = total;
                    p.message = message;
                    // A client that went away is seen by the cancellation above.
                    let _ = ctx.peer.notify_progress(p).await;
                }
            }
            Some(m) if m.is_terminal() => return Followed::Ended(m),
            Some(_) => {}
            // The live events broke off (NATS went away): the task itself goes on.
            None => return Followed::Waited,
        }
    }
}

/// What happens to the task when the client closes the call's stream before it ended.
/// Clients of MCP 2026-07-28 cancel a call that way, so its task is cancelled. Older clients
/// send `notifications/cancelled` to cancel (`cancel.rs`); for them, per the MCP transport,
/// a lost connection is not a cancellation, and the task runs on to its outcome.
async fn closed(mcp: &WharfMcp, caller: &Caller, ctx: &RequestContext<RoleServer>, id: Uuid) {
    if mcp.state.stopping.is_cancelled() {
        // The gateway is stopping and closes every stream: that cancels nothing.
        tracing::info!(task_id = %id, "gateway stopping; the MCP call's task runs on");
        return;
    }
    let modern = ctx
        .protocol_version()
        .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28);
    if !modern {
        tracing::info!(task_id = %id, "MCP client went away; its task runs on");
        return;
    }
    match tasks::request_cancel(&mcp.state, &caller.principal, id).await {
        Ok(_) => tracing::info!(task_id = %id, "MCP call cancelled by its client"),
        Err(e) => {
            tracing::info!(task_id = %id, reason = %e.0.detail, "MCP call's cancellation not carried out")
        }
    }
}

/// Refusals the caller can act on (bad arguments, a tool the agent may not use) are the
/// tool's errors in MCP, which the model reads; the rest are protocol errors.
fn is_tool_error(e: &ApiError) -> bool {
    (matches!(e.0.status, 400 | 409 | 413 | 422) && e.0.code != ErrorCode::UnknownTool)
        || e.0.code == ErrorCode::ToolNotAllowed
}

/// A refusal as a tool error: the detail as text, the problem document (with its field
/// pointers) as `structuredContent`.
fn refused(e: ApiError) -> CallToolResult {
    let mut r = CallToolResult::error(vec![ContentBlock::text(e.0.detail.clone())]);
    r.structured_content = serde_json::to_value(e.0.as_ref()).ok();
    r
}

/// The call's result from its task's terminal event: the tool's result unchanged, else an
/// error result saying why the task ended without one.
fn outcome(id: Uuid, m: WsServerMessage) -> CallToolResult {
    let r = match m {
        WsServerMessage::Complete { result, .. } => succeeded(result),
        WsServerMessage::Error { error, .. } => failed(id, &error),
        WsServerMessage::Cancelled { reason, .. } => cancelled(reason),
        _ => CallToolResult::error(vec![ContentBlock::text(
            "the task ended without an outcome",
        )]),
    };
    with_task_id(r, id)
}

/// The result of a task found ended when the wait was over.
fn result_of_view(view: &wharf_contract::TaskView) -> CallToolResult {
    let r = match (&view.result, &view.error) {
        (Some(result), _) => succeeded(result.clone()),
        (None, Some(error)) => failed(view.id, error),
        (None, None) => cancelled(None),
    };
    with_task_id(r, view.id)
}

/// The tool's result, as the worker recorded it.
fn succeeded(result: Value) -> CallToolResult {
    serde_json::from_value(result.clone()).unwrap_or_else(|_| CallToolResult::structured(result))
}

/// A failed task as a call's result: the tool's own error result, or the task's error.
fn failed(id: Uuid, error: &TaskError) -> CallToolResult {
    if let Some(r) = tool_result(error) {
        return r;
    }
    let mut r = CallToolResult::error(vec![ContentBlock::text(format!(
        "task {id} failed: {}",
        error.message
    ))]);
    r.structured_content = Some(json!({ "taskId": id, "error": error }));
    r
}

fn cancelled(reason: Option<String>) -> CallToolResult {
    let why = reason.unwrap_or_else(|| "the task was cancelled".into());
    CallToolResult::error(vec![ContentBlock::text(why)])
}

/// Names the Wharf task in the result's `_meta`. A result read back from the history has lost
/// its `resultType`, which MCP 2026-07-28 requires (rmcp drops it again for older clients).
fn with_task_id(mut r: CallToolResult, id: Uuid) -> CallToolResult {
    r.result_type = Some(ResultType::COMPLETE);
    let meta = r.meta.get_or_insert_with(MetaObject::default);
    meta.0
        .insert(TASK_ID_META.into(), Value::String(id.to_string()));
    r
}
