//! `POST /api/v1/queues/{name}/pause` and `/resume`: an operator stops workers taking tasks
//! from a queue (a misbehaving downstream, a deploy) without refusing submissions, then lets
//! them go on. The pause is JetStream's own, on the queue's consumers (`Bus::pause_queue`): the
//! server stops handing their tasks out, so it holds for every worker, those started later
//! included, and no worker needs to be told.

use axum::Json;
use axum::extract::State;
use wharf_contract::{ErrorCode, Permission, QueueInfo};

use crate::AppState;
use crate::auth::Principal;
use crate::problem::{ApiError, Segment};

/// `POST /api/v1/queues/{name}/pause`: workers take no more tasks from the queue; the queue
/// goes on accepting them. Tasks already running finish. Pausing a paused queue changes
/// nothing.
pub async fn pause(
    State(state): State<AppState>,
    principal: Principal,
    Segment(name): Segment,
) -> Result<Json<QueueInfo>, ApiError> {
    set_paused(&state, &principal, &name, true).await
}

/// `POST /api/v1/queues/{name}/resume`: workers take tasks from the queue again, at once.
pub async fn resume(
    State(state): State<AppState>,
    principal: Principal,
    Segment(name): Segment,
) -> Result<Json<QueueInfo>, ApiError> {
    set_paused(&state, &principal, &name, false).await
}

async fn set_paused(
    state: &AppState,
    principal: &Principal,
    name: &str,
    paused: bool,
) -> Result<Json<QueueInfo>, ApiError> {
    principal.require(Permission::OpsWrite)?;
    // Only a queue the platform knows: a typo must not make (and pause) a queue of its own.
    if !crate::ops::is_known_queue(state, name).await? {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no queue {name}: no worker serves it, it has no task and no defaults"),
        ));
    }
    if paused {
        state.bus.pause_queue(name).await?;
        tracing::info!(queue = name, actor = principal.actor(), "queue paused");
    } else {
        state.bus.resume_queue(name).await?;
        tracing::info!(queue = name, actor = principal.actor(), "queue resumed");
    }
    Ok(Json(crate::ops::queue(state, name).await?))
}
