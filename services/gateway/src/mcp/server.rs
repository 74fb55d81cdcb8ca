//! The MCP server's handler: what it offers, `tools/list`, and the tasks extension's
//! `tasks/get` and `tasks/cancel` over Wharf's own tasks.

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, DetailedTask,
    ErrorCode as RpcCode, ErrorData, GetTaskParams, GetTaskResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, SubscriptionFilter, Task,
    TaskPayload, TaskStatus as McpStatus, Tool,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::{RoleServer, ServerHandler};
use serde_json::{Value, json};
use uuid::Uuid;
use wharf_contract::{ErrorCode, Permission, TaskStatus, TaskView, ToolInfo};

use super::McpAgent;
use crate::AppState;
use crate::auth::Principal;
use crate::problem::ApiError;
use crate::tasks;

/// The key of a result's `_meta` that names the Wharf task behind a call.
pub(super) const TASK_ID_META: &str = "wharf/taskId";

/// The handler rmcp runs for each request: the gateway's state, nothing per request (that
/// comes in the request's extensions: the caller, the agent).
#[derive(Clone)]
pub struct WharfMcp {
    pub(super) state: AppState,
    /// The calls running here, for their clients' cancellations.
    pub(super) calls: super::cancel::Calls,
}

impl WharfMcp {
    pub fn new(state: AppState, calls: super::cancel::Calls) -> WharfMcp {
        WharfMcp { state, calls }
    }
}

/// Who calls, and through which agent, as the gateway's middleware put them in the request.
pub(super) struct Caller {
    pub principal: Principal,
    pub agent: Option<wharf_contract::Agent>,
    /// The request's trace context (its `traceparent`), for the task it submits.
    pub trace: wharf_telemetry::TraceContext,
}

impl Caller {
    pub fn of(ctx: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
        let parts = ctx
            .extensions
            .get::<axum::http::request::Parts>()
            .ok_or_else(|| {
                ErrorData::internal_error("the request's HTTP parts are missing", None)
            })?;
        let principal = parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ErrorData::internal_error("the request was not authenticated", None))?;
        let agent = parts.extensions.get::<McpAgent>().map(|a| a.0.clone());
        Ok(Caller {
            principal,
            agent,
            trace: tasks::trace_of(&parts.headers),
        })
    }

    /// Whether this caller sees `tool` in its list.
    fn sees(&self, tool: &ToolInfo) -> bool {
        self.agent.as_ref().is_none_or(|a| a.allows(&tool.name))
    }
}

/// A refusal of the REST API as a JSON-RPC error: the problem document travels as the data,
/// so its code and field pointers reach the client.
pub(super) fn rpc_error(e: ApiError) -> ErrorData {
    let p = &e.0;
    let code = match p.code {
        ErrorCode::TaskNotFound | ErrorCode::NotFound | ErrorCode::UnknownTool => {
            RpcCode::INVALID_PARAMS
        }
        _ if p.status >= 500 => RpcCode::INTERNAL_ERROR,
        _ => RpcCode::INVALID_REQUEST,
    };
    ErrorData::new(
        code,
        p.detail.clone(),
        serde_json::to_value(p.as_ref()).ok(),
    )
}

/// The catalog entry as MCP shows a tool.
fn tool_of(info: ToolInfo) -> Option<Tool> {
    let mut tool = json!({
        "name": info.name,
        "inputSchema": info.input_schema,
    });
    for (key, value) in [
        ("title", info.title.map(Value::String)),
        ("description", info.description.map(Value::String)),
        ("outputSchema", info.output_schema),
        ("annotations", info.annotations),
    ] {
        if let Some(v) = value {
            tool[key] = v;
        }
    }
    match serde_json::from_value(tool) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!(tool = %info.name, error = %e, "a tool MCP clients cannot be shown");
            None
        }
    }
}

/// A Wharf task as an MCP task (SEP-2663): working while queued or running, then the tool's
/// result when it gave one (an `isError` result included: the call completed, and its result
/// says it failed), a JSON-RPC error when it ended without one, or cancelled.
pub(super) fn detailed(view: &TaskView, poll_interval_ms: u64) -> DetailedTask {
    let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.unwrap_or_else(chrono::Utc::now)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let created = at(view.created_at);
    let updated = at(view.updated_at.or(view.finished_at).or(view.created_at));
    let mut task = Task::new(view.id.to_string(), McpStatus::Working, created, updated);
    if !view.status.is_terminal() {
        task = task.with_poll_interval_ms(poll_interval_ms);
    }
    let payload = match view.status {
        TaskStatus::Queued | TaskStatus::Running => {
            let mut message = view.status.as_str().to_owned();
            if let Some(p) = &view.progress {
                message = match p.total {
                    Some(total) => format!("{message}: {} of {total}", p.progress),
                    None => format!("{message}: {}", p.progress),
                };
                if let Some(m) = &p.message {
                    message = format!("{message}, {m}");
                }
            }
            task = task.with_status_message(message);
            TaskPayload::Working
        }
        TaskStatus::Succeeded => TaskPayload::Completed {
            result: complete(object(
                view.result
                    .clone()
                    .unwrap_or_else(|| json!({"content": []})),
            )),
        },
        TaskStatus::Failed => match view.error.as_ref().and_then(tool_result) {
            Some(result) => TaskPayload::Completed {
                result: complete(object(serde_json::to_value(result).unwrap_or_default())),
            },
            None => TaskPayload::Failed {
                error: object(json!({
                    "code": RpcCode::INTERNAL_ERROR.0,
                    "message": view.error.as_ref().map_or("the task failed", |e| e.message.as_str()),
                    "data": { "taskId": view.id, "error": view.error },
                })),
            },
        },
        TaskStatus::Cancelled => TaskPayload::Cancelled,
    };
    DetailedTask::new(task, payload)
}

/// The `CallToolResult` a failed task's tool returned (`isError`), if that is why it failed.
pub(super) fn tool_result(error: &wharf_contract::TaskError) -> Option<CallToolResult> {
    if !error.is(wharf_contract::TaskErrorCode::ToolError) {
        return None;
    }
    serde_json::from_value(error.details.clone()?).ok()
}

/// A tool's result as MCP 2026-07-28 spells it (the history keeps it without `resultType`).
fn complete(mut result: serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    result.insert("resultType".into(), json!("complete"));
    result
}

fn object(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => serde_json::Map::from_iter([("value".to_owned(), other)]),
    }
}

/// A `tasks/*` request's task id as a Wharf task id; an id Wharf never made is not found.
fn task_id(raw: &str) -> Result<Uuid, ErrorData> {
    raw.parse().map_err(|_| {
        ErrorData::invalid_params(format!("no task {raw:?}"), Some(json!({"taskId": raw})))
    })
}

impl ServerHandler for WharfMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("wharf", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Every tool call runs as a durable task in Wharf's queue, with retries. A call \
             that takes long answers with an MCP task (tasks extension) to poll with \
             tasks/get; each result's _meta names its Wharf task (wharf/taskId), readable \
             at /api/v1/tasks/{id}.",
        )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = Caller::of(&ctx)?;
        caller
            .principal
            .require(Permission::ToolsRead)
            .map_err(rpc_error)?;
        let tools = self
            .state
            .catalog
            .list(|t| caller.sees(t))
            .into_iter()
            .filter_map(tool_of)
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        super::call::call(self, request, ctx).await
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        let caller = Caller::of(&ctx)?;
        let id = task_id(&request.task_id)?;
        caller
            .principal
            .require(Permission::TasksRead)
            .map_err(rpc_error)?;
        let view = tasks::find_owned(&self.state, &caller.principal, id)
            .await
            .map_err(rpc_error)?;
        let poll = self.state.config.mcp.poll_interval_ms;
        Ok(GetTaskResult::new(detailed(&view, poll)))
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let caller = Caller::of(&ctx)?;
        let id = task_id(&request.task_id)?;
        match tasks::request_cancel(&self.state, &caller.principal, id).await {
            Ok(_) => Ok(()),
            // Cancelling what already ended asks for nothing: the task keeps its outcome.
            Err(e) if e.0.code == ErrorCode::TaskFinished => Ok(()),
            Err(e) => Err(rpc_error(e)),
        }
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    /// `subscriptions/listen` (MCP 2026-07-28): `notifications/tools/list_changed` whenever
    /// the catalog changes, until the client closes the stream or the gateway stops.
    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        Caller::of(context.request_context())?
            .principal
            .require(Permission::ToolsRead)
            .map_err(rpc_error)?;
        let mut changes = self.state.catalog.changes();
        changes.mark_unchanged();
        loop {
            tokio::select! {
                () = context.cancelled() => return Ok(()),
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    if context.sink().notify_tool_list_changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: &str, extra: Value) -> TaskView {
        let mut v = json!({
            "id": "01a241d8-1b53-72e1-b6c2-2a1bcb417ee0",
            "status": status,
            "tool": "demo.sleep",
            "queue": "default",
            "attempts": 1,
            "max_attempts": 3,
            "created_at": "2026-12-04T16:00:00Z",
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn wire(v: &TaskView) -> Value {
        serde_json::to_value(detailed(v, 500)).unwrap()
    }

    #[test]
    fn tasks_read_as_mcp_tasks() {
        let running = wire(&view(
            "running",
            json!({"progress": {"progress": 2.0, "total": 4.0, "message": "step 2"}}),
        ));
        assert_eq!(running["status"], "working");
        assert_eq!(running["statusMessage"], "running: 2 of 4, step 2");
        assert_eq!(running["pollIntervalMs"], 500);

        let done = wire(&view(
            "succeeded",
            json!({"result": {"content": [{"type": "text", "text": "ok"}]}}),
        ));
        assert_eq!(done["status"], "completed");
        assert_eq!(done["result"]["content"][0]["text"], "ok");
        assert_eq!(done["result"]["resultType"], "complete");
        assert!(done.get("pollIntervalMs").is_none());

        // The tool said it failed: the call completed, with the tool's own result.
        let tool_error = json!({"content": [{"type": "text", "text": "no luck"}], "isError": true});
        let refused = wire(&view(
            "failed",
            json!({"error": {"code": "tool_error", "message": "no luck", "details": tool_error}}),
        ));
        assert_eq!(refused["status"], "completed");
        assert_eq!(refused["result"]["isError"], true);

        // It ended without a result from its tool: a JSON-RPC error naming the task.
        let timed_out = wire(&view(
            "failed",
            json!({"error": {"code": "timeout", "message": "the call took longer than 30 s"}}),
        ));
        assert_eq!(timed_out["status"], "failed");
        assert_eq!(timed_out["error"]["code"], -32603);
        assert_eq!(
            timed_out["error"]["data"]["taskId"],
            "01a241d8-1b53-72e1-b6c2-2a1bcb417ee0"
        );

        assert_eq!(wire(&view("cancelled", json!({})))["status"], "cancelled");
    }
}
