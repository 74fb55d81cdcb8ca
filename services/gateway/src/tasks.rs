//! `/api/v1/tasks`: submit, read, list, cancel, and follow a task's events over SSE.

use std::convert::Infallible;
use std::time::Duration;
use tracing::Instrument;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use uuid::Uuid;
use wharf_bus::Claim;
use wharf_contract::task::{TASK_VERSION, TaskState};
use wharf_contract::{
    DEFAULT_QUEUE, ErrorCode, EventKind, IDEMPOTENCY_KEY_HEADER, SubmitBatch, SubmitTask, Task,
    TaskBatch, TaskEvent, TaskList, TaskStatus, TaskView, WsServerMessage, valid_name,
};
use wharf_telemetry::TraceContext;

use crate::AppState;
use crate::auth::Principal;
use crate::catalog::Refusal;
use crate::problem::{ApiError, Segment};

/// Longest accepted idempotency key, session id.
const MAX_KEY_LEN: usize = 255;

/// Parses a JSON body, naming the failing field in the error.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // serde would read an array as a struct's fields in order; every body here is an object.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Ok(_) => ApiError::field(ErrorCode::InvalidField, "", "must be a JSON object"),
                Err(e) => ApiError::new(ErrorCode::MalformedBody, e.to_string()),
            },
        );
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut pointer = pointer_of(e.path());
        let inner = e.into_inner();
        if !inner.is_data() {
            // Not JSON at all, or cut short: there is no field to name.
            return ApiError::new(ErrorCode::MalformedBody, inner.to_string());
        }
        // serde reports a missing field at its parent; name the field itself.
        let message = inner.to_string();
        if let Some(field) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            pointer.push('/');
            pointer.push_str(&escape_pointer(field));
        }
        ApiError::field(ErrorCode::InvalidField, &pointer, message)
    })
}

/// An RFC 6901 JSON pointer for a deserialisation path.
fn pointer_of(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(format!("/{index}")),
            Segment::Map { key } => Some(format!("/{}", escape_pointer(key))),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Checks a submission against the limits and the catalog, then publishes it. Nothing is
/// published unless every check passed; the answer comes after JetStream stored the task.
///
/// A submission whose idempotency key already names a task gets that task instead, with 200
/// rather than 202 ([`admit`]).
pub async fn submit(
    state: &AppState,
    principal: &Principal,
    req: SubmitTask,
    origin: Origin,
    trace: TraceContext,
) -> Result<(StatusCode, TaskView), ApiError> {
    principal.require(wharf_contract::Permission::TasksSubmit)?;
    let agent = context(state, principal, &req, origin).await?;
    let mut event = prepare(state, principal, req, origin, agent.as_ref())?;
    match admit(state, &mut event).await? {
        Admission::Existing(view) => Ok((StatusCode::OK, *view)),
        Admission::New { claimed } => {
            within_cap(state, principal, claimed).await?;
            Ok((StatusCode::ACCEPTED, publish(state, &event, &trace).await?))
        }
    }
}

/// Counts one new task against the tenant's cap on unfinished tasks. A repeat of an accepted
/// submission (same idempotency key) is not new and is never refused by it. When refused, the
/// key this request claimed is given back, so a retry is not mistaken for one in flight.
async fn within_cap(
    state: &AppState,
    principal: &Principal,
    claimed: Option<(String, u64)>,
) -> Result<(), ApiError> {
    let counted = state
        .settings()
        .limits
        .admit_tasks(&state.store, principal.tenant(), 1)
        .await;
    if counted.is_err()
        && let Some((key, revision)) = claimed
    {
        let _ = state.bus.release_idempotency_key(&key, revision).await;
    }
    counted
}

/// What a submission's idempotency key says.
pub enum Admission {
    /// Publish the task: it has no key, or the key is now its own (`claimed`: the key and the
    /// revision of the entry this request created, should the request give up before
    /// publishing).
    New { claimed: Option<(String, u64)> },
    /// The key already names this task: answer with it, publish nothing.
    Existing(Box<TaskView>),
}

/// How long a claimed key whose task cannot be found yet counts as a request still in flight;
/// after that the claim is taken to be a failed request's and a new submission may take it over.
const CLAIM_IN_FLIGHT: Duration = Duration::from_secs(10);
/// How long a submission waits for the task of a key claimed by a request still in flight.
const WAIT_FOR_CLAIMED: Duration = Duration::from_secs(5);

/// Claims the submission's idempotency key, if it has one, across every gateway. A key that
/// names a task with the same tool, arguments and queue gives that task back; one that names
/// a different task is refused (409 `idempotency_key_reused`); one claimed by a request still
/// in flight is waited for, then refused (409 `idempotency_key_in_use`) if it takes too long.
///
/// A claim whose task cannot be found after [`CLAIM_IN_FLIGHT`] is taken over with the same
/// task id, so that should the first request's publish still land, JetStream's de-duplication
/// by message id merges the two into one task. A claim whose task was never queued
/// (`not_enqueued`) is taken over with a new id.
pub async fn admit(state: &AppState, event: &mut TaskEvent) -> Result<Admission, ApiError> {
    let EventKind::Submitted { task } = &mut event.kind else {
        unreachable!("prepare makes submitted events")
    };
    let Some(key) = &task.idempotency_key else {
        return Ok(Admission::New { claimed: None });
    };
    // Each tenant has keys of its own ('/' is not part of any tenant name).
    let key = &format!("{}/{key}", task.tenant);
    let (holder, claimed_at, revision) = match state.bus.claim_idempotency_key(key, task.id).await?
    {
        Claim::New { revision } => {
            return Ok(Admission::New {
                claimed: Some((key.clone(), revision)),
            });
        }
        Claim::Held {
            task_id,
            claimed_at,
            revision,
        } => (task_id, claimed_at, revision),
    };
    let in_use = || {
        ApiError::field(
            ErrorCode::IdempotencyKeyInUse,
            "/idempotency_key",
            format!("task {holder} is being submitted with this key; retry in a few seconds"),
        )
    };
    let waited = tokio::time::Instant::now();
    loop {
        if let Some(view) = find(state, holder).await? {
            let never_queued = view.status == TaskStatus::Failed
                && view
                    .error
                    .as_ref()
                    .is_some_and(|e| e.code == "not_enqueued");
            if never_queued {
                return if state
                    .bus
                    .take_over_idempotency_key(key, task.id, revision)
                    .await?
                {
                    Ok(Admission::New { claimed: None })
                } else {
                    Err(in_use())
                };
            }
            if view.tool == task.tool
                && view.arguments == task.arguments
                && view.queue == task.queue
            {
                return Ok(Admission::Existing(Box::new(view)));
            }
            return Err(ApiError::field(
                ErrorCode::IdempotencyKeyReused,
                "/idempotency_key",
                format!(
                    "task {holder} was submitted with this key and a different tool, arguments \
                     or queue"
                ),
            ));
        }
        let age = (chrono::Utc::now() - claimed_at)
            .to_std()
            .unwrap_or_default();
        if age > CLAIM_IN_FLIGHT {
            // Its request has not stored the task (it failed, or its gateway died): take it over
            // under the same id, so a publish of it that still lands is the same task.
            return if state
                .bus
                .take_over_idempotency_key(key, holder, revision)
                .await?
            {
                task.id = holder;
                event.task_id = holder;
                Ok(Admission::New { claimed: None })
            } else {
                Err(in_use())
            };
        }
        if waited.elapsed() > WAIT_FOR_CLAIMED {
            return Err(in_use());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Most tasks one batch may hold.
pub const MAX_BATCH: usize = 1000;

/// Idempotency keys that start with this are the gateway's own (dead-letter replays).
pub const REPLAY_KEY_PREFIX: &str = "replay:";

/// Who made a submission up: a client, or the gateway replaying a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Replay,
}

/// What a submission names that lives in the database: its session must be live, and its
/// agent (returned) must exist, both in the caller's tenant. A replay keeps the dead task's
/// session, live or not.
async fn context(
    state: &AppState,
    principal: &Principal,
    req: &SubmitTask,
    origin: Origin,
) -> Result<Option<wharf_contract::Agent>, ApiError> {
    if let Some(raw) = &req.session_id
        && origin == Origin::Client
    {
        let now = chrono::Utc::now();
        let live = match raw.parse::<Uuid>() {
            Ok(id) => state
                .store
                .session(principal.tenant(), id)
                .await?
                .filter(|s| s.deleted_at.is_none() && s.expires_at > now),
            Err(_) => None,
        };
        if live.is_none() {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                "/session_id",
                format!(
                    "no live session {raw:?} in this tenant (create one with POST \
                     /api/v1/sessions; a deleted or expired one takes no tasks)"
                ),
            ));
        }
    }
    let Some(name) = &req.agent else {
        return Ok(None);
    };
    let agent = if valid_name(name) {
        state.store.agent(principal.tenant(), name).await?
    } else {
        None
    };
    agent.map(Some).ok_or_else(|| {
        ApiError::field(
            ErrorCode::InvalidField,
            "/agent",
            format!("no agent {name:?} in this tenant (see GET /api/v1/agents)"),
        )
    })
}

/// Checks a submission and builds its `submitted` event (which holds the task). Publishes
/// nothing; errors name fields from the task's root (`/tool`, `/arguments/...`). Values the
/// request leaves out come from its agent, then its queue's defaults, then the gateway's.
fn prepare(
    state: &AppState,
    principal: &Principal,
    req: SubmitTask,
    origin: Origin,
    agent: Option<&wharf_contract::Agent>,
) -> Result<TaskEvent, ApiError> {
    if let Some(a) = agent
        && !a.allows(&req.tool)
    {
        return Err(ApiError::field(
            ErrorCode::ToolNotAllowed,
            "/tool",
            format!(
                "agent {:?} may use {} only, not {:?}",
                a.name,
                a.allowed_tools.join(", "),
                req.tool
            ),
        ));
    }
    if origin == Origin::Client
        && req
            .idempotency_key
            .as_deref()
            .is_some_and(|k| k.starts_with(REPLAY_KEY_PREFIX))
    {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/idempotency_key",
            format!(
                "keys starting with {REPLAY_KEY_PREFIX:?} are reserved for dead-letter replays"
            ),
        ));
    }
    let queue = req
        .queue
        .or_else(|| agent.and_then(|a| a.default_queue.clone()))
        .unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
    if !valid_name(&queue) {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/queue",
            "must be 1-64 letters, digits, '-' or '_'",
        ));
    }
    let settings = state.settings();
    let defaults = settings.queues.get(&queue);
    let timeout_secs = req
        .timeout_secs
        .or_else(|| agent.and_then(|a| a.timeout_secs))
        .or_else(|| defaults.and_then(|d| d.timeout_secs));
    if let Some(t) = req.timeout_secs
        && !(1..=86_400).contains(&t)
    {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/timeout_secs",
            "must be between 1 and 86400",
        ));
    }
    let max_attempts = req
        .max_attempts
        .or_else(|| agent.and_then(|a| a.max_attempts))
        .or_else(|| defaults.and_then(|d| d.max_attempts))
        .unwrap_or(state.config.default_max_attempts);
    if !(1..=100).contains(&max_attempts) {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/max_attempts",
            "must be between 1 and 100",
        ));
    }
    for (pointer, value) in [
        ("/idempotency_key", &req.idempotency_key),
        ("/session_id", &req.session_id),
    ] {
        if let Some(v) = value
            && (v.is_empty() || v.chars().count() > MAX_KEY_LEN)
        {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                pointer,
                format!("must be 1 to {MAX_KEY_LEN} characters"),
            ));
        }
    }
    /// The furthest ahead a task may be delayed.
    const MAX_DELAY_SECS: u64 = 365 * 24 * 3600;
    let now = chrono::Utc::now();
    let run_at = match (req.run_at, req.delay_secs) {
        (Some(_), Some(_)) => {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                "/delay_secs",
                "give run_at or delay_secs, not both",
            ));
        }
        (None, Some(d)) if !(1..=MAX_DELAY_SECS).contains(&d) => {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                "/delay_secs",
                format!("must be between 1 and {MAX_DELAY_SECS}"),
            ));
        }
        (None, Some(d)) => Some(now + chrono::Duration::seconds(d as i64)),
        (Some(t), None) if t > now + chrono::Duration::seconds(MAX_DELAY_SECS as i64) => {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                "/run_at",
                "must be at most a year from now",
            ));
        }
        // A time already past runs the task at once.
        (Some(t), None) => (t > now).then_some(t),
        (None, None) => None,
    };
    match state.catalog.check(&req.tool, &req.arguments) {
        Ok(()) => {}
        Err(Refusal::UnknownTool { suggestions }) => {
            let hint = if suggestions.is_empty() {
                "see GET /api/v1/tools".to_owned()
            } else {
                format!("did you mean {}?", suggestions.join(", "))
            };
            let mut e = ApiError::field(
                ErrorCode::UnknownTool,
                "/tool",
                format!("no tool named {:?}; {hint}", req.tool),
            );
            e.0.suggestions = suggestions;
            return Err(e);
        }
        Err(Refusal::InvalidArguments(errors)) => {
            let first = &errors[0];
            let mut e = ApiError::new(
                ErrorCode::InvalidArguments,
                format!("{}: {}", first.pointer, first.detail),
            );
            e.0.errors = errors;
            return Err(e);
        }
    }

    let task = Task {
        v: TASK_VERSION,
        id: Uuid::now_v7(),
        tool: req.tool,
        arguments: req.arguments,
        queue,
        timeout_secs,
        max_attempts,
        idempotency_key: req.idempotency_key,
        session_id: req.session_id,
        metadata: req.metadata.unwrap_or_default(),
        submitted_at: now,
        run_at,
        retry: defaults.and_then(|d| d.retry),
        priority: req
            .priority
            .or_else(|| agent.and_then(|a| a.priority))
            .or_else(|| defaults.and_then(|d| d.priority))
            .unwrap_or_default(),
        tenant: principal.tenant().to_owned(),
        agent: agent.map(|a| a.name.clone()),
    };
    let event = TaskEvent::new(
        task.id,
        0,
        EventKind::Submitted {
            task: Box::new(task),
        },
    );
    fits_in_a_message(state, &event)?;
    Ok(event)
}

/// Refuses (413 `body_too_large`) a task whose `submitted` event, the largest message it makes,
/// would not fit in one NATS message (`max_payload`, with room to spare for headers and its
/// dead letter): a body within `max_body_bytes` may still hold one, and publishing it would
/// fail on every try.
fn fits_in_a_message(state: &AppState, event: &TaskEvent) -> Result<(), ApiError> {
    use wharf_bus::{MESSAGE_HEADROOM, encoded_len};
    let limit = state.bus.body_room();
    let size = encoded_len(event);
    if size <= limit {
        return Ok(());
    }
    let EventKind::Submitted { task } = &event.kind else {
        unreachable!("called with a submitted event")
    };
    // Name the larger of the two parts a client controls in bulk.
    let pointer = if encoded_len(&task.metadata) > encoded_len(&task.arguments) {
        "/metadata"
    } else {
        "/arguments"
    };
    let detail = format!(
        "the task is {size} bytes once encoded; a task travels in one NATS message, which holds \
         at most {limit} bytes here (the server's max_payload of {} bytes, less {MESSAGE_HEADROOM} \
         for headers): send less, or raise max_payload in nats-server's configuration",
        state.bus.max_payload()
    );
    let mut e = ApiError::new(ErrorCode::BodyTooLarge, format!("{pointer}: {detail}"));
    e.0.errors.push(wharf_contract::FieldError {
        pointer: pointer.to_owned(),
        detail,
    });
    Err(e)
}

/// Publishes a prepared task and its `submitted` event; returns once JetStream stored both.
async fn publish(
    state: &AppState,
    event: &TaskEvent,
    trace: &TraceContext,
) -> Result<TaskView, wharf_bus::Error> {
    let EventKind::Submitted { task } = &event.kind else {
        unreachable!("prepare makes submitted events")
    };
    // When spans are exported, the publish is a span of its own (a child of the request's); the
    // worker's attempt hangs off it through the traceparent the task carries.
    let span = if wharf_telemetry::traces::exporting() {
        tracing::info_span!("publish", otel.name = "publish task", otel.kind = "producer", task_id = %task.id, queue = %task.queue)
    } else {
        tracing::Span::none()
    };
    let trace = &wharf_telemetry::traces::context_of(&span, &trace.child());
    state
        .bus
        .submit(task, event, Some(&trace.header()))
        .instrument(span)
        .await?;
    metrics::counter!(
        "wharf_tasks_submitted_total",
        "queue" => task.queue.clone(),
        "tool" => task.tool.clone(),
        "priority" => task.priority.as_str(),
    )
    .increment(1);
    tracing::info!(task_id = %task.id, tool = %task.tool, queue = %task.queue, trace_id = %trace.trace_id_hex(), "task accepted");
    Ok(TaskState::of_event(0, event).view)
}

/// The trace context of an incoming request: its exported span's when spans are exported (a
/// child of the caller's `traceparent`, see `ops::measure`), else a child of the caller's, or a
/// new trace.
pub(crate) fn trace_of(headers: &HeaderMap) -> TraceContext {
    let fallback = headers
        .get(wharf_contract::TRACEPARENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse)
        .map_or_else(TraceContext::new_root, |t| t.child());
    wharf_telemetry::traces::context_of(&tracing::Span::current(), &fallback)
}

/// `POST /api/v1/tasks`
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // Before the body is read: a caller who may not submit learns nothing else.
    principal.require(wharf_contract::Permission::TasksSubmit)?;
    let body = json_body(&state, &headers, body)?;
    let mut req: SubmitTask = parse_json(&body)?;
    if let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) {
        let key = value.to_str().map_err(|_| {
            ApiError::field(
                ErrorCode::InvalidField,
                "/idempotency_key",
                "the Idempotency-Key header must be visible ASCII",
            )
        })?;
        if req.idempotency_key.as_deref().is_some_and(|k| k != key) {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                "/idempotency_key",
                "differs from the Idempotency-Key header; send one or the other",
            ));
        }
        req.idempotency_key = Some(key.to_owned());
    }
    let (status, view) =
        submit(&state, &principal, req, Origin::Client, trace_of(&headers)).await?;
    let location = format!("/api/v1/tasks/{}", view.id);
    Ok((status, [(header::LOCATION, location)], Json(view)).into_response())
}

/// `POST /api/v1/tasks/batch`: every task is checked before any is published, so one bad task
/// refuses the whole batch (the problem names it, e.g. `/tasks/3/tool`) and nothing is
/// written. Then all are published at once; 202 means every one of them is stored. Should NATS
/// fail part-way, the answer is 503: its `errors` name the tasks that may not have been stored,
/// with their ids, and its detail lists the ids of those that were (they run).
pub async fn create_batch(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    principal.require(wharf_contract::Permission::TasksSubmit)?;
    let body = json_body(&state, &headers, body)?;
    let req: SubmitBatch = parse_json(&body)?;
    if req.tasks.is_empty() || req.tasks.len() > MAX_BATCH {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/tasks",
            format!("must hold 1 to {MAX_BATCH} tasks"),
        ));
    }
    let mut events = Vec::with_capacity(req.tasks.len());
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
        events.push(
            prepare(&state, &principal, task, Origin::Client, agent.as_ref()).map_err(within)?,
        );
    }
    // Keys already used give their tasks back in place; only the others are published.
    let admitted = futures::future::join_all(events.iter_mut().map(|e| admit(&state, e))).await;
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
    let published = futures::future::join_all(events.iter().zip(existing).map(|(e, existing)| {
        let trace = trace.child();
        let state = &state;
        async move {
            match existing {
                Some(view) => Ok(view),
                None => publish(state, e, &trace).await,
            }
        }
    }))
    .await;
    let mut tasks = Vec::with_capacity(published.len());
    let mut unsure = Vec::new();
    for (i, (p, event)) in published.into_iter().zip(&events).enumerate() {
        match p {
            Ok(view) => tasks.push(view),
            // An error does not prove the task was not stored (its ack may be what was lost):
            // name the id so the client can look before submitting it again.
            Err(e) => unsure.push(wharf_contract::FieldError {
                pointer: format!("/tasks/{i}"),
                detail: format!(
                    "task {} may not have been stored ({e}); check GET /api/v1/tasks/{} \
                     before submitting it again",
                    event.task_id, event.task_id
                ),
            }),
        }
    }
    if !unsure.is_empty() {
        let stored: Vec<String> = tasks.iter().map(|t| t.id.to_string()).collect();
        let mut e = ApiError::unavailable(format!(
            "{} of {} tasks may not have been stored (named in errors); these were and will \
             run: {}",
            unsure.len(),
            unsure.len() + tasks.len(),
            if stored.is_empty() {
                "none".to_owned()
            } else {
                stored.join(", ")
            }
        ));
        e.0.errors = unsure;
        return Err(e);
    }
    Ok((StatusCode::ACCEPTED, Json(TaskBatch { tasks })).into_response())
}

/// The body of a JSON request: within the size limit and, when a media type is given, JSON.
pub(crate) fn json_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::BodyTooLarge,
                format!(
                    "the body is larger than {} bytes",
                    state.config.max_body_bytes
                ),
            )
        } else {
            ApiError::new(ErrorCode::MalformedBody, e.body_text())
        }
    })?;
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("send the body as application/json, not {essence:?}"),
            ));
        }
    }
    Ok(body)
}

pub(crate) fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::new(ErrorCode::TaskNotFound, format!("{raw:?} is not a task id")))
}

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
async fn find_latest(state: &AppState, id: Uuid) -> Result<Option<TaskView>, ApiError> {
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
    limit: Option<String>,
    cursor: Option<String>,
}

pub(crate) fn query_error(param: &str, detail: impl Into<String>) -> ApiError {
    let detail = detail.into();
    let mut e = ApiError::new(ErrorCode::InvalidQuery, format!("{param}: {detail}"));
    e.0.errors.push(wharf_contract::FieldError {
        pointer: format!("/query/{param}"),
        detail,
    });
    e
}

/// The query parameters of a request, or 400 `invalid_query` naming the one at fault.
pub(crate) fn read_query<T>(
    query: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    query.map(|Query(q)| q).map_err(|e| {
        let text = e.body_text();
        // serde names an unknown parameter as "unknown field `x`"; point at it.
        match text
            .split("unknown field `")
            .nth(1)
            .and_then(|r| r.split('`').next())
        {
            Some(param) => query_error(param, text.clone()),
            None => ApiError::new(ErrorCode::InvalidQuery, text),
        }
    })
}

/// The query of a list that takes no parameters: any parameter is refused (400 naming it), as
/// every list refuses those it does not know.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoQuery {}

/// A page size from the `limit` query parameter: `default` when absent, else 1 to `max`.
pub(crate) fn page_limit(raw: Option<&str>, default: u64, max: u64) -> Result<u64, ApiError> {
    match raw {
        None => Ok(default),
        Some(l) => l
            .parse::<u64>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| query_error("limit", format!("must be a number from 1 to {max}"))),
    }
}

/// `GET /api/v1/tasks`
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TaskList>, ApiError> {
    principal.require(wharf_contract::Permission::TasksRead)?;
    let q = read_query(query)?;
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
    let limit = page_limit(q.limit.as_deref(), 50, 500)?;
    let before = q
        .cursor
        .map(|c| c.parse::<Uuid>())
        .transpose()
        .map_err(|_| query_error("cursor", "not a cursor from a previous page"))?;
    // One more than asked tells whether another page exists.
    let filter = wharf_store::TaskFilter {
        status,
        queue: q.queue,
        session_id: q.session_id,
        priority,
        tenant: Some(principal.tenant().to_owned()),
        agent: q.agent,
        unfinished: false,
        before,
        limit: limit + 1,
    };
    let mut tasks = state.store.tasks(&filter).await?;
    let next_cursor = if tasks.len() as u64 > limit {
        tasks.truncate(limit as usize);
        tasks.last().map(|t| t.id.to_string())
    } else {
        None
    };
    Ok(Json(TaskList { tasks, next_cursor }))
}

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
            .publish_event(&view.tenant, &event, &format!("{id}:terminal"), None)
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
        .publish_event(
            &view.tenant,
            &event,
            &format!("{id}:cancel_requested"),
            None,
        )
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
    let mut event = prepare(state, principal, req, Origin::Client, agent.as_ref())?;
    match admit(state, &mut event).await? {
        Admission::Existing(view) => {
            let events = follow(state, principal, view.id).await?;
            return Ok((*view, events.boxed()));
        }
        Admission::New { claimed } => within_cap(state, principal, claimed).await?,
    }
    let events = state.bus.follow_new(event.task_id).await?;
    let view = publish(state, &event, &trace).await?;
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
    let messages = futures::stream::unfold(
        Some((messages, lapsed, stopping)),
        move |open| async move {
            let (mut messages, mut lapsed, mut stopping) = open?;
            tokio::select! {
                m = messages.next() => m.map(|m| (m, Some((messages, lapsed, stopping)))),
                refusal = &mut lapsed => Some((crate::ws::client_error(None, Some(id), refusal), None)),
                () = &mut stopping => None,
            }
        },
    );
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
