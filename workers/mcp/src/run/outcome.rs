//! What an attempt comes to: the call's result turned into the task's next step (a final
//! event, a retry after a delay, or a hand-back), and the delay before a retry.

use std::time::Duration;

use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::Value;
use wharf_contract::{EventKind, RetryPolicy, Task, TaskError, TaskErrorCode};

use crate::mcp::CallError;

/// How an attempt ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The task ends with this event.
    Terminal(EventKind),
    /// The attempt failed but the task has attempts left: retry after the delay.
    Retry(TaskError, Duration),
    /// The worker is going away: give the task back at once for another worker.
    HandBack,
}

/// A final failure of kind `code`.
pub(super) fn failure(code: TaskErrorCode, message: impl Into<String>) -> EventKind {
    EventKind::Failed {
        error: TaskError::new(code, message),
    }
}

/// The outcome of an attempt that failed for good with `code`.
pub(super) fn failed(code: TaskErrorCode, message: impl Into<String>) -> Outcome {
    Outcome::Terminal(failure(code, message))
}

/// The outcome of a task delivered more times than its attempts without finishing (its
/// workers kept dying): failed for good, and kept as a dead letter.
pub(super) fn exhausted(attempt: u32) -> Outcome {
    Outcome::Terminal(EventKind::Failed {
        error: TaskError {
            dead_letter: true,
            ..TaskError::new(
                TaskErrorCode::AttemptsExhausted,
                format!(
                    "the task was started {} times without finishing",
                    attempt - 1
                ),
            )
        },
    })
}

/// Turns a call's result into the task's next step: a final event, or a retry when the failure is
/// worth retrying and attempts are left.
pub(super) fn classify(
    result: Result<CallToolResult, CallError>,
    task: &Task,
    attempt: u32,
    retry_tool_errors: bool,
) -> Outcome {
    let retry_or_fail = |code: TaskErrorCode, message: String| {
        let error = TaskError::new(code, message);
        if attempt < task.max_attempts {
            Outcome::Retry(error, retry_delay(attempt, task.retry.unwrap_or_default()))
        } else {
            // Every attempt failed in a way worth retrying: keep the task for a replay.
            Outcome::Terminal(EventKind::Failed {
                error: TaskError {
                    dead_letter: true,
                    ..error
                },
            })
        }
    };
    match result {
        Ok(result) if result.is_error != Some(true) => Outcome::Terminal(EventKind::Succeeded {
            result: serde_json::to_value(&result).unwrap_or(Value::Null),
        }),
        Ok(result) if retry_tool_errors => {
            retry_or_fail(TaskErrorCode::ToolError, error_text(&result))
        }
        Ok(result) => Outcome::Terminal(EventKind::Failed {
            error: TaskError {
                details: serde_json::to_value(&result).ok(),
                ..TaskError::new(TaskErrorCode::ToolError, error_text(&result))
            },
        }),
        Err(CallError::Cancelled) => Outcome::Terminal(EventKind::Cancelled {
            reason: Some("cancelled while running".into()),
        }),
        Err(CallError::Refused { message, .. }) => failed(TaskErrorCode::McpError, message),
        Err(e @ CallError::TimedOut(_)) => retry_or_fail(TaskErrorCode::Timeout, e.to_string()),
        Err(e @ CallError::Unavailable { .. }) => {
            retry_or_fail(TaskErrorCode::McpUnavailable, e.to_string())
        }
    }
}

/// How long to wait before the attempt after `attempt`: exponential backoff (by default 1 s
/// doubling, capped at 60 s) with "equal jitter" (half of it fixed, half random) so tasks that
/// failed together, say when a server died, do not all come back in the same instant.
pub(super) fn retry_delay(attempt: u32, policy: RetryPolicy) -> Duration {
    let doublings = (attempt.max(1) - 1).min(40);
    let base = Duration::from_millis(
        policy
            .initial_ms
            .saturating_mul(1u64 << doublings)
            .min(policy.max_ms.max(1)),
    );
    base / 2 + base.mul_f64(rand::random::<f64>() / 2.0)
}

/// What a tool error says: its text content joined by newlines, or a stock phrase.
fn error_text(result: &CallToolResult) -> String {
    let text = result
        .content
        .iter()
        .filter_map(|c| match c {
            ContentBlock::Text(t) => Some(t.text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n");
    if text.is_empty() {
        "the tool reported an error".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::ContentBlock as Content;

    fn task(max_attempts: u32) -> Task {
        serde_json::from_value(serde_json::json!({
            "v": 1, "id": uuid::Uuid::now_v7(), "tool": "demo.echo", "arguments": {},
            "queue": "default", "max_attempts": max_attempts, "submitted_at": chrono::Utc::now(),
        }))
        .unwrap()
    }

    fn code(outcome: &Outcome) -> (&'static str, Option<&str>, bool) {
        match outcome {
            Outcome::Terminal(EventKind::Succeeded { .. }) => ("succeeded", None, false),
            Outcome::Terminal(EventKind::Failed { error }) => {
                ("failed", Some(error.code.as_str()), error.dead_letter)
            }
            Outcome::Terminal(EventKind::Cancelled { .. }) => ("cancelled", None, false),
            Outcome::Terminal(_) => ("other", None, false),
            Outcome::Retry(error, _) => ("retry", Some(error.code.as_str()), error.dead_letter),
            Outcome::HandBack => ("hand back", None, false),
        }
    }

    #[test]
    fn each_kind_of_result_becomes_its_outcome() {
        let ok = CallToolResult::success(vec![Content::text("done")]);
        let tool_error = CallToolResult::error(vec![Content::text("no such file")]);
        let unavailable = || CallError::Unavailable {
            server: "demo".into(),
            message: "gone".into(),
        };
        let t = task(3);
        let cases: Vec<(Result<CallToolResult, CallError>, u32, bool, _)> = vec![
            (Ok(ok.clone()), 1, false, ("succeeded", None, false)),
            // A tool's own error is final, unless its server is set to retry them.
            (
                Ok(tool_error.clone()),
                1,
                false,
                ("failed", Some("tool_error"), false),
            ),
            (
                Ok(tool_error.clone()),
                1,
                true,
                ("retry", Some("tool_error"), false),
            ),
            (
                Ok(tool_error),
                3,
                true,
                ("failed", Some("tool_error"), true),
            ),
            // Timeouts and lost servers are retried, and dead-lettered on the last attempt.
            (
                Err(CallError::TimedOut(std::time::Duration::from_secs(1))),
                1,
                false,
                ("retry", Some("timeout"), false),
            ),
            (
                Err(unavailable()),
                2,
                false,
                ("retry", Some("mcp_unavailable"), false),
            ),
            (
                Err(unavailable()),
                3,
                false,
                ("failed", Some("mcp_unavailable"), true),
            ),
            // A refusal by the server is final and no dead letter; a cancel is a cancel.
            (
                Err(CallError::Refused {
                    server: "demo".into(),
                    message: "bad params".into(),
                }),
                1,
                false,
                ("failed", Some("mcp_error"), false),
            ),
            (
                Err(CallError::Cancelled),
                1,
                false,
                ("cancelled", None, false),
            ),
        ];
        for (result, attempt, retry_tool_errors, want) in cases {
            let outcome = classify(result, &t, attempt, retry_tool_errors);
            assert_eq!(code(&outcome), want, "attempt {attempt}: {outcome:?}");
        }
    }

    #[test]
    fn a_tool_error_keeps_the_tools_words_and_result() {
        let result = CallToolResult::error(vec![Content::text("line one"), Content::text("two")]);
        let Outcome::Terminal(EventKind::Failed { error }) =
            classify(Ok(result), &task(1), 1, false)
        else {
            panic!("a tool error is final");
        };
        assert_eq!(error.message, "line one\ntwo");
        assert!(error.details.is_some(), "the tool's own result is kept");
        let silent = CallToolResult::error(vec![]);
        let Outcome::Terminal(EventKind::Failed { error }) =
            classify(Ok(silent), &task(1), 1, false)
        else {
            panic!("a tool error is final");
        };
        assert_eq!(error.message, "the tool reported an error");
    }

    #[test]
    fn retry_delays_double_with_jitter_up_to_a_minute() {
        for (attempt, base) in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (20, 60)] {
            let base = Duration::from_secs(base);
            let delays: Vec<Duration> = (0..200)
                .map(|_| retry_delay(attempt, Default::default()))
                .collect();
            assert!(
                delays.iter().all(|d| *d >= base / 2 && *d <= base),
                "attempt {attempt}: {delays:?}"
            );
            // Jittered: not all the same.
            assert!(delays.iter().any(|d| *d != delays[0]), "attempt {attempt}");
        }
    }

    #[test]
    fn a_queues_retry_policy_sets_the_first_delay_and_the_cap() {
        let policy = RetryPolicy {
            initial_ms: 100,
            max_ms: 250,
        };
        for (attempt, base) in [(1, 100), (2, 200), (3, 250), (10, 250)] {
            let base = Duration::from_millis(base);
            let d = retry_delay(attempt, policy);
            assert!(d >= base / 2 && d <= base, "attempt {attempt}: {d:?}");
        }
    }
}
