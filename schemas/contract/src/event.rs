//! Events on the EVENTS stream: everything that happens to a task, in order, per task subject.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::task::{Progress, Task, TaskError, TaskStatus};

mod decode;

/// Version written into every [`TaskEvent`] this build publishes.
pub const EVENT_VERSION: u32 = 1;

/// One thing that happened to a task (`task-event.v1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TaskEvent {
    /// Wire version of this message.
    pub v: u32,
    pub task_id: Uuid,
    #[serde(serialize_with = "crate::wire_time::serialize")]
    pub at: DateTime<Utc>,
    /// The attempt this event belongs to (0 before the first start).
    pub attempt: u32,
    /// The attempt's start, when this event reports it too. A worker stores a `started` event
    /// of its own only for an attempt still running after `worker.started_event_after_ms`;
    /// a shorter attempt reports its start with the event that ends it (a terminal or an
    /// `attempt_failed` event). Readers see the two apart: [`TaskEvent::unfold`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Box<Start>>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// An attempt's start, as its `started` event would say it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Start {
    #[serde(serialize_with = "crate::wire_time::serialize")]
    pub at: DateTime<Utc>,
    pub worker: String,
    pub tool: String,
    pub queue: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The gateway accepted the task; carries the whole task as submitted.
    ///
    /// Boxed: an event is as large as its largest kind, and every event a worker builds for a
    /// running task would otherwise carry room for a whole task.
    Submitted { task: Box<Task> },
    /// A worker started an attempt.
    Started {
        worker: String,
        tool: String,
        queue: String,
    },
    /// The tool reported progress.
    Progress(Progress),
    /// Somebody asked for the task to be cancelled.
    CancelRequested {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// An attempt failed in a way worth retrying; the task waits `retry_in_ms` and runs again.
    AttemptFailed { error: TaskError, retry_in_ms: u64 },
    /// Terminal: the tool returned a result.
    Succeeded { result: Value },
    /// Terminal: the task failed for good.
    Failed { error: TaskError },
    /// Terminal: the task was cancelled before or while it ran.
    Cancelled {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl TaskEvent {
    pub fn new(task_id: Uuid, attempt: u32, kind: EventKind) -> TaskEvent {
        TaskEvent {
            v: EVENT_VERSION,
            task_id,
            at: Utc::now(),
            attempt,
            started: None,
            kind,
        }
    }

    /// The `started` event this event reports along with itself (stored at the same stream
    /// sequence), and the event without it: what a reader shows as two steps of the history.
    pub fn unfold(mut self) -> (Option<TaskEvent>, TaskEvent) {
        let started = self.started.take().map(|s| {
            let Start {
                at,
                worker,
                tool,
                queue,
            } = *s;
            TaskEvent {
                v: self.v,
                task_id: self.task_id,
                at,
                attempt: self.attempt,
                started: None,
                kind: EventKind::Started {
                    worker,
                    tool,
                    queue,
                },
            }
        });
        (started, self)
    }

    /// `events` (each with its stream sequence) with every start reported along with another
    /// event unfolded into a `started` event of its own, just before it at the same sequence.
    pub fn unfold_all<E>(events: impl IntoIterator<Item = (u64, E)>) -> Vec<(u64, E)>
    where
        E: Unfold,
    {
        let mut out = Vec::new();
        for (seq, e) in events {
            let (started, e) = e.unfold();
            out.extend(started.map(|s| (seq, s)));
            out.push((seq, e));
        }
        out
    }

    /// The terminal status this event sets, if it is terminal.
    pub fn terminal_status(&self) -> Option<TaskStatus> {
        match self.kind {
            EventKind::Succeeded { .. } => Some(TaskStatus::Succeeded),
            EventKind::Failed { .. } => Some(TaskStatus::Failed),
            EventKind::Cancelled { .. } => Some(TaskStatus::Cancelled),
            _ => None,
        }
    }

    /// A short stable name of the kind, used in message ids and metrics.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            EventKind::Submitted { .. } => "submitted",
            EventKind::Started { .. } => "started",
            EventKind::Progress(_) => "progress",
            EventKind::CancelRequested { .. } => "cancel_requested",
            EventKind::AttemptFailed { .. } => "attempt_failed",
            EventKind::Succeeded { .. } => "succeeded",
            EventKind::Failed { .. } => "failed",
            EventKind::Cancelled { .. } => "cancelled",
        }
    }

    /// Decodes an event body, refusing versions this build does not know. Reads as the derived
    /// `Deserialize` does, without its intermediate tree (see `event/decode.rs`).
    pub fn decode(body: &[u8]) -> Result<TaskEvent, DecodeError> {
        decode::decode(body)
    }
}

/// What [`TaskEvent::unfold_all`] unfolds: an event, or the result of decoding one.
pub trait Unfold: Sized {
    fn unfold(self) -> (Option<Self>, Self);
}

impl Unfold for TaskEvent {
    fn unfold(self) -> (Option<TaskEvent>, TaskEvent) {
        TaskEvent::unfold(self)
    }
}

impl<E> Unfold for Result<TaskEvent, E> {
    fn unfold(self) -> (Option<Self>, Self) {
        match self {
            Ok(e) => {
                let (started, e) = e.unfold();
                (started.map(Ok), Ok(e))
            }
            Err(e) => (None, Err(e)),
        }
    }
}

/// A task's `submitted` event, borrowing the task: it serialises exactly as the [`TaskEvent`] of
/// kind [`EventKind::Submitted`] that would carry the task (attempt 0, at its `submitted_at`),
/// without copying the task into one. The gateway publishes it from the task it checked.
#[derive(Debug, Serialize)]
pub struct Submitted<'a> {
    v: u32,
    task_id: Uuid,
    #[serde(serialize_with = "crate::wire_time::serialize")]
    at: DateTime<Utc>,
    attempt: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    task: &'a Task,
}

impl<'a> Submitted<'a> {
    pub fn of(task: &'a Task) -> Submitted<'a> {
        Submitted {
            v: EVENT_VERSION,
            task_id: task.id,
            at: task.submitted_at,
            attempt: 0,
            kind: "submitted",
            task,
        }
    }
}

impl Task {
    /// Decodes a task body, refusing versions this build does not know. One pass: the version
    /// is checked on the task read, and looked up on its own only when the body does not read
    /// as a task (a newer version may be shaped otherwise).
    pub fn decode(body: &[u8]) -> Result<Task, DecodeError> {
        let known = crate::task::TASK_VERSION;
        match serde_json::from_slice::<Task>(body) {
            Ok(task) if !is_known(task.v.into(), known) => Err(DecodeError::Version(task.v.into())),
            Ok(task) => Ok(task),
            Err(e) => Err(refusal(body, known, e)),
        }
    }
}

/// Whether this build reads version `v` of a message whose newest version is `known`.
fn is_known(v: u64, known: u32) -> bool {
    v != 0 && v <= u64::from(known)
}

/// Why `body` did not read (`e`): its version, when it names one this build does not know (a
/// newer version may be shaped otherwise), else `e` itself.
fn refusal(body: &[u8], known: u32, e: serde_json::Error) -> DecodeError {
    match decode_versioned::<serde::de::IgnoredAny>(body, known) {
        Err(version @ DecodeError::Version(_)) => version,
        _ => DecodeError::Json(e),
    }
}

/// Why a message body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unsupported message version {0}")]
    Version(u64),
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
}

fn decode_versioned<T: serde::de::DeserializeOwned>(
    body: &[u8],
    known: u32,
) -> Result<T, DecodeError> {
    #[derive(Deserialize)]
    struct Version {
        v: u64,
    }
    let Version { v } = serde_json::from_slice(body)?;
    if !is_known(v, known) {
        return Err(DecodeError::Version(v));
    }
    Ok(serde_json::from_slice(body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_borrowed_submitted_event_is_the_submitted_task_event() {
        let task: Task = serde_json::from_value(serde_json::json!({
            "v": 1, "id": Uuid::now_v7(), "tool": "demo.echo",
            "arguments": {"message": "hi"}, "queue": "default", "max_attempts": 3,
            "metadata": {"k": "v"}, "submitted_at": Utc::now(), "tenant": "acme",
        }))
        .unwrap();
        let owned = TaskEvent {
            v: EVENT_VERSION,
            task_id: task.id,
            at: task.submitted_at,
            attempt: 0,
            started: None,
            kind: EventKind::Submitted {
                task: Box::new(task.clone()),
            },
        };
        let borrowed = serde_json::to_vec(&Submitted::of(&task)).unwrap();
        assert_eq!(TaskEvent::decode(&borrowed).unwrap(), owned);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&borrowed).unwrap(),
            serde_json::to_value(&owned).unwrap()
        );
    }

    /// A v1 event as an older build wrote it must keep decoding.
    #[test]
    fn v1_progress_event_decodes() {
        let body = br#"{"v":1,"task_id":"01937a9e-7c4e-7b2a-9a0e-4d5f6a7b8c9d","at":"2026-11-25T10:00:00Z","attempt":1,"type":"progress","progress":3.0,"total":10.0}"#;
        let ev = TaskEvent::decode(body).unwrap();
        assert_eq!(ev.kind_name(), "progress");
        assert_eq!(
            ev.kind,
            EventKind::Progress(Progress {
                progress: 3.0,
                total: Some(10.0),
                message: None
            })
        );
    }

    #[test]
    fn unknown_task_versions_are_refused_whatever_their_shape() {
        let task = serde_json::json!({
            "v": 2, "id": Uuid::now_v7(), "tool": "demo.echo", "arguments": {},
            "queue": "default", "max_attempts": 3, "submitted_at": Utc::now(),
        });
        let body = serde_json::to_vec(&task).unwrap();
        assert!(matches!(Task::decode(&body), Err(DecodeError::Version(2))));
        let body = br#"{"v":2,"work":"shaped otherwise"}"#;
        assert!(matches!(Task::decode(body), Err(DecodeError::Version(2))));
        let body = br#"{"v":0,"id":"x"}"#;
        assert!(matches!(Task::decode(body), Err(DecodeError::Version(0))));
        let body = br#"{"v":1,"id":"not a uuid"}"#;
        assert!(matches!(Task::decode(body), Err(DecodeError::Json(_))));
        let mut v1 = task;
        v1["v"] = 1.into();
        let decoded = Task::decode(&serde_json::to_vec(&v1).unwrap()).unwrap();
        assert_eq!(serde_json::to_value(&decoded).unwrap()["tool"], "demo.echo");
    }

    #[test]
    fn unknown_versions_are_refused() {
        let body = br#"{"v":2,"task_id":"01937a9e-7c4e-7b2a-9a0e-4d5f6a7b8c9d"}"#;
        assert!(matches!(
            TaskEvent::decode(body),
            Err(DecodeError::Version(2))
        ));
    }
}
