//! A task as submitted (the message on the TASKS stream) and as seen (its view; `state.rs` folds
//! the view from the task's events).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Version written into every [`Task`] this build publishes.
pub const TASK_VERSION: u32 = 1;

/// A task as it travels on the TASKS stream to a worker (`task.v1`). Fields added within v1 are
/// optional, so an older worker ignores them; a change an older worker must not ignore bumps `v`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Task {
    /// Wire version of this message.
    pub v: u32,
    /// Sortable, unguessable id (UUIDv7).
    pub id: Uuid,
    /// Tool to call, `<server>.<tool>`.
    pub tool: String,
    /// Arguments passed to the tool; an object, validated against the tool's `inputSchema`.
    pub arguments: Map<String, Value>,
    /// Queue the task waits in.
    pub queue: String,
    /// Maximum run time of one attempt, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// How many times the task may be started before it fails for good.
    pub max_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Free-form data the submitter attaches; Wharf stores and returns it untouched.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    #[serde(serialize_with = "crate::wire_time::serialize")]
    pub submitted_at: DateTime<Utc>,
    /// A delayed task: the time it may start (it reaches its queue then).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::wire_time::serialize_opt"
    )]
    pub run_at: Option<DateTime<Utc>>,
    /// How long to wait between attempts; Wharf's default (1 s doubling to 60 s) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// The task's level in its queue. Absent means normal, so a normal task reads the same to a
    /// worker that predates priorities (such a worker takes normal tasks only).
    #[serde(default, skip_serializing_if = "Priority::is_normal")]
    pub priority: Priority,
    /// The tenant that submitted the task; only that tenant sees it. Absent means `default`
    /// (every task from before tenants, and every task of a platform without them).
    #[serde(default = "default_tenant", skip_serializing_if = "is_default_tenant")]
    pub tenant: String,
    /// The agent it was submitted with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Where its events are POSTed, signed, as they happen (`docs/wiring.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<crate::callbacks::Callback>,
    /// The W3C trace id (32 hex digits) of the submission's trace, which the task's spans
    /// belong to; set by the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

fn default_tenant() -> String {
    crate::auth::DEFAULT_TENANT.to_owned()
}

fn is_default_tenant(t: &str) -> bool {
    t == crate::auth::DEFAULT_TENANT
}

/// A task's level within its queue. Each level is a subject of its own with its own consumer;
/// workers take the higher levels first, but give each lower level a guaranteed share of their
/// slots while it has tasks waiting, so no level starves (the rule: `docs/delivery.md`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    /// Every level, highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    pub fn is_normal(&self) -> bool {
        *self == Priority::Normal
    }

    /// Position in [`Priority::ALL`]: 0 for the highest level.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Priority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown priority {s:?} (high, normal or low)"))
    }
}

/// Exponential backoff between attempts: `initial_ms` before the second attempt, doubling each
/// time up to `max_ms`, each delay drawn between half and all of that ("equal jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RetryPolicy {
    pub initial_ms: u64,
    pub max_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_ms: 1_000,
            max_ms: 60_000,
        }
    }
}

/// Splits `<server>.<tool>` at its first dot (server names have none).
pub fn split_tool(qualified: &str) -> Option<(&str, &str)> {
    let (server, tool) = qualified.split_once('.')?;
    (!server.is_empty() && !tool.is_empty()).then_some((server, tool))
}

/// Where a task is in its life. The last four are terminal: a task reaches exactly one of them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        self.rank() == 2
    }

    /// Position in the life cycle: 0 queued, 1 running, 2 terminal. State only moves up.
    pub fn rank(self) -> i16 {
        match self {
            TaskStatus::Queued => 0,
            TaskStatus::Running => 1,
            _ => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?}"))
    }
}

/// Progress reported by the tool (MCP progress notifications).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Progress {
    pub progress: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Why an attempt or a task failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskError {
    /// Stable machine-readable kind: `tool_error`, `mcp_unavailable`, `mcp_error`, `timeout`,
    /// `bad_message`, `unknown_tool`, `attempts_exhausted`, `not_enqueued` (the task could not be
    /// put on its queue after its submission was recorded), `result_too_large` (the tool's
    /// result would not fit in one NATS message).
    pub code: String,
    pub message: String,
    /// The tool's own result when the tool itself reported the error (MCP `isError`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// On a task's final error: the task was dead-lettered (it failed after using every attempt,
    /// or its message could not be read) and is kept in `GET /api/v1/dlq` for replay.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dead_letter: bool,
}

/// The kinds of [`TaskError`] Wharf writes; `TaskError::code` carries one as text (a newer
/// build may write a kind an older reader does not know, so the wire keeps a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskErrorCode {
    /// The tool returned `isError: true`.
    ToolError,
    /// The MCP server could not be reached, or its connection broke during the call.
    McpUnavailable,
    /// The MCP server refused the call (a JSON-RPC error: unknown tool, bad arguments).
    McpError,
    /// The attempt ran past `timeout_secs`.
    Timeout,
    /// The task message could not be read.
    BadMessage,
    /// The worker serves no such tool.
    UnknownTool,
    /// The task was delivered more times than its attempts without finishing.
    AttemptsExhausted,
    /// The task could not be put on its queue after its submission was recorded.
    NotEnqueued,
    /// The tool's result would not fit in one NATS message.
    ResultTooLarge,
}

impl TaskErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskErrorCode::ToolError => "tool_error",
            TaskErrorCode::McpUnavailable => "mcp_unavailable",
            TaskErrorCode::McpError => "mcp_error",
            TaskErrorCode::Timeout => "timeout",
            TaskErrorCode::BadMessage => "bad_message",
            TaskErrorCode::UnknownTool => "unknown_tool",
            TaskErrorCode::AttemptsExhausted => "attempts_exhausted",
            TaskErrorCode::NotEnqueued => "not_enqueued",
            TaskErrorCode::ResultTooLarge => "result_too_large",
        }
    }
}

impl TaskError {
    /// An error of kind `code`, not dead-lettered, without details.
    pub fn new(code: TaskErrorCode, message: impl Into<String>) -> TaskError {
        TaskError {
            code: code.as_str().to_owned(),
            message: message.into(),
            details: None,
            dead_letter: false,
        }
    }

    /// Whether this error is of kind `code`.
    pub fn is(&self, code: TaskErrorCode) -> bool {
        self.code == code.as_str()
    }
}

/// A task as the API shows it: its spec plus everything its events said so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskView {
    pub id: Uuid,
    pub status: TaskStatus,
    pub tool: String,
    pub queue: String,
    /// The arguments the tool is called with; absent when empty, and in list pages unless
    /// they ask for `view=full`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub arguments: Map<String, Value>,
    /// Attempts started so far.
    pub attempts: u32,
    pub max_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The submitter's labels; absent when empty, and in list pages unless `view=full`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The tool's result (MCP `CallToolResult`) once the task succeeded; absent in list pages
    /// unless `view=full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::wire_time::serialize_opt"
    )]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::wire_time::serialize_opt"
    )]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::wire_time::serialize_opt"
    )]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::wire_time::serialize_opt"
    )]
    pub cancel_requested_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::wire_time::serialize_opt"
    )]
    pub updated_at: Option<DateTime<Utc>>,
    /// A delayed task's start time: it stays `queued` and no worker sees it before then.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::wire_time::serialize_opt"
    )]
    pub run_at: Option<DateTime<Utc>>,
    /// The task's level in its queue.
    #[serde(default)]
    pub priority: Priority,
    /// The tenant the task belongs to. Empty while only events after the submission are known
    /// (such a view is shown to no tenant).
    #[serde(default)]
    pub tenant: String,
    /// The agent it was submitted with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The W3C trace id of its submission: its spans, from the gateway to the MCP server, are
    /// in this trace (docs/observability.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}
