//! `POST /api/v1/tasks/batch`: many tasks checked as one, published together.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use wharf_contract::{ErrorCode, SubmitBatch, TaskBatch, TaskView};

use super::*;
use crate::AppState;
use crate::auth::Principal;
use crate::http::JsonBody;
use crate::problem::ApiError;

/// Most tasks one batch may hold.
pub const MAX_BATCH: usize = 1000;

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
    if req.tasks.is_empty() || req.tasks.len() > MAX_BATCH {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/tasks",
            format!("must hold 1 to {MAX_BATCH} tasks"),
        ));
    }
    let mut tasks = Vec::with_capacity(req.tasks.len());
    let mut keys = std::collections::HashMap::new();
    let mut contexts: std::collections::HashMap<_, Option<wharf_contract::Agent>> =
        std::collections::HashMap::new();
    for (i, task) in req.tasks.into_iter().enumerate() {
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
                let agent = context(&state, &principal, &task, Origin::Client)
                    .await
                    .map_err(within)?;
                contexts.insert(named, agent.clone());
                agent
            }
        };
        tasks.push(
            prepare(&state, &principal, task, Origin::Client, agent.as_ref()).map_err(within)?,
        );
    }
    // Keys already used give their tasks back in place; only the others are published.
    let admitted = futures::future::join_all(tasks.iter_mut().map(|t| admit(&state, t))).await;
    // Refused whole, by one task or by the tenant's cap on the new ones: the keys this request
    // claimed are given back, so the batch can be sent again at once.
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
        let state = &state;
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
    let existing: Vec<Option<TaskView>> = admitted
        .into_iter()
        .map(|a| match a {
            Ok(Admission::Existing(view)) => Some(*view),
            _ => None,
        })
        .collect();
    let trace = trace_of(&headers);
    let published = futures::future::join_all(tasks.iter().zip(existing).map(|(t, existing)| {
        let trace = trace.child();
        let state = &state;
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
    for (i, (p, task)) in published.into_iter().zip(&tasks).enumerate() {
        match p {
            Ok(view) => views.push(view),
            // An error does not prove the task was not stored (its ack may be what was lost):
            // name the id so the client can look before submitting it again.
            Err(e) => unsure.push(wharf_contract::FieldError {
                pointer: format!("/tasks/{i}"),
                detail: format!(
                    "task {} may not have been stored ({e}); check GET /api/v1/tasks/{} \
                     before submitting it again",
                    task.id, task.id
                ),
            }),
        }
    }
    if !unsure.is_empty() {
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
        return Err(e);
    }
    Ok((StatusCode::ACCEPTED, Json(TaskBatch { tasks: views })).into_response())
}
