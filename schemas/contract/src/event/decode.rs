//! [`TaskEvent::decode`] without serde's buffering.
//!
//! The derived `Deserialize` of [`TaskEvent`] (a struct with its [`EventKind`] flattened, an
//! enum tagged by its `type` field) reads the whole event into serde's intermediate `Content`
//! tree first, every string and map of it allocated, and then builds the event from that tree:
//! a `submitted` event carries its whole task, a `succeeded` one the tool's result. The recorder
//! decodes every event of every task. Here the body is read twice instead, straight into the
//! final types: once for the fields every event has (with `type`), skipping the rest, then for
//! the fields of that kind, skipping the others. Skipping is a scan, with nothing allocated.
//!
//! The derived implementation stays the reference: the tests decode the same bodies both ways.
//! Two differences, neither in what Wharf writes: fields this build does not know are skipped
//! without being checked (the derived reading refuses one holding, say, a lone surrogate
//! escape or a number out of range, because it buffers it), and `type` must be a string (the
//! derived reading also takes a variant's index).

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::{DecodeError, EVENT_VERSION, EventKind, Start, TaskEvent, is_known, refusal};
use crate::task::{Progress, Task, TaskError};

/// The fields every event has; the kind's own are skipped.
#[derive(Deserialize)]
struct Head {
    v: u64,
    task_id: Uuid,
    at: DateTime<Utc>,
    attempt: u32,
    #[serde(default)]
    started: Option<Box<Start>>,
    #[serde(rename = "type")]
    kind: Kind,
}

/// An event's `type`.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Submitted,
    Started,
    Progress,
    CancelRequested,
    AttemptFailed,
    Succeeded,
    Failed,
    Cancelled,
}

#[derive(Deserialize)]
struct SubmittedFields {
    task: Box<Task>,
}

#[derive(Deserialize)]
struct StartedFields {
    worker: String,
    tool: String,
    queue: String,
}

#[derive(Deserialize)]
struct ReasonFields {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct AttemptFailedFields {
    error: TaskError,
    retry_in_ms: u64,
}

#[derive(Deserialize)]
struct SucceededFields {
    result: Value,
}

#[derive(Deserialize)]
struct FailedFields {
    error: TaskError,
}

/// Decodes an event body, refusing versions this build does not know.
pub(super) fn decode(body: &[u8]) -> Result<TaskEvent, DecodeError> {
    let head: Head = match serde_json::from_slice(body) {
        Ok(head) => head,
        Err(e) => return Err(refusal(body, EVENT_VERSION, e)),
    };
    if !is_known(head.v, EVENT_VERSION) {
        return Err(DecodeError::Version(head.v));
    }
    let kind = match head.kind {
        Kind::Submitted => EventKind::Submitted {
            task: serde_json::from_slice::<SubmittedFields>(body)?.task,
        },
        Kind::Started => {
            let StartedFields {
                worker,
                tool,
                queue,
            } = serde_json::from_slice(body)?;
            EventKind::Started {
                worker,
                tool,
                queue,
            }
        }
        Kind::Progress => EventKind::Progress(serde_json::from_slice::<Progress>(body)?),
        Kind::CancelRequested => EventKind::CancelRequested {
            reason: serde_json::from_slice::<ReasonFields>(body)?.reason,
        },
        Kind::AttemptFailed => {
            let AttemptFailedFields { error, retry_in_ms } = serde_json::from_slice(body)?;
            EventKind::AttemptFailed { error, retry_in_ms }
        }
        Kind::Succeeded => EventKind::Succeeded {
            result: serde_json::from_slice::<SucceededFields>(body)?.result,
        },
        Kind::Failed => EventKind::Failed {
            error: serde_json::from_slice::<FailedFields>(body)?.error,
        },
        Kind::Cancelled => EventKind::Cancelled {
            reason: serde_json::from_slice::<ReasonFields>(body)?.reason,
        },
    };
    Ok(TaskEvent {
        // Within the known range, checked above.
        v: head.v as u32,
        task_id: head.task_id,
        at: head.at,
        attempt: head.attempt,
        started: head.started,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn task() -> Task {
        serde_json::from_value(json!({
            "v": 1, "id": Uuid::now_v7(), "tool": "demo.echo",
            "arguments": {"message": "h\u{0}i \\u0000 \"q\" é", "n": [1, 2.5, {"deep": null}]},
            "queue": "default", "max_attempts": 3, "metadata": {"k": "v"},
            "submitted_at": Utc::now(), "tenant": "acme", "timeout_secs": 30,
            "idempotency_key": "order-1", "priority": "high",
        }))
        .unwrap()
    }

    fn error() -> TaskError {
        serde_json::from_value(
            json!({"code": "tool_error", "message": "boom", "details": {"line": 3}}),
        )
        .unwrap()
    }

    /// One event of every kind, with and without a start reported along.
    fn events() -> Vec<TaskEvent> {
        let id = Uuid::now_v7();
        let start = Start {
            at: Utc::now(),
            worker: "w-1".into(),
            tool: "demo.echo".into(),
            queue: "default".into(),
        };
        let kinds = vec![
            EventKind::Submitted {
                task: Box::new(task()),
            },
            EventKind::Started {
                worker: "w-1".into(),
                tool: "demo.echo".into(),
                queue: "default".into(),
            },
            EventKind::Progress(Progress {
                progress: 3.0,
                total: Some(10.0),
                message: Some("a third".into()),
            }),
            EventKind::Progress(Progress {
                progress: 0.5,
                total: None,
                message: None,
            }),
            EventKind::CancelRequested {
                reason: Some("no longer needed".into()),
            },
            EventKind::CancelRequested { reason: None },
            EventKind::AttemptFailed {
                error: error(),
                retry_in_ms: 2000,
            },
            EventKind::Succeeded {
                result: json!({"content": [{"type": "text", "text": "hi"}], "isError": false}),
            },
            EventKind::Succeeded {
                result: json!(null),
            },
            EventKind::Failed { error: error() },
            EventKind::Cancelled {
                reason: Some("by the user".into()),
            },
            EventKind::Cancelled { reason: None },
        ];
        let mut events = Vec::new();
        for kind in kinds {
            let mut e = TaskEvent::new(id, 2, kind);
            events.push(e.clone());
            e.started = Some(Box::new(start.clone()));
            events.push(e);
        }
        events
    }

    /// The derived implementation's reading of `body`, with the same version rule.
    fn reference(body: &[u8]) -> Result<TaskEvent, String> {
        super::super::decode_versioned::<TaskEvent>(body, EVENT_VERSION).map_err(|e| e.to_string())
    }

    #[test]
    fn every_kind_decodes_as_the_derived_implementation_decodes_it() {
        for event in events() {
            // As written (`type` before the kind's fields), with the keys sorted (`type` after
            // them: serde_json's maps sort), and with fields this build does not know.
            let written = serde_json::to_vec(&event).unwrap();
            let mut value = serde_json::to_value(&event).unwrap();
            let sorted = serde_json::to_vec(&value).unwrap();
            value["added_later"] = json!({"type": "succeeded", "task": 1, "result": [1]});
            let extended = serde_json::to_vec(&value).unwrap();
            for body in [written, sorted, extended] {
                let decoded = decode(&body).unwrap();
                assert_eq!(decoded, event, "{}", String::from_utf8_lossy(&body));
                assert_eq!(Ok(decoded), reference(&body));
            }
        }
    }

    #[test]
    fn what_the_derived_implementation_refuses_is_refused() {
        let id = Uuid::now_v7();
        let at = "2026-11-25T10:00:00Z";
        for body in [
            json!({"v": 1, "task_id": id, "at": at, "attempt": 1, "type": "exploded"}),
            json!({"v": 1, "task_id": id, "at": at, "attempt": 1}),
            json!({"v": 1, "task_id": id, "at": at, "attempt": 1, "type": "started", "worker": "w"}),
            json!({"v": 1, "task_id": id, "at": at, "attempt": 1, "type": "failed"}),
            json!({"v": 1, "task_id": id, "at": at, "attempt": 1, "type": "attempt_failed", "error": {"code": "x", "message": "y"}}),
            json!({"v": 1, "task_id": id, "at": at, "attempt": 1, "type": "progress", "progress": "half"}),
            json!({"v": 1, "task_id": id, "at": at, "attempt": 1, "type": "submitted", "task": {"v": 1}}),
            json!({"v": 1, "task_id": "nope", "at": at, "attempt": 1, "type": "cancelled"}),
            json!({"v": 1, "task_id": id, "at": "yesterday", "attempt": 1, "type": "cancelled"}),
            json!([1, 2]),
        ] {
            let body = serde_json::to_vec(&body).unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(reference(&body).is_err(), "the reference takes {text}");
            assert!(decode(&body).is_err(), "{text}");
        }
        assert!(decode(b"{\"v\": 1, \"task_id\"").is_err());
    }

    #[test]
    fn versions_this_build_does_not_know_are_named() {
        for body in [
            json!({"v": 2, "task_id": Uuid::now_v7()}),
            json!({"v": 2, "task_id": Uuid::now_v7(), "at": "2026-11-25T10:00:00Z", "attempt": 1, "type": "cancelled"}),
            json!({"v": 0, "whatever": true}),
        ] {
            let v = body["v"].as_u64().unwrap();
            let body = serde_json::to_vec(&body).unwrap();
            assert!(
                matches!(decode(&body), Err(DecodeError::Version(n)) if n == v),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}
