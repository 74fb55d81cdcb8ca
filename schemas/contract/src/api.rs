//! Bodies of the HTTP API (`/api/v1`) and the WebSocket protocol (`/ws/v1/tasks`).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::event::{EventKind, TaskEvent};
use crate::task::{TaskError, TaskView};

/// `POST /api/v1/tasks` body, and the `task` of a WebSocket `task:submit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("not" = {
    "properties": {"run_at": {"type": "string"}, "delay_secs": {"type": "integer"}},
    "required": ["run_at", "delay_secs"]
}))]
pub struct SubmitTask {
    /// Tool to call, `<server>.<tool>` (see `GET /api/v1/tools`).
    #[schemars(example = &"demo.echo")]
    pub tool: String,
    /// Arguments for the tool; must satisfy the tool's `inputSchema`.
    #[serde(default)]
    #[schemars(example = serde_json::json!({"message": "hello"}))]
    pub arguments: Map<String, Value>,
    /// Queue to wait in; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::rules::NAME_PATTERN))]
    pub queue: Option<String>,
    /// Maximum run time of one attempt, in seconds (1 to 86,400).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::optional"
    )]
    #[schemars(range(min = *crate::rules::TIMEOUT_SECS.start(), max = *crate::rules::TIMEOUT_SECS.end()))]
    pub timeout_secs: Option<u64>,
    /// How many times the task may be started (1 to 100); the gateway's default (3) when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::optional"
    )]
    #[schemars(range(min = *crate::rules::MAX_ATTEMPTS.start(), max = *crate::rules::MAX_ATTEMPTS.end()))]
    pub max_attempts: Option<u32>,
    /// A key of the caller's choosing (1 to 255 characters) that identifies this submission.
    /// Keys starting with `replay:` are the gateway's own (dead-letter replays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = *crate::rules::KEY_CHARS.start(), max = *crate::rules::KEY_CHARS.end()))]
    #[schemars(extend("not" = {"type": "string", "pattern": crate::rules::RESERVED_KEY_PATTERN}))]
    pub idempotency_key: Option<String>,
    /// A live session of the tenant (see `POST /api/v1/sessions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = *crate::rules::KEY_CHARS.start(), max = *crate::rules::KEY_CHARS.end()))]
    pub session_id: Option<String>,
    /// Free-form data stored with the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// Start no earlier than this time (RFC 3339; at most a year ahead). Not with `delay_secs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// Start no earlier than this many seconds from now (1 to 31,536,000). Not with `run_at`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::optional"
    )]
    #[schemars(range(min = *crate::rules::DELAY_SECS.start(), max = *crate::rules::DELAY_SECS.end()))]
    pub delay_secs: Option<u64>,
    /// `high`, `normal` or `low`; the queue's default (else `normal`) when absent. Workers take
    /// higher levels first; each lower level keeps a share of the slots, so none starves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<crate::task::Priority>,
    /// An agent of the tenant: the task may use only its tools, and gets its defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::rules::NAME_PATTERN))]
    pub agent: Option<String>,
    /// POST the task's events to this URL, signed with the tenant's callback secrets; the
    /// tenant's default callback when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<crate::callbacks::Callback>,
}

impl SubmitTask {
    /// A submission of `tool` with no arguments and every setting left to its default.
    pub fn new(tool: impl Into<String>) -> SubmitTask {
        SubmitTask {
            tool: tool.into(),
            arguments: Map::new(),
            queue: None,
            timeout_secs: None,
            max_attempts: None,
            idempotency_key: None,
            session_id: None,
            metadata: None,
            run_at: None,
            delay_secs: None,
            priority: None,
            agent: None,
            callback: None,
        }
    }

    /// The same, with the argument `name` set to `value`.
    pub fn argument(mut self, name: &str, value: impl Into<Value>) -> SubmitTask {
        self.arguments.insert(name.to_owned(), value.into());
        self
    }
}

/// `POST /api/v1/tasks/batch`: up to 1,000 tasks, each checked before any is published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBatch {
    #[schemars(length(min = *crate::rules::BATCH_TASKS.start(), max = *crate::rules::BATCH_TASKS.end()))]
    pub tasks: Vec<SubmitTask>,
}

/// The body of the NATS service's `get` and `cancel` requests: the task they concern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskRef {
    pub id: Uuid,
}

/// The answer to a batch: the tasks in the order they were submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskBatch {
    pub tasks: Vec<TaskView>,
}

/// `GET /api/v1/tasks` answer: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskList {
    pub tasks: Vec<TaskView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/tools` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolList {
    pub tools: Vec<crate::tool::ToolInfo>,
}

/// A message a WebSocket client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum WsClientMessage {
    /// Submit a task; the answer is `task:accepted` (echoing `ref`) and the task's events follow.
    #[serde(rename = "task:submit")]
    Submit {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        task: Box<SubmitTask>,
    },
    /// Receive a task's history, then its live events until it ends.
    #[serde(rename = "task:subscribe")]
    Subscribe { task_id: Uuid },
    /// Ask for a task to be cancelled.
    #[serde(rename = "task:cancel")]
    Cancel { task_id: Uuid },
    /// Receive `system:status` now and then every few seconds, until `system:unsubscribe`.
    #[serde(rename = "system:subscribe")]
    SystemSubscribe,
    #[serde(rename = "system:unsubscribe")]
    SystemUnsubscribe,
}

/// A message the server sends on a WebSocket (and, as SSE `event:`/`data:`, on
/// `GET /api/v1/tasks/{id}/events`). `seq` is the event's position in the event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type")]
pub enum WsServerMessage {
    #[serde(rename = "task:accepted")]
    Accepted {
        task_id: Uuid,
        /// When it happened (the event's time); absent on an answer that is not an event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<chrono::DateTime<chrono::Utc>>,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<Box<TaskView>>,
    },
    #[serde(rename = "task:started")]
    Started {
        task_id: Uuid,
        /// When it happened (the event's time); absent on an answer that is not an event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<chrono::DateTime<chrono::Utc>>,
        seq: u64,
        attempt: u32,
        worker: String,
    },
    #[serde(rename = "task:progress")]
    Progress {
        task_id: Uuid,
        /// When it happened (the event's time); absent on an answer that is not an event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<chrono::DateTime<chrono::Utc>>,
        seq: u64,
        attempt: u32,
        progress: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    #[serde(rename = "task:cancel_requested")]
    CancelRequested {
        task_id: Uuid,
        /// When it happened (the event's time); absent on an answer that is not an event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<chrono::DateTime<chrono::Utc>>,
        seq: u64,
    },
    /// An attempt failed; the task will run again after `retry_in_ms`.
    #[serde(rename = "task:retrying")]
    Retrying {
        task_id: Uuid,
        /// When it happened (the event's time); absent on an answer that is not an event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<chrono::DateTime<chrono::Utc>>,
        seq: u64,
        attempt: u32,
        error: TaskError,
        retry_in_ms: u64,
    },
    #[serde(rename = "task:complete")]
    Complete {
        task_id: Uuid,
        /// When it happened (the event's time); absent on an answer that is not an event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<chrono::DateTime<chrono::Utc>>,
        seq: u64,
        attempt: u32,
        result: Value,
    },
    #[serde(rename = "task:error")]
    Error {
        task_id: Uuid,
        /// When it happened (the event's time); absent on an answer that is not an event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<chrono::DateTime<chrono::Utc>>,
        seq: u64,
        attempt: u32,
        error: TaskError,
    },
    #[serde(rename = "task:cancelled")]
    Cancelled {
        task_id: Uuid,
        /// When it happened (the event's time); absent on an answer that is not an event.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<chrono::DateTime<chrono::Utc>>,
        seq: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The platform's state, to `system:subscribe`rs: every few seconds.
    #[serde(rename = "system:status")]
    SystemStatus(Box<crate::ops::SystemStatus>),
    /// A client message was refused; the socket stays open.
    #[serde(rename = "error")]
    ClientError {
        code: String,
        message: String,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_id: Option<Uuid>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        problem: Option<Box<crate::error::Problem>>,
    },
}

impl WsServerMessage {
    /// The client-facing message for an event stored at stream sequence `seq`.
    pub fn from_event(seq: u64, event: TaskEvent) -> WsServerMessage {
        let task_id = event.task_id;
        let attempt = event.attempt;
        let at = Some(event.at);
        match event.kind {
            EventKind::Submitted { .. } => WsServerMessage::Accepted {
                task_id,
                at,
                reference: None,
                seq: Some(seq),
                task: None,
            },
            EventKind::Started { worker, .. } => WsServerMessage::Started {
                task_id,
                at,
                seq,
                attempt,
                worker,
            },
            EventKind::Progress(p) => WsServerMessage::Progress {
                task_id,
                at,
                seq,
                attempt,
                progress: p.progress,
                total: p.total,
                message: p.message,
            },
            EventKind::CancelRequested { .. } => {
                WsServerMessage::CancelRequested { task_id, at, seq }
            }
            EventKind::AttemptFailed { error, retry_in_ms } => WsServerMessage::Retrying {
                task_id,
                at,
                seq,
                attempt,
                error,
                retry_in_ms,
            },
            EventKind::Succeeded { result } => WsServerMessage::Complete {
                task_id,
                at,
                seq,
                attempt,
                result,
            },
            EventKind::Failed { error } => WsServerMessage::Error {
                task_id,
                at,
                seq,
                attempt,
                error,
            },
            EventKind::Cancelled { reason } => WsServerMessage::Cancelled {
                task_id,
                at,
                seq,
                reason,
            },
        }
    }

    /// The `type` tag, also used as the SSE `event:` name.
    pub fn type_name(&self) -> &'static str {
        match self {
            WsServerMessage::Accepted { .. } => "task:accepted",
            WsServerMessage::Started { .. } => "task:started",
            WsServerMessage::Progress { .. } => "task:progress",
            WsServerMessage::CancelRequested { .. } => "task:cancel_requested",
            WsServerMessage::Retrying { .. } => "task:retrying",
            WsServerMessage::Complete { .. } => "task:complete",
            WsServerMessage::Error { .. } => "task:error",
            WsServerMessage::Cancelled { .. } => "task:cancelled",
            WsServerMessage::SystemStatus(_) => "system:status",
            WsServerMessage::ClientError { .. } => "error",
        }
    }

    /// True for the message that ends a task's stream.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            WsServerMessage::Complete { .. }
                | WsServerMessage::Error { .. }
                | WsServerMessage::Cancelled { .. }
        )
    }
}

/// A dead-lettered task, as kept in the DLQ stream and shown by `GET /api/v1/dlq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetter {
    /// Wire version of this message.
    pub v: u32,
    pub task_id: Uuid,
    /// The queue the task was taken from.
    pub queue: String,
    /// The task as submitted; absent when its message could not be read (see `payload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<crate::Task>,
    /// The unreadable message's body, as text, when `task` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The error that ended the task.
    pub error: crate::TaskError,
    /// Attempts the task used.
    pub attempts: u32,
    /// The worker that dead-lettered it.
    pub worker: String,
    pub dead_at: DateTime<Utc>,
    /// Position in the DLQ stream (set when read back; `cursor` for the next page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// Wire version of [`DeadLetter`].
pub const DEAD_LETTER_VERSION: u32 = 1;

/// `GET /api/v1/dlq` answer: oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetter>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
