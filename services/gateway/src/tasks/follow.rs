//! Following a task's events: for WebSocket subscribers and submitters, and over SSE
//! (`GET /api/v1/tasks/{id}/events`).

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use uuid::Uuid;
use wharf_contract::{SubmitTask, TaskEvent, TaskView, WsServerMessage};
use wharf_telemetry::TraceContext;

use super::*;
use crate::AppState;
use crate::auth::Principal;
use crate::problem::{ApiError, Segment};

/// A task of `principal`'s tenant's events as client messages: history first, then live,
/// ending after the terminal one; 404 when there is no such task in the tenant.
pub async fn follow(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<impl Stream<Item = WsServerMessage> + use<>, ApiError> {
    principal.require(wharf_contract::Permission::TasksRead)?;
    find_owned(state, principal, id).await?;
    let (_, events) = state.bus.follow(id).await?;
    Ok(client_messages(events))
}

/// Submits a task and follows it, for a WebSocket submitter. The subscription is taken before
/// anything is published, so the events all arrive live and no history is read. A key that
/// names a task already follows that task, history first.
pub async fn submit_and_follow(
    state: &AppState,
    principal: &Principal,
    req: SubmitTask,
    trace: TraceContext,
) -> Result<(TaskView, BoxStream<'static, WsServerMessage>), ApiError> {
    principal.require(wharf_contract::Permission::TasksSubmit)?;
    let agent = context(state, principal, &req, Origin::Client).await?;
    let mut task = prepare(state, principal, req, Origin::Client, agent.as_ref())?;
    task.trace_id = Some(trace.trace_id_hex());
    match admit(state, &mut task).await? {
        Admission::Existing(view) => {
            let events = follow(state, principal, view.id).await?;
            return Ok((*view, events.boxed()));
        }
        Admission::New { claimed } => within_cap(state, principal, claimed).await?,
    }
    let events = state.bus.follow_new(task.id).await?;
    let view = publish(state, &task, &trace).await?;
    Ok((view, client_messages(events).boxed()))
}

/// A task's events as client messages, ending with the terminal one.
fn client_messages(
    events: impl Stream<Item = Result<(u64, TaskEvent), wharf_bus::Error>> + Send + 'static,
) -> impl Stream<Item = WsServerMessage> {
    let messages = Box::pin(events.filter_map(|e| async move {
        match e {
            Ok((seq, event)) => Some(WsServerMessage::from_event(seq, event)),
            Err(e) => {
                tracing::warn!(error = %e, "skipping an unreadable event");
                None
            }
        }
    }));
    // End right after the terminal message, without waiting for another event.
    futures::stream::unfold((messages, false), |(mut messages, ended)| async move {
        if ended {
            return None;
        }
        let m = messages.next().await?;
        let ended = m.is_terminal();
        Some((m, (messages, ended)))
    })
}

/// `GET /api/v1/tasks/{id}/events`: Server-Sent Events, `event:` the message type, `id:` the
/// event's sequence, `data:` the message as JSON.
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    Segment(raw): Segment,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let id = parse_id(&raw)?;
    let messages = follow(&state, &principal, id).await?.boxed();
    // The stream ends after the task's terminal event, with the gateway, or when its
    // credential is revoked or expires: then with an `error` event that says so.
    let stopping = Box::pin(state.stopping.clone().cancelled_owned());
    let lapsed = Box::pin(state.auth.lapse(&principal));
    let messages =
        futures::stream::unfold(Some((messages, lapsed, stopping)), move |open| async move {
            let (mut messages, mut lapsed, mut stopping) = open?;
            tokio::select! {
                m = messages.next() => m.map(|m| (m, Some((messages, lapsed, stopping)))),
                refusal = &mut lapsed => Some((client_error(None, Some(id), refusal), None)),
                () = &mut stopping => None,
            }
        });
    let stream = messages.map(|m| {
        let seq = match &m {
            WsServerMessage::Accepted { seq, .. } => *seq,
            WsServerMessage::Started { seq, .. }
            | WsServerMessage::Progress { seq, .. }
            | WsServerMessage::CancelRequested { seq, .. }
            | WsServerMessage::Retrying { seq, .. }
            | WsServerMessage::Complete { seq, .. }
            | WsServerMessage::Error { seq, .. }
            | WsServerMessage::Cancelled { seq, .. } => Some(*seq),
            WsServerMessage::ClientError { .. } | WsServerMessage::SystemStatus(_) => None,
        };
        let mut event = Event::default()
            .event(m.type_name())
            .data(serde_json::to_string(&m).expect("a message serialises"));
        if let Some(seq) = seq {
            event = event.id(seq.to_string());
        }
        Ok(event)
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A refusal as the `error` message of the WebSocket protocol (and the `error` event of SSE).
pub fn client_error(
    reference: Option<String>,
    task_id: Option<Uuid>,
    e: ApiError,
) -> WsServerMessage {
    WsServerMessage::ClientError {
        code: e.0.code.as_str().to_owned(),
        message: e.0.detail.clone(),
        reference,
        task_id,
        problem: Some(e.0),
    }
}
