//! The tools routes: the catalog with its filters, and `POST /api/v1/tools/{name}/call`, which
//! runs a tool through the queue and waits for its result.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use wharf_contract::rules::MAX_WAIT_SECS;
use wharf_contract::{CallTool, Permission, SubmitTask, ToolList, WsServerMessage};

use crate::AppState;
use crate::auth::Principal;
use crate::http::{JsonBody, QueryParams, query_error};
use crate::problem::{ApiError, Segment};
use crate::tasks;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsQuery {
    server: Option<String>,
    q: Option<String>,
}

/// `GET /api/v1/tools?server=&q=`: the catalog, by name; `q` matches names and descriptions,
/// ignoring case.
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams<ToolsQuery>,
) -> Result<Json<ToolList>, ApiError> {
    principal.require(Permission::ToolsRead)?;
    let q = query.read()?;
    let needle = q.q.map(|s| s.to_lowercase());
    // The catalog is kept by name, so the list comes sorted.
    let tools = state.catalog.list(|t| {
        q.server.as_ref().is_none_or(|s| t.server == *s)
            && needle.as_ref().is_none_or(|n| {
                t.name.to_lowercase().contains(n)
                    || t.description
                        .as_ref()
                        .is_some_and(|d| d.to_lowercase().contains(n))
            })
    });
    Ok(Json(ToolList { tools }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallQuery {
    wait: Option<String>,
}

/// Reads `30`, `30s` or `1500ms` ([`wharf_contract::rules::WAIT_PATTERN`]), at most 50 s:
/// below the request deadline, so the answer is the caller's.
fn parse_wait(raw: &str) -> Option<Duration> {
    wharf_contract::rules::parse_wait(raw).map(Duration::from_secs_f64)
}

/// How a `wait` is refused.
fn wait_rule() -> String {
    format!("a duration up to {MAX_WAIT_SECS} s: 30, 30s or 1500ms")
}

/// `POST /api/v1/tools/{name}/call?wait=30s`: submits a task calling the tool (through the
/// queue, as any task), then waits up to `wait` (default 30 s, at most 50 s) for it to end:
/// 200 with the finished task, else 202 with the task as it is, to follow or read later.
pub async fn call(
    State(state): State<AppState>,
    principal: Principal,
    Segment(tool): Segment,
    query: QueryParams<CallQuery>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(Permission::TasksSubmit)?;
    let q = query.read()?;
    let wait = match q.wait.as_deref() {
        None => Duration::from_secs(30),
        Some(raw) => parse_wait(raw).ok_or_else(|| query_error("wait", wait_rule()))?,
    };
    // The answer must start before the request deadline (else 504): a wait that would reach it
    // is cut short, leaving a second to read the task and answer.
    let wait = wait.min(
        state
            .config
            .request_timeout
            .saturating_sub(Duration::from_secs(1)),
    );
    let call: CallTool = body.parse_or_default()?;
    let req = SubmitTask {
        tool,
        arguments: call.arguments,
        queue: call.queue,
        timeout_secs: call.timeout_secs,
        max_attempts: call.max_attempts,
        idempotency_key: call.idempotency_key,
        session_id: call.session_id,
        metadata: call.metadata,
        run_at: None,
        delay_secs: None,
        priority: call.priority,
        agent: call.agent,
        callback: None,
    };
    let (view, events) =
        tasks::submit_and_follow(&state, &principal, req, tasks::trace_of(&headers)).await?;
    let id = view.id;
    let location = format!("/api/v1/tasks/{id}");
    let mut events = std::pin::pin!(events.take_until(tokio::time::sleep(wait)));
    let mut ended = false;
    while let Some(m) = events.next().await {
        if matches!(
            m,
            WsServerMessage::Complete { .. }
                | WsServerMessage::Error { .. }
                | WsServerMessage::Cancelled { .. }
        ) {
            ended = true;
            break;
        }
    }
    let now = tasks::find(&state, id).await?;
    if ended && let Some(done) = now {
        return Ok((StatusCode::OK, [(header::LOCATION, location)], Json(done)).into_response());
    }
    let now = now.unwrap_or(view);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(now),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_as_durations() {
        assert_eq!(parse_wait("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_wait("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_wait("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_wait("0.5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_wait("soon"), None);
        assert_eq!(parse_wait("-1"), None);
        // Found by the fuzz: a number too large for a Duration made the handler panic.
        assert_eq!(parse_wait("20000000000000000000"), None);
        assert_eq!(parse_wait("1e300s"), None);
        assert_eq!(parse_wait("99999999999999999999ms"), None);
    }
}
