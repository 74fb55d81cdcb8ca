//! `/api/v1/workers` and `/api/v1/queues`: what an operator asks of the platform itself. Is
//! anyone serving my queue, how far behind is it, do I need more workers.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use wharf_contract::{QueueInfo, QueueList, WorkerList};

use crate::AppState;
use crate::problem::ApiError;

/// `GET /api/v1/workers`: the workers alive now (each announces itself every few seconds; one
/// that stops doing so drops out after `nats.worker_ttl_secs`).
pub async fn workers(State(state): State<AppState>) -> Result<Json<WorkerList>, ApiError> {
    Ok(Json(WorkerList {
        workers: state.bus.workers().await?,
    }))
}

/// `GET /api/v1/queues`: every queue a worker serves or served, or the gateway has defaults
/// for, with its levels.
pub async fn queues(State(state): State<AppState>) -> Result<Json<QueueList>, ApiError> {
    let workers = state.bus.workers().await?;
    let mut names: BTreeSet<String> = state.bus.known_queues().await?.into_iter().collect();
    names.extend(state.config.queues.keys().cloned());
    names.extend(workers.iter().flat_map(|w| w.queues.iter().cloned()));
    let finished = state
        .store
        .finished_since(chrono::Utc::now() - chrono::Duration::seconds(60))
        .await?;
    let mut queues = Vec::with_capacity(names.len());
    for name in names {
        let levels = state.bus.queue_levels(&name).await?;
        queues.push(QueueInfo {
            waiting: levels.iter().map(|l| l.waiting).sum(),
            in_flight: levels.iter().map(|l| l.in_flight).sum(),
            oldest_age_secs: levels
                .iter()
                .filter_map(|l| l.oldest_age_secs)
                .reduce(f64::max),
            workers: workers.iter().filter(|w| w.queues.contains(&name)).count(),
            finished_last_minute: finished.get(&name).copied().unwrap_or(0),
            levels,
            name,
        });
    }
    Ok(Json(QueueList { queues }))
}
