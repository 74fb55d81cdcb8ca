//! Submitting one task: what it names must exist, its fields must hold, its idempotency key is
//! claimed across gateways, then it is published and answered 202 (`POST /api/v1/tasks`).

use std::time::Duration;
use tracing::Instrument;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;
use wharf_bus::Claim;
use wharf_contract::NAME_RULE;
use wharf_contract::TaskState;
use wharf_contract::rules::{
    DELAY_SECS, KEY_CHARS, MAX_ATTEMPTS, TIMEOUT_SECS, chars_within, range_rule,
};
use wharf_contract::task::TASK_VERSION;
use wharf_contract::{
    DEFAULT_QUEUE, ErrorCode, IDEMPOTENCY_KEY_HEADER, SubmitTask, Task, TaskStatus, TaskView,
    valid_name,
};
use wharf_telemetry::TraceContext;

use super::*;
use crate::AppState;
use crate::auth::Principal;
use crate::catalog::Refusal;
use crate::http::JsonBody;
use crate::problem::ApiError;

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
    let mut task = prepare(state, principal, req, origin, agent.as_ref())?;
    task.trace_id = Some(trace.trace_id_hex());
    match admit(state, &mut task).await? {
        Admission::Existing(view) => Ok((StatusCode::OK, *view)),
        Admission::New { claimed } => {
            within_cap(state, principal, claimed).await?;
            Ok((StatusCode::ACCEPTED, publish(state, &task, &trace).await?))
        }
    }
}

/// Counts one new task against the tenant's cap on unfinished tasks. A repeat of an accepted
/// submission (same idempotency key) is not new and is never refused by it. When refused, the
/// key this request claimed is given back, so a retry is not mistaken for one in flight.
pub(super) async fn within_cap(
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
        // Boxed, being rare: inline, it would make every submission's future larger.
        let _ = Box::pin(state.bus.release_idempotency_key(&key, revision)).await;
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
pub async fn admit(state: &AppState, task: &mut Task) -> Result<Admission, ApiError> {
    let Some(key) = &task.idempotency_key else {
        return Ok(Admission::New { claimed: None });
    };
    // Each tenant has keys of its own ('/' is not part of any tenant name).
    let key = format!("{}/{key}", task.tenant);
    // Boxed: only a submission with a key waits on the claim, and inline its future would
    // make every submission's several kilobytes larger (copied by each layer of the router).
    Box::pin(claim(state, task, &key)).await
}

/// [`admit`] for a submission with an idempotency key, `key` (the tenant's).
async fn claim(state: &AppState, task: &mut Task, key: &str) -> Result<Admission, ApiError> {
    let (holder, claimed_at, revision) = match state.bus.claim_idempotency_key(key, task.id).await?
    {
        Claim::New { revision } => {
            return Ok(Admission::New {
                claimed: Some((key.to_owned(), revision)),
            });
        }
        Claim::Held {
            task_id,
            claimed_at,
            revision,
        } => (task_id, claimed_at, revision),
    };
    let waited = tokio::time::Instant::now();
    loop {
        if let Some(view) = find(state, holder).await? {
            return found(state, key, task, view, revision).await;
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
                Ok(Admission::New { claimed: None })
            } else {
                Err(in_use(holder))
            };
        }
        if waited.elapsed() > WAIT_FOR_CLAIMED {
            return Err(in_use(holder));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a key held by a task already stored (`view`) means for `task`: that task when it is
/// the same submission, a refusal when it is another, a new task when it was never queued.
async fn found(
    state: &AppState,
    key: &str,
    task: &Task,
    view: TaskView,
    revision: u64,
) -> Result<Admission, ApiError> {
    let holder = view.id;
    let never_queued = view.status == TaskStatus::Failed
        && view
            .error
            .as_ref()
            .is_some_and(|e| e.is(wharf_contract::TaskErrorCode::NotEnqueued));
    if never_queued {
        return if state
            .bus
            .take_over_idempotency_key(key, task.id, revision)
            .await?
        {
            Ok(Admission::New { claimed: None })
        } else {
            Err(in_use(holder))
        };
    }
    // The stored copy (the view, once recorded) has U+FFFD where the arguments had a NUL
    // character; the same arguments sent again must still match it.
    let same_arguments = view.arguments == task.arguments
        || view.arguments == wharf_store::stored_form(&task.arguments);
    if view.tool == task.tool && same_arguments && view.queue == task.queue {
        return Ok(Admission::Existing(Box::new(view)));
    }
    Err(ApiError::field(
        ErrorCode::IdempotencyKeyReused,
        "/idempotency_key",
        format!(
            "task {holder} was submitted with this key and a different tool, arguments or queue"
        ),
    ))
}

/// The refusal of a key whose task is still being submitted.
fn in_use(holder: Uuid) -> ApiError {
    ApiError::field(
        ErrorCode::IdempotencyKeyInUse,
        "/idempotency_key",
        format!("task {holder} is being submitted with this key; retry in a few seconds"),
    )
}

use wharf_contract::rules::REPLAY_KEY_PREFIX;

/// Who made a submission up: a client, or the gateway replaying a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Replay,
}

/// What a submission names that lives in the database: its session must be live, and its
/// agent (returned) must exist, both in the caller's tenant. A replay keeps the dead task's
/// session, live or not.
pub(super) async fn context(
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
            // The reads are boxed: inline, their futures would make every submission's
            // several kilobytes larger, named session or not.
            Ok(id) => Box::pin(state.store.session(principal.tenant(), id))
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
        Box::pin(state.store.agent(principal.tenant(), name)).await?
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

/// Checks a submission and builds its task. Publishes nothing; errors name fields from the
/// task's root (`/tool`, `/arguments/...`). Values the request leaves out come from its agent,
/// then its queue's defaults, then the gateway's.
pub(super) fn prepare(
    state: &AppState,
    principal: &Principal,
    req: SubmitTask,
    origin: Origin,
    agent: Option<&wharf_contract::Agent>,
) -> Result<Task, ApiError> {
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
    check_reserved_key(&req, origin)?;
    let queue = req
        .queue
        .clone()
        .or_else(|| agent.and_then(|a| a.default_queue.clone()))
        .unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
    if !valid_name(&queue) {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/queue",
            NAME_RULE,
        ));
    }
    let settings = state.settings();
    let defaults = settings.queues.get(&queue);
    let (timeout_secs, max_attempts) = limits_of(state, &req, agent, defaults)?;
    check_key_lengths(&req)?;
    let now = chrono::Utc::now();
    let run_at = run_at_of(&req, now)?;
    check_tool(state, &req)?;
    let task = Task {
        // The caller sets it: it holds the request's trace.
        trace_id: None,
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
        callback: crate::callbacks::callback_of(state, principal, req.callback, agent)?,
    };
    fits_in_a_message(state, &task)?;
    Ok(task)
}

/// A client's idempotency key may not take the prefix of the gateway's own replays.
fn check_reserved_key(req: &SubmitTask, origin: Origin) -> Result<(), ApiError> {
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
    Ok(())
}

/// The idempotency key and session id: [`KEY_CHARS`] characters.
fn check_key_lengths(req: &SubmitTask) -> Result<(), ApiError> {
    for (pointer, value) in [
        ("/idempotency_key", &req.idempotency_key),
        ("/session_id", &req.session_id),
    ] {
        if let Some(v) = value
            && !chars_within(v, &KEY_CHARS)
        {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                pointer,
                wharf_contract::rules::chars_rule(&KEY_CHARS),
            ));
        }
    }
    Ok(())
}

/// The task's `timeout_secs` and `max_attempts`: the request's, else its agent's, else its
/// queue's, else (attempts only) the gateway's; a value the request gives must be in range.
fn limits_of(
    state: &AppState,
    req: &SubmitTask,
    agent: Option<&wharf_contract::Agent>,
    defaults: Option<&crate::QueueDefaults>,
) -> Result<(Option<u64>, u32), ApiError> {
    if let Some(t) = req.timeout_secs
        && !TIMEOUT_SECS.contains(&t)
    {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/timeout_secs",
            range_rule(&TIMEOUT_SECS),
        ));
    }
    let timeout_secs = req
        .timeout_secs
        .or_else(|| agent.and_then(|a| a.timeout_secs))
        .or_else(|| defaults.and_then(|d| d.timeout_secs));
    let max_attempts = req
        .max_attempts
        .or_else(|| agent.and_then(|a| a.max_attempts))
        .or_else(|| defaults.and_then(|d| d.max_attempts))
        .unwrap_or(state.config.default_max_attempts);
    if !MAX_ATTEMPTS.contains(&max_attempts) {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/max_attempts",
            range_rule(&MAX_ATTEMPTS),
        ));
    }
    Ok((timeout_secs, max_attempts))
}

/// When the task may start: `run_at`, or `delay_secs` from `now` (not both), at most a year
/// ahead; `None` for at once (a `run_at` already past included).
fn run_at_of(
    req: &SubmitTask,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    let bad =
        |pointer: &str, why: String| Err(ApiError::field(ErrorCode::InvalidField, pointer, why));
    match (req.run_at, req.delay_secs) {
        (Some(_), Some(_)) => bad("/delay_secs", "give run_at or delay_secs, not both".into()),
        (None, Some(d)) if !DELAY_SECS.contains(&d) => bad("/delay_secs", range_rule(&DELAY_SECS)),
        (None, Some(d)) => Ok(Some(now + chrono::Duration::seconds(d as i64))),
        (Some(t), None) if t > now + chrono::Duration::seconds(*DELAY_SECS.end() as i64) => {
            bad("/run_at", "must be at most a year from now".into())
        }
        // A time already past runs the task at once.
        (Some(t), None) => Ok((t > now).then_some(t)),
        (None, None) => Ok(None),
    }
}

/// The tool must be in the catalog (else 422 with close names) and the arguments must pass
/// its `inputSchema` (else 422, a pointer per failure).
fn check_tool(state: &AppState, req: &SubmitTask) -> Result<(), ApiError> {
    match state.catalog.check(&req.tool, &req.arguments) {
        Ok(()) => Ok(()),
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
            Err(e)
        }
        Err(Refusal::InvalidArguments(errors)) => {
            let first = &errors[0];
            let mut e = ApiError::new(
                ErrorCode::InvalidArguments,
                format!("{}: {}", first.pointer, first.detail),
            );
            e.0.errors = errors;
            Err(e)
        }
    }
}

/// Refuses (413 `body_too_large`) a task whose `submitted` event, the largest message it makes,
/// would not fit in one NATS message (`max_payload`, with room to spare for headers and its
/// dead letter): a body within `max_body_bytes` may still hold one, and publishing it would
/// fail on every try.
fn fits_in_a_message(state: &AppState, task: &Task) -> Result<(), ApiError> {
    use wharf_bus::{MESSAGE_HEADROOM, encoded_len};
    let limit = state.bus.body_room();
    let size = encoded_len(&wharf_contract::event::Submitted::of(task));
    if size <= limit {
        return Ok(());
    }
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
    Err(ApiError::field(ErrorCode::BodyTooLarge, pointer, detail))
}

/// Publishes a prepared task and its `submitted` event; returns once JetStream stored both.
pub(super) async fn publish(
    state: &AppState,
    task: &Task,
    trace: &TraceContext,
) -> Result<TaskView, wharf_bus::Error> {
    // When spans are exported, the publish is a span of its own (a child of the request's); the
    // worker's attempt hangs off it through the traceparent the task carries.
    let span = if wharf_telemetry::traces::exporting() {
        tracing::info_span!("publish", otel.name = "publish task", otel.kind = "producer", task_id = %task.id, queue = %task.queue)
    } else {
        tracing::Span::none()
    };
    let trace = &wharf_telemetry::traces::context_of(&span, &trace.child());
    // A trace begun here and exported nowhere travels as the task's `trace_id` only: the
    // worker and the recorder continue it from there (`TraceContext::continuing`).
    let traceparent = trace.worth_sending().then(|| trace.header());
    // Boxed: the publish's future is most of a submission's, which the router's layers would
    // otherwise copy whole as they take the request through.
    Box::pin(
        state
            .bus
            .submit(task, traceparent.as_deref())
            .instrument(span),
    )
    .await?;
    metrics::counter!(
        "wharf_tasks_submitted_total",
        "queue" => task.queue.clone(),
        "tool" => task.tool.clone(),
        "priority" => task.priority.as_str(),
    )
    .increment(1);
    // Debug, not info: a line per task was a tenth of the gateway's CPU under load, and the
    // task's history, its audit entry, the metrics and its trace already say it was accepted.
    tracing::debug!(task_id = %task.id, tool = %task.tool, queue = %task.queue, trace_id = %trace.trace_id_hex(), "task accepted");
    Ok(TaskState::of_submitted(task).view)
}

/// Takes an `Idempotency-Key` header (HTTP's, or a NATS request's) into a submission: visible
/// ASCII and spaces, as documented (HTTP also lets a tab through a header's value), and equal
/// to the body's key when both are sent.
pub fn idempotency_header(req: &mut SubmitTask, value: &[u8]) -> Result<(), ApiError> {
    let key = value
        .iter()
        .all(|b| (0x20..0x7f).contains(b))
        .then(|| String::from_utf8_lossy(value).into_owned())
        .ok_or_else(|| {
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
    req.idempotency_key = Some(key);
    Ok(())
}

/// `POST /api/v1/tasks`
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    // Before the body is read: a caller who may not submit learns nothing else.
    principal.require(wharf_contract::Permission::TasksSubmit)?;
    let mut req: SubmitTask = body.parse()?;
    if let Some(value) = headers.get(IDEMPOTENCY_KEY_HEADER) {
        idempotency_header(&mut req, value.as_bytes())?;
    }
    let (status, view) =
        submit(&state, &principal, req, Origin::Client, trace_of(&headers)).await?;
    let location = format!("/api/v1/tasks/{}", view.id);
    Ok((status, [(header::LOCATION, location)], Json(view)).into_response())
}

#[cfg(test)]
mod sizes {
    fn size_of_return<A, B, C, D, F: std::future::Future>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Each layer of the router moves the handler's future whole as it takes a request through
    /// (a memmove per layer, per request). What only some submissions wait on (a session or an
    /// agent read, an idempotency key's claim, the cap's count, a failed publish) is boxed
    /// where it is awaited; inlining one of them puts its whole state into every request's.
    #[test]
    fn the_submit_handler_future_stays_small() {
        let size = size_of_return(super::create);
        assert!(
            size <= 2560,
            "the submit handler's future grew to {size} bytes"
        );
    }
}
