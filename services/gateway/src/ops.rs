//! `/api/v1/workers` and `/api/v1/queues`: what an operator asks of the platform itself. Is
//! anyone serving my queue, how far behind is it, do I need more workers.

use std::collections::{BTreeSet, HashMap};

use tracing::Instrument;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use wharf_contract::{QueueInfo, QueueList, SystemStatus, WorkerInfo, WorkerList};

use crate::AppState;
use crate::http::{NoQuery, QueryParams};
use crate::problem::ApiError;

/// `GET /api/v1/workers`: the workers alive now (each announces itself every few seconds; one
/// that stops doing so drops out after `nats.worker_ttl_secs`).
pub async fn workers(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    query: QueryParams<NoQuery>,
) -> Result<Json<WorkerList>, ApiError> {
    principal.require(wharf_contract::Permission::OpsRead)?;
    query.read()?;
    Ok(Json(WorkerList {
        workers: state.bus.workers().await?,
    }))
}

/// `GET /api/v1/queues`: every queue a worker serves or served, or the gateway has defaults
/// for, with its levels.
pub async fn queues(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    query: QueryParams<NoQuery>,
) -> Result<Json<QueueList>, ApiError> {
    principal.require(wharf_contract::Permission::OpsRead)?;
    query.read()?;
    let workers = state.recent_workers().await?;
    Ok(Json(QueueList {
        queues: queue_infos(&state, &workers).await?,
    }))
}

/// How often `system:status` goes out to the WebSockets that follow it.
pub const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The platform now: what `system:status` carries.
pub async fn status(state: &AppState) -> Result<SystemStatus, ApiError> {
    let workers = state.recent_workers().await?;
    let queues = queue_infos(state, &workers).await?;
    Ok(SystemStatus {
        at: chrono::Utc::now(),
        workers,
        queues,
    })
}

/// Refreshes `state.status` every [`STATUS_EVERY`] while some WebSocket follows it, until the
/// gateway stops. One reading per gateway, however many sockets follow.
pub async fn refresh_status(state: AppState) {
    let mut every = tokio::time::interval(STATUS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = state.stopping.cancelled() => return,
        }
        if state.status.receiver_count() == 0 {
            continue;
        }
        match status(&state).await {
            Ok(s) => {
                state.status.send_replace(Some(std::sync::Arc::new(s)));
            }
            Err(e) => tracing::warn!(error = %e.0.detail, "cannot read the system status"),
        }
    }
}

/// The names of every queue a worker serves or served, that has tasks, or that the gateway has
/// defaults for.
async fn queue_names(
    state: &AppState,
    workers: &[WorkerInfo],
) -> Result<BTreeSet<String>, wharf_bus::Error> {
    let mut names: BTreeSet<String> = state.bus.known_queues().await?.into_iter().collect();
    names.extend(state.settings().queues.keys().cloned());
    names.extend(workers.iter().flat_map(|w| w.queues.iter().cloned()));
    Ok(names)
}

/// Every queue of [`queue_names`], with its state.
async fn queue_infos(state: &AppState, workers: &[WorkerInfo]) -> Result<Vec<QueueInfo>, ApiError> {
    let names = queue_names(state, workers).await?;
    let finished = finished_last_minute(state).await?;
    let mut queues = Vec::with_capacity(names.len());
    for name in names {
        queues.push(queue_info(state, workers, &finished, name).await?);
    }
    Ok(queues)
}

/// Whether the platform knows a queue of that name: a worker serves it or served it, it has
/// tasks, or the gateway has defaults for it.
pub(crate) async fn is_known_queue(state: &AppState, name: &str) -> Result<bool, ApiError> {
    let workers = state.recent_workers().await?;
    Ok(queue_names(state, &workers).await?.contains(name))
}

/// One queue's state (as `GET /api/v1/queues` lists it).
pub(crate) async fn queue(state: &AppState, name: &str) -> Result<QueueInfo, ApiError> {
    let workers = state.recent_workers().await?;
    let finished = finished_last_minute(state).await?;
    queue_info(state, &workers, &finished, name.to_owned()).await
}

/// Per queue, the tasks that ended in the last minute (one query for every queue).
async fn finished_last_minute(
    state: &AppState,
) -> Result<HashMap<String, wharf_store::Finished>, ApiError> {
    Ok(state
        .store
        .finished_since(chrono::Utc::now() - chrono::Duration::seconds(60))
        .await?)
}

async fn queue_info(
    state: &AppState,
    workers: &[WorkerInfo],
    finished: &HashMap<String, wharf_store::Finished>,
    name: String,
) -> Result<QueueInfo, ApiError> {
    let levels = state.bus.queue_levels(&name).await?;
    Ok(QueueInfo {
        waiting: levels.iter().map(|l| l.waiting).sum(),
        in_flight: levels.iter().map(|l| l.in_flight).sum(),
        oldest_age_secs: levels
            .iter()
            .filter_map(|l| l.oldest_age_secs)
            .reduce(f64::max),
        workers: workers.iter().filter(|w| w.queues.contains(&name)).count(),
        finished_last_minute: finished.get(&name).map_or(0, |f| f.total),
        failed_last_minute: finished.get(&name).map_or(0, |f| f.failed),
        paused: levels.iter().all(|l| l.paused),
        levels,
        name,
    })
}

/// Header naming a request, both ways.
const REQUEST_ID: &str = "x-request-id";

/// Runs every request in a span of its own (a child of the caller's `traceparent`), with a
/// request id (the caller's `x-request-id`, else a new one, echoed in the answer), and times it
/// into `wharf_http_request_duration_seconds`, labelled with the route pattern
/// (`/api/v1/tasks/{id}`, never the id itself) or `unmatched`.
pub async fn measure(mut request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    // The caller's request id when it sent a usable one, else a new one; on every log line of
    // the request (a span field) and in the answer.
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    request
        .extensions_mut()
        .insert(crate::audit::RequestId(request_id.clone()));
    let span = tracing::info_span!(
        "http.request",
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        request_id = %request_id,
    );
    if wharf_telemetry::traces::exporting() {
        span.record("otel.name", format!("{method} {route}"));
        span.record("otel.kind", "server");
    }
    if let Some(parent) = request
        .headers()
        .get(wharf_contract::TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(wharf_telemetry::TraceContext::parse)
    {
        wharf_telemetry::traces::set_parent(&span, &parent);
    }
    let mut response = next.run(request).instrument(span.clone()).await;
    // For the exported span only: the request's log lines were all written by now, and the
    // log layer formats a span's fields again at every record (a fiftieth of the gateway's CPU
    // per request, measured under load).
    if wharf_telemetry::traces::exporting() {
        span.record("http.response.status_code", response.status().as_u16());
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    metrics::histogram!(
        "wharf_http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => response.status().as_u16().to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`: this process's metrics in the Prometheus text format, with the platform-wide
/// gauges (queues, workers, recorder backlog) read from NATS at scrape time. A gauge that cannot
/// be read keeps its last value; the scrape still answers.
pub async fn metrics(State(state): State<AppState>, principal: crate::auth::Principal) -> Response {
    if let Err(e) = principal.require(wharf_contract::Permission::OpsRead) {
        return e.into_response();
    }
    if let Err(e) = scrape(&state).await {
        tracing::warn!(error = %e, "metrics: could not read the queues");
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        wharf_telemetry::metrics::render(),
    )
        .into_response()
}

async fn scrape(state: &AppState) -> Result<(), wharf_bus::Error> {
    let workers = state.recent_workers().await?;
    metrics::gauge!("wharf_workers").set(workers.len() as f64);
    for name in queue_names(state, &workers).await? {
        for level in state.bus.queue_levels(&name).await? {
            let labels = [
                ("queue", name.clone()),
                ("priority", level.priority.as_str().to_owned()),
            ];
            metrics::gauge!("wharf_queue_waiting_tasks", &labels).set(level.waiting as f64);
            metrics::gauge!("wharf_queue_in_flight_tasks", &labels).set(level.in_flight as f64);
            metrics::gauge!("wharf_queue_oldest_task_age_seconds", &labels)
                .set(level.oldest_age_secs.unwrap_or(0.0));
        }
    }
    metrics::gauge!("wharf_recorder_pending_events")
        .set(state.bus.recorder_backlog().await? as f64);
    Ok(())
}
