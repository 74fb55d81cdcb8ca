//! A task as submitted (the message on the TASKS stream) and as seen (the view folded from events).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::event::{EventKind, TaskEvent};

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
    pub submitted_at: DateTime<Utc>,
    /// A delayed task: the time it may start (it reaches its queue then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// A task as the API shows it: its spec plus everything its events said so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskView {
    pub id: Uuid,
    pub status: TaskStatus,
    pub tool: String,
    pub queue: String,
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
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The tool's result (MCP `CallToolResult`) once the task succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// A delayed task's start time: it stays `queued` and no worker sees it before then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
}

/// A [`TaskView`] plus the event sequence numbers that make folding order-independent.
///
/// Events are applied in any order, any number of times, and two partial states merge into the
/// same result as folding all their events: status only moves up (queued, running, terminal), the
/// terminal event with the lowest stream sequence wins, progress keeps the highest sequence, spec
/// fields keep the first value seen. The recorder's SQL upsert mirrors [`TaskState::merge`].
#[derive(Debug, Clone, PartialEq)]
pub struct TaskState {
    pub view: TaskView,
    /// Stream sequence of the progress shown (0: none).
    pub progress_seq: u64,
    /// Stream sequence of the terminal event shown (0: none).
    pub terminal_seq: u64,
    /// Highest stream sequence applied.
    pub last_seq: u64,
}

impl TaskState {
    /// A state that has seen no event yet.
    pub fn empty(id: Uuid) -> TaskState {
        TaskState {
            view: TaskView {
                id,
                status: TaskStatus::Queued,
                tool: String::new(),
                queue: String::new(),
                arguments: Map::new(),
                attempts: 0,
                max_attempts: 0,
                timeout_secs: None,
                idempotency_key: None,
                session_id: None,
                metadata: Map::new(),
                progress: None,
                result: None,
                error: None,
                created_at: None,
                started_at: None,
                finished_at: None,
                cancel_requested_at: None,
                updated_at: None,
                run_at: None,
                priority: Priority::Normal,
                tenant: String::new(),
                agent: None,
            },
            progress_seq: 0,
            terminal_seq: 0,
            last_seq: 0,
        }
    }

    /// The state `events` (each with its stream sequence) describe together.
    pub fn fold<'a>(id: Uuid, events: impl IntoIterator<Item = &'a (u64, TaskEvent)>) -> TaskState {
        let mut s = TaskState::empty(id);
        for (seq, e) in events {
            s.apply(*seq, e);
        }
        s
    }

    /// The state one event (stored at stream sequence `seq`) describes on its own.
    pub fn of_event(seq: u64, event: &TaskEvent) -> TaskState {
        let mut s = TaskState::empty(event.task_id);
        let v = &mut s.view;
        v.updated_at = Some(event.at);
        s.last_seq = seq;
        match &event.kind {
            EventKind::Submitted { task } => {
                v.tool.clone_from(&task.tool);
                v.queue.clone_from(&task.queue);
                v.arguments.clone_from(&task.arguments);
                v.max_attempts = task.max_attempts;
                v.timeout_secs = task.timeout_secs;
                v.idempotency_key.clone_from(&task.idempotency_key);
                v.session_id.clone_from(&task.session_id);
                v.metadata.clone_from(&task.metadata);
                v.created_at = Some(task.submitted_at);
                v.run_at = task.run_at;
                v.priority = task.priority;
                v.tenant.clone_from(&task.tenant);
                v.agent.clone_from(&task.agent);
            }
            EventKind::Started { tool, queue, .. } => {
                v.status = TaskStatus::Running;
                v.tool.clone_from(tool);
                v.queue.clone_from(queue);
                v.attempts = event.attempt;
                v.started_at = Some(event.at);
            }
            EventKind::Progress(p) => {
                v.status = TaskStatus::Running;
                v.attempts = event.attempt;
                v.progress = Some(p.clone());
                s.progress_seq = seq;
            }
            EventKind::CancelRequested { .. } => {
                v.cancel_requested_at = Some(event.at);
            }
            EventKind::AttemptFailed { .. } => {
                v.status = TaskStatus::Running;
                v.attempts = event.attempt;
            }
            EventKind::Succeeded { result } => {
                v.status = TaskStatus::Succeeded;
                v.result = Some(result.clone());
                v.finished_at = Some(event.at);
                v.attempts = event.attempt;
                s.terminal_seq = seq;
            }
            EventKind::Failed { error } => {
                v.status = TaskStatus::Failed;
                v.error = Some(error.clone());
                v.finished_at = Some(event.at);
                v.attempts = event.attempt;
                s.terminal_seq = seq;
            }
            EventKind::Cancelled { .. } => {
                v.status = TaskStatus::Cancelled;
                v.finished_at = Some(event.at);
                v.attempts = event.attempt;
                s.terminal_seq = seq;
            }
        }
        s
    }

    /// Applies one event stored at stream sequence `seq`.
    pub fn apply(&mut self, seq: u64, event: &TaskEvent) {
        self.merge(TaskState::of_event(seq, event));
    }

    /// Merges another partial state of the same task into this one (commutative, idempotent).
    pub fn merge(&mut self, o: TaskState) {
        let (a, b) = (&mut self.view, o.view);
        if a.tool.is_empty() {
            a.tool = b.tool;
        }
        if a.queue.is_empty() {
            a.queue = b.queue;
        }
        // The spec fields come from the `submitted` event alone; `created_at` marks having it.
        if a.created_at.is_none() && b.created_at.is_some() {
            a.arguments = b.arguments;
            a.max_attempts = b.max_attempts;
            a.timeout_secs = b.timeout_secs;
            a.idempotency_key = b.idempotency_key;
            a.session_id = b.session_id;
            a.metadata = b.metadata;
            a.created_at = b.created_at;
            a.run_at = b.run_at;
            a.priority = b.priority;
            a.tenant = b.tenant;
            a.agent = b.agent;
        }
        a.cancel_requested_at = min_opt(a.cancel_requested_at, b.cancel_requested_at);
        a.started_at = min_opt(a.started_at, b.started_at);
        a.updated_at = a.updated_at.max(b.updated_at);
        a.attempts = a.attempts.max(b.attempts);
        if o.progress_seq > self.progress_seq {
            a.progress = b.progress;
            self.progress_seq = o.progress_seq;
        }
        let other_terminal_wins =
            o.terminal_seq != 0 && (self.terminal_seq == 0 || o.terminal_seq < self.terminal_seq);
        if other_terminal_wins {
            a.status = b.status;
            a.result = b.result;
            a.error = b.error;
            a.finished_at = b.finished_at;
            self.terminal_seq = o.terminal_seq;
        } else if self.terminal_seq == 0 && b.status.rank() > a.status.rank() {
            a.status = b.status;
        }
        self.last_seq = self.last_seq.max(o.last_seq);
    }
}

fn min_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn events(id: Uuid) -> Vec<(u64, TaskEvent)> {
        let t0 = Utc::now();
        let task = Task {
            v: TASK_VERSION,
            id,
            tool: "demo.sleep".into(),
            arguments: serde_json::json!({"seconds": 1})
                .as_object()
                .unwrap()
                .clone(),
            queue: "default".into(),
            timeout_secs: None,
            max_attempts: 3,
            idempotency_key: None,
            session_id: Some("s1".into()),
            metadata: Map::new(),
            submitted_at: t0,
            run_at: None,
            retry: None,
            priority: Priority::Low,
            tenant: "acme".into(),
            agent: Some("helper".into()),
        };
        let ev = |attempt, kind| TaskEvent::new(id, attempt, kind);
        vec![
            (
                1,
                ev(
                    0,
                    EventKind::Submitted {
                        task: Box::new(task),
                    },
                ),
            ),
            (
                5,
                ev(
                    1,
                    EventKind::Started {
                        worker: "w1".into(),
                        tool: "demo.sleep".into(),
                        queue: "default".into(),
                    },
                ),
            ),
            (
                9,
                ev(
                    1,
                    EventKind::Progress(Progress {
                        progress: 1.0,
                        total: Some(2.0),
                        message: None,
                    }),
                ),
            ),
            (
                12,
                ev(
                    1,
                    EventKind::Progress(Progress {
                        progress: 2.0,
                        total: Some(2.0),
                        message: None,
                    }),
                ),
            ),
            (
                13,
                ev(
                    1,
                    EventKind::Succeeded {
                        result: serde_json::json!({"ok": true}),
                    },
                ),
            ),
            (
                20,
                ev(
                    2,
                    EventKind::Failed {
                        error: TaskError {
                            code: "timeout".into(),
                            message: "late duplicate".into(),
                            details: None,
                            dead_letter: false,
                        },
                    },
                ),
            ),
        ]
    }

    #[test]
    fn folding_is_independent_of_order_and_repetition() {
        let id = Uuid::now_v7();
        let evs = events(id);
        let mut forward = TaskState::empty(id);
        for (seq, e) in &evs {
            forward.apply(*seq, e);
        }
        assert_eq!(forward.view.status, TaskStatus::Succeeded);
        assert_eq!(forward.view.progress.as_ref().unwrap().progress, 2.0);
        assert_eq!(forward.view.attempts, 2);
        assert_eq!(forward.view.tool, "demo.sleep");
        assert_eq!(forward.view.session_id.as_deref(), Some("s1"));

        let mut backward = TaskState::empty(id);
        for (seq, e) in evs.iter().rev().chain(evs.iter()) {
            backward.apply(*seq, e);
        }
        // Merging two halves folded apart gives the same state too.
        let (left, right) = evs.split_at(3);
        let mut l = TaskState::empty(id);
        left.iter().for_each(|(s, e)| l.apply(*s, e));
        let mut r = TaskState::empty(id);
        right.iter().for_each(|(s, e)| r.apply(*s, e));
        r.merge(l);
        assert_eq!(backward, forward);
        assert_eq!(r, forward);
    }
}
