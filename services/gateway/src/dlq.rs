//! `/api/v1/dlq`: dead letters, the tasks that failed after using every attempt or whose message
//! could not be read. List them, inspect one, replay one as a new task.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use wharf_contract::{DeadLetter, DeadLetterList, ErrorCode, Permission, SubmitTask};

use crate::AppState;
use crate::auth::Principal;
use crate::http::{Page, PageQuery, QueryParams, Seq};
use crate::problem::{ApiError, Segment};
use crate::tasks::{self, parse_id};

/// True when `principal` may see `letter`: its task is the principal's tenant's. A letter whose
/// message could not be read has no known tenant; only `tenants:admin` sees those.
fn visible(principal: &Principal, letter: &DeadLetter) -> bool {
    match &letter.task {
        Some(task) => principal.owns(&task.tenant),
        None => principal.can(Permission::TenantsAdmin),
    }
}

/// `GET /api/v1/dlq`: the tenant's dead letters, oldest first, `limit` (1–1000, default 100)
/// per page.
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams<PageQuery>,
) -> Result<Json<DeadLetterList>, ApiError> {
    principal.require(Permission::DlqRead)?;
    let q = query.read()?;
    let page = Page::<Seq>::read(
        q.limit.as_deref(),
        q.cursor.as_deref(),
        wharf_contract::rules::DLQ_PAGE,
    )?;
    let mut dead_letters = state
        .bus
        .dead_letters(
            page.after.map_or(0, |Seq(s)| s),
            page.limit as usize + 1,
            |l| visible(&principal, l),
        )
        .await?;
    let next_cursor = page.close(&mut dead_letters, |d| d.seq.map(|s| s.to_string()));
    Ok(Json(DeadLetterList {
        dead_letters,
        next_cursor,
    }))
}

fn no_dead_letter(id: uuid::Uuid) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("task {id} has no dead letter (it did not fail for good, or was replayed)"),
    )
}

/// `GET /api/v1/dlq/{task_id}`
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Segment(raw): Segment,
) -> Result<Json<DeadLetter>, ApiError> {
    principal.require(Permission::DlqRead)?;
    let id = parse_id(&raw)?;
    state
        .bus
        .dead_letter(id)
        .await?
        .filter(|l| visible(&principal, l))
        .map(Json)
        .ok_or_else(|| no_dead_letter(id))
}

/// `POST /api/v1/dlq/{task_id}/replay`: submits the dead task again as a new task (same tool,
/// arguments, queue and limits; `metadata.replay_of` names the dead one), then removes the dead
/// letter. The replay carries the idempotency key `replay:<task id>`, so two replays racing, or
/// one retried after the letter failed to be removed, give the same new task.
pub async fn replay(
    State(state): State<AppState>,
    principal: Principal,
    Segment(raw): Segment,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    principal.require(Permission::DlqReplay)?;
    let id = parse_id(&raw)?;
    let Some(letter) = state
        .bus
        .dead_letter(id)
        .await?
        .filter(|l| visible(&principal, l))
    else {
        // Never dead-lettered, or replayed already (a replay removes the letter).
        return Err(no_dead_letter(id));
    };
    let Some(task) = letter.task else {
        return Err(ApiError::new(
            ErrorCode::NotReplayable,
            format!("task {id}'s message could not be read; there is no task to replay"),
        ));
    };
    let mut metadata = task.metadata;
    metadata.insert("replay_of".into(), Value::String(id.to_string()));
    let req = SubmitTask {
        tool: task.tool,
        arguments: task.arguments,
        queue: Some(task.queue),
        timeout_secs: task.timeout_secs,
        max_attempts: Some(task.max_attempts),
        idempotency_key: Some(format!("{}{id}", wharf_contract::rules::REPLAY_KEY_PREFIX)),
        session_id: task.session_id,
        metadata: Some(metadata),
        run_at: None,
        delay_secs: None,
        priority: Some(task.priority),
        // The agent must still allow the tool.
        agent: task.agent,
        callback: task.callback,
    };
    // The replay runs in the dead task's tenant, which is the caller's (`visible`). Replaying
    // is the permission here, not submitting.
    let replayer = Principal::new(
        principal.actor().to_owned(),
        principal.tenant().to_owned(),
        Vec::new(),
        crate::auth::Permissions::of(&[Permission::TasksSubmit]),
    );
    let (status, view) = tasks::submit(
        &state,
        &replayer,
        req,
        tasks::Origin::Replay,
        tasks::trace_of(&headers),
    )
    .await?;
    if let Err(e) = state.bus.remove_dead_letter(id).await {
        // The replay is stored; a later replay of the same letter returns it again.
        tracing::warn!(task_id = %id, error = %e, "replayed, but the dead letter stays listed");
    }
    tracing::info!(task_id = %id, replay = %view.id, "dead letter replayed");
    let location = format!("/api/v1/tasks/{}", view.id);
    Ok((status, [(header::LOCATION, location)], Json(view)).into_response())
}
