//! `POST /api/v1/tasks/batch`: many tasks checked as one, published together.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use wharf_contract::{ErrorCode, FieldError, SubmitBatch, SubmitTask, Task, TaskBatch, TaskView};

use super::*;
use crate::AppState;
use crate::auth::Principal;
use crate::http::JsonBody;
use crate::problem::ApiError;
use wharf_contract::rules::BATCH_TASKS;

/// `POST /api/v1/tasks/batch`: every task is checked before any is published, so one bad task
/// refuses the whole batch (the problem names it, e.g. `/tasks/3/tool`) and nothing is
/// written. Then all are published at once; 202 means every one of them is stored. Should NATS
/// fail part-way, the answer is 503: its `errors` name the tasks that may not have been stored,
/// with their ids, and its detail lists the ids of those that were (they run).
pub async fn create_batch(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(wharf_contract::Permission::TasksSubmit)?;
    let req: SubmitBatch = body.parse()?;
    let batch = submit_batch(&state, &principal, req, &trace_of(&headers)).await?;
    Ok((StatusCode::ACCEPTED, Json(batch)).into_response())
}

/// Checks every task of a batch, then publishes them all (the HTTP route's and the NATS
/// service's).
pub async fn submit_batch(
    state: &AppState,
    principal: &Principal,
    req: SubmitBatch,
    trace: &wharf_telemetry::TraceContext,
) -> Result<TaskBatch, ApiError> {
    principal.require(wharf_contract::Permission::TasksSubmit)?;
    if !BATCH_TASKS.contains(&(req.tasks.len() as u64)) {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/tasks",
            format!(
                "must hold {} to {} tasks",
                BATCH_TASKS.start(),
                BATCH_TASKS.end()
            ),
        ));
    }
    let mut tasks = prepare_all(state, principal, req.tasks).await?;
    let trace_id = trace.trace_id_hex();
    for task in &mut tasks {
        task.trace_id = Some(trace_id.clone());
    }
    let existing = admit_all(state, principal, &mut tasks).await?;
    let views = publish_all(state, &tasks, existing, trace).await?;
    Ok(TaskBatch { tasks: views })
}

/// Checks every task of the batch (keys unique within it); the first refusal names its task.
async fn prepare_all(
    state: &AppState,
    principal: &Principal,
    submitted: Vec<SubmitTask>,
) -> Result<Vec<Task>, ApiError> {
    let mut tasks = Vec::with_capacity(submitted.len());
    let mut keys = HashMap::new();
    let mut contexts: HashMap<_, Option<wharf_contract::Agent>> = HashMap::new();
    for (i, task) in submitted.into_iter().enumerate() {
        if let Some(key) = &task.idempotency_key
            && let Some(first) = keys.insert(key.clone(), i)
        {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                &format!("/tasks/{i}/idempotency_key"),
                format!("repeats the key of /tasks/{first}"),
            ));
        }
        let within = |e: ApiError| e.within(&format!("/tasks/{i}"));
        // The tasks of a batch mostly name the same session and agent: each pair is read once.
        let named = (task.session_id.clone(), task.agent.clone());
        let agent = match contexts.get(&named) {
            Some(agent) => agent.clone(),
            None => {
                let agent = context(state, principal, &task, Origin::Client)
                    .await
                    .map_err(within)?;
                contexts.insert(named, agent.clone());
                agent
            }
        };
        tasks
            .push(prepare(state, principal, task, Origin::Client, agent.as_ref()).map_err(within)?);
    }
    Ok(tasks)
}

/// Claims the batch's idempotency keys and counts its new tasks against the tenant's cap.
/// Returns, per task, the task a key already names (answered in place, not published). Refused
/// whole, by one task or by the cap, the batch gives back the keys it claimed, so it can be
/// sent again at once.
async fn admit_all(
    state: &AppState,
    principal: &Principal,
    tasks: &mut [Task],
) -> Result<Vec<Option<TaskView>>, ApiError> {
    let admitted = futures::future::join_all(tasks.iter_mut().map(|t| admit(state, t))).await;
    let release = |admitted: &[Result<Admission, ApiError>]| {
        let claimed: Vec<(String, u64)> = admitted
            .iter()
            .filter_map(|a| match a {
                Ok(Admission::New {
                    claimed: Some(claim),
                }) => Some(claim.clone()),
                _ => None,
            })
            .collect();
        async move {
            for (key, revision) in claimed {
                let _ = state.bus.release_idempotency_key(&key, revision).await;
            }
        }
    };
    if let Some(i) = admitted.iter().position(Result::is_err) {
        release(&admitted).await;
        let e = admitted
            .into_iter()
            .nth(i)
            .and_then(Result::err)
            .expect("the refused one");
        return Err(e.within(&format!("/tasks/{i}")));
    }
    // Repeats of accepted submissions are not new: only the others count against the cap.
    let new = admitted
        .iter()
        .filter(|a| matches!(a, Ok(Admission::New { .. })))
        .count() as u64;
    if new > 0
        && let Err(e) = state
            .settings()
            .limits
            .admit_tasks(&state.store, principal.tenant(), new)
            .await
    {
        release(&admitted).await;
        return Err(e);
    }
    Ok(admitted
        .into_iter()
        .map(|a| match a {
            Ok(Admission::Existing(view)) => Some(*view),
            _ => None,
        })
        .collect())
}

/// Publishes the new tasks together. An error does not prove a task was not stored (its ack
/// may be what was lost): a 503 names each such task's id, so the client can look before
/// submitting it again, and lists those that were stored.
async fn publish_all(
    state: &AppState,
    tasks: &[Task],
    existing: Vec<Option<TaskView>>,
    trace: &wharf_telemetry::TraceContext,
) -> Result<Vec<TaskView>, ApiError> {
    let published = futures::future::join_all(tasks.iter().zip(existing).map(|(t, existing)| {
        let trace = trace.child();
        async move {
            match existing {
                Some(view) => Ok(view),
                None => publish(state, t, &trace).await,
            }
        }
    }))
    .await;
    let mut views = Vec::with_capacity(published.len());
    let mut unsure = Vec::new();
    for (i, (p, task)) in published.into_iter().zip(tasks).enumerate() {
        match p {
            Ok(view) => views.push(view),
            Err(e) => unsure.push(FieldError {
                pointer: format!("/tasks/{i}"),
                detail: format!(
                    "task {} may not have been stored ({e}); check GET /api/v1/tasks/{} \
                     before submitting it again",
                    task.id, task.id
                ),
            }),
        }
    }
    if unsure.is_empty() {
        return Ok(views);
    }
    let stored: Vec<String> = views.iter().map(|t| t.id.to_string()).collect();
    let mut e = ApiError::unavailable(format!(
        "{} of {} tasks may not have been stored (named in errors); these were and will \
         run: {}",
        unsure.len(),
        unsure.len() + views.len(),
        if stored.is_empty() {
            "none".to_owned()
        } else {
            stored.join(", ")
        }
    ));
    e.0.errors = unsure;
    Err(e)
}
