//! Reading tasks: one (`GET /api/v1/tasks/{id}`, from the database, else folded from its
//! events) and the list with its filters and pages.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use uuid::Uuid;
use wharf_contract::TaskState;
use wharf_contract::{ErrorCode, TaskList, TaskStatus, TaskView};

use super::*;
use crate::AppState;
use crate::auth::Principal;
use crate::http::{Page, QueryParams, query_error};
use crate::problem::{ApiError, Segment};

/// The task as recorded, or, when the recorder has not caught up yet, folded from its events in
/// the stream: a task is readable as soon as its submission was answered.
pub async fn find(state: &AppState, id: Uuid) -> Result<Option<TaskView>, ApiError> {
    if let Some(view) = state.store.task(id).await? {
        // A finished row is final. An unfinished one may trail the stream (the recorder is
        // behind, or restarting after a crash and waiting for its unacknowledged events): one
        // direct get tells whether the task has in fact ended, and then the stream answers.
        if view.status.is_terminal() || !state.bus.has_ended(id).await? {
            return Ok(Some(view));
        }
        return find_latest(state, id).await;
    }
    let history = state.bus.history(id).await?;
    Ok((!history.is_empty()).then(|| TaskState::fold(id, &history).view))
}

/// The task folded from its events in the stream, which the database trails; the database row
/// when the events have aged out of the stream.
pub(super) async fn find_latest(state: &AppState, id: Uuid) -> Result<Option<TaskView>, ApiError> {
    let history = state.bus.history(id).await?;
    let s = TaskState::fold(id, &history);
    // A history whose start has aged out of the stream is partial: the row knows the rest.
    if s.view.created_at.is_none()
        && let Some(mut row) = state.store.task(id).await?
    {
        if s.terminal_seq != 0 {
            row.status = s.view.status;
        }
        return Ok(Some(row));
    }
    Ok((!history.is_empty()).then_some(s.view))
}

pub fn not_found(id: Uuid) -> ApiError {
    ApiError::new(ErrorCode::TaskNotFound, format!("no task {id}"))
}

/// Task `id` if it is `principal`'s tenant's; another tenant's task is "not found", exactly
/// as a task that does not exist, so ids reveal nothing across tenants.
pub async fn find_owned(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<TaskView, ApiError> {
    find(state, id)
        .await?
        .filter(|v| principal.owns(&v.tenant))
        .ok_or_else(|| not_found(id))
}

/// `GET /api/v1/tasks/{id}`
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Segment(raw): Segment,
) -> Result<Json<TaskView>, ApiError> {
    principal.require(wharf_contract::Permission::TasksRead)?;
    let id = parse_id(&raw)?;
    find_owned(&state, &principal, id).await.map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    queue: Option<String>,
    session_id: Option<String>,
    priority: Option<String>,
    agent: Option<String>,
    tool: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    view: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// A time of the list's range (RFC 3339), as the first task id of its millisecond.
fn time_bound(field: &str, value: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    value
        .map(|v| {
            chrono::DateTime::parse_from_rfc3339(v)
                .map(|t| wharf_store::id_at(t.with_timezone(&chrono::Utc)))
                .map_err(|e| {
                    query_error(
                        field,
                        format!("`{v}` is not an RFC 3339 time (2026-12-01T09:00:00Z): {e}"),
                    )
                })
        })
        .transpose()
}

/// `GET /api/v1/tasks`
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams<ListQuery>,
) -> Result<Json<TaskList>, ApiError> {
    principal.require(wharf_contract::Permission::TasksRead)?;
    let q = query.read()?;
    let status = q
        .status
        .map(|s| s.parse::<TaskStatus>())
        .transpose()
        .map_err(|e| query_error("status", e))?;
    let priority = q
        .priority
        .map(|p| p.parse::<wharf_contract::Priority>())
        .transpose()
        .map_err(|e| query_error("priority", e))?;
    // A page holds summaries unless asked for more, as Temporal's list does: the payloads
    // are most of a task's bytes, and a list is read to find tasks, not to read them.
    let summary = match q.view.as_deref() {
        None | Some("summary") => true,
        Some("full") => false,
        Some(other) => {
            return Err(query_error(
                "view",
                format!("`{other}` is not a view: `summary` or `full`"),
            ));
        }
    };
    let page = Page::<Uuid>::read(
        q.limit.as_deref(),
        q.cursor.as_deref(),
        wharf_contract::rules::TASKS_PAGE,
    )?;
    // Submission times are the ids' own (UUIDv7): a range is a range of ids, and its end
    // works as a cursor does.
    let after = time_bound("created_after", q.created_after.as_deref())?;
    let until = time_bound("created_before", q.created_before.as_deref())?;
    let before = match (page.after, until) {
        (Some(cursor), Some(until)) => Some(cursor.min(until)),
        (cursor, until) => cursor.or(until),
    };
    // One more than asked tells whether another page exists.
    let filter = wharf_store::TaskFilter {
        status,
        queue: q.queue,
        session_id: q.session_id,
        priority,
        tenant: Some(principal.tenant().to_owned()),
        agent: q.agent,
        tool: q.tool,
        after,
        unfinished: false,
        before,
        limit: page.limit + 1,
        summary,
    };
    let mut tasks = state.store.tasks(&filter).await?;
    let next_cursor = page.close(&mut tasks, |t| Some(t.id.to_string()));
    Ok(Json(TaskList { tasks, next_cursor }))
}
