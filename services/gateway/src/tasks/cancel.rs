//! `POST /api/v1/tasks/{id}/cancel`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;
use wharf_contract::msg_id;
use wharf_contract::{ErrorCode, EventKind, TaskEvent, TaskStatus, TaskView};

use super::*;
use crate::AppState;
use crate::auth::Principal;
use crate::problem::{ApiError, Segment};

/// Asks for a task to be cancelled. Workers act on the request: a queued task never starts, a
/// running one has its MCP call cancelled; either way the task ends `cancelled`.
pub async fn request_cancel(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<TaskView, ApiError> {
    principal.require(wharf_contract::Permission::TasksCancel)?;
    // The stream is ahead of the database: a task that just ended is refused, not "cancelled".
    let Some(mut view) = find_latest(state, id)
        .await?
        .filter(|v| principal.owns(&v.tenant))
    else {
        return Err(not_found(id));
    };
    if view.status.is_terminal() {
        return Err(ApiError::new(
            ErrorCode::TaskFinished,
            format!("task {id} already ended {}", view.status.as_str()),
        ));
    }
    // Recorded first in every case: should the schedule fire meanwhile, the worker that takes
    // the task sees the request and ends it without running it.
    state.bus.request_cancel(id).await?;
    if view.status == TaskStatus::Queued
        && view.run_at.is_some_and(|t| t > chrono::Utc::now())
        && state.bus.unschedule(id).await?
    {
        // A delayed task not due yet: its schedule is gone, so it ends here and now.
        let event = TaskEvent::new(
            id,
            0,
            EventKind::Cancelled {
                reason: Some("cancelled before its start time".into()),
            },
        );
        state
            .bus
            .publish_event(&view.tenant, &event, &msg_id::terminal(id), None)
            .await?
            .await
            .map_err(ApiError::unavailable)?;
        view.status = TaskStatus::Cancelled;
        view.finished_at = Some(event.at);
        view.cancel_requested_at.get_or_insert(event.at);
        return Ok(view);
    }
    let event = TaskEvent::new(
        id,
        view.attempts,
        EventKind::CancelRequested { reason: None },
    );
    state
        .bus
        .publish_event(&view.tenant, &event, &msg_id::cancel_requested(id), None)
        .await?
        .await
        .map_err(ApiError::unavailable)?;
    view.cancel_requested_at.get_or_insert(event.at);
    Ok(view)
}

/// `POST /api/v1/tasks/{id}/cancel`
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Segment(raw): Segment,
) -> Result<Response, ApiError> {
    let id = parse_id(&raw)?;
    let view = request_cancel(&state, &principal, id).await?;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}
