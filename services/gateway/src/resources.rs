//! `/api/v1/sessions`, `/api/v1/agents` and the tools routes: the catalog with filters, and
//! `POST /api/v1/tools/{name}/call`, which runs a tool through the queue and waits for it.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use uuid::Uuid;
use wharf_contract::{
    Agent, AgentList, AgentSpec, CallTool, CreateSession, DeletedSession, ErrorCode, Permission,
    Session, SessionList, SubmitTask, ToolList, WsServerMessage, valid_name,
};
use wharf_store::AgentWrite;

use crate::AppState;
use crate::auth::Principal;
use crate::http::{JsonBody, NoQuery, Page, PageQuery, QueryParams, query_error};
use crate::problem::{ApiError, Segment};
use crate::tasks;

/// Longest and shortest life of a session, in seconds.
pub(crate) const MIN_SESSION_TTL: u64 = 60;
pub(crate) const MAX_SESSION_TTL: u64 = 30 * 24 * 3600;

fn no_session(raw: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no session {raw}"))
}

/// `POST /api/v1/sessions`
pub async fn create_session(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(Permission::SessionsWrite)?;
    let req: CreateSession = body.parse()?;
    if let Some(n) = &req.name
        && (n.is_empty() || n.chars().count() > 255)
    {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/name",
            "must be 1 to 255 characters",
        ));
    }
    let ttl = req
        .ttl_secs
        .unwrap_or(state.settings().session_ttl.as_secs());
    if !(MIN_SESSION_TTL..=MAX_SESSION_TTL).contains(&ttl) {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/ttl_secs",
            format!("must be between {MIN_SESSION_TTL} and {MAX_SESSION_TTL}"),
        ));
    }
    let now = chrono::Utc::now();
    let session = Session {
        id: Uuid::now_v7(),
        tenant: principal.tenant().to_owned(),
        name: req.name,
        created_at: now,
        expires_at: now + chrono::Duration::seconds(ttl as i64),
        created_by: principal.actor().to_owned(),
        metadata: req.metadata.unwrap_or_default(),
        deleted_at: None,
    };
    state.store.create_session(&session).await?;
    let location = format!("/api/v1/sessions/{}", session.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(session),
    )
        .into_response())
}

/// `GET /api/v1/sessions`: the tenant's live sessions, newest first.
pub async fn list_sessions(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams<PageQuery>,
) -> Result<Json<SessionList>, ApiError> {
    principal.require(Permission::SessionsRead)?;
    let q = query.read()?;
    let page = Page::<Uuid>::read(q.limit.as_deref(), q.cursor.as_deref(), 50, 500)?;
    let mut sessions = state
        .store
        .sessions(principal.tenant(), page.after, page.limit + 1)
        .await?;
    let next_cursor = page.close(&mut sessions, |s| Some(s.id.to_string()));
    Ok(Json(SessionList {
        sessions,
        next_cursor,
    }))
}

/// `GET /api/v1/sessions/{id}`: live, expired or deleted.
pub async fn get_session(
    State(state): State<AppState>,
    principal: Principal,
    Segment(raw): Segment,
) -> Result<Json<Session>, ApiError> {
    principal.require(Permission::SessionsRead)?;
    let id: Uuid = raw.parse().map_err(|_| no_session(&raw))?;
    state
        .store
        .session(principal.tenant(), id)
        .await?
        .map(Json)
        .ok_or_else(|| no_session(&raw))
}

/// `DELETE /api/v1/sessions/{id}`: the session takes no more tasks, and its queued and running
/// ones are cancelled.
pub async fn delete_session(
    State(state): State<AppState>,
    principal: Principal,
    Segment(raw): Segment,
) -> Result<Json<DeletedSession>, ApiError> {
    principal.require(Permission::SessionsWrite)?;
    let id: Uuid = raw.parse().map_err(|_| no_session(&raw))?;
    let Some(session) = state.store.delete_session(principal.tenant(), id).await? else {
        return Err(no_session(&raw));
    };
    // Cancelling is the session owner's right here, whatever else the caller may do.
    let canceller = Principal::new(
        principal.actor().to_owned(),
        principal.tenant().to_owned(),
        Vec::new(),
        crate::auth::Permissions::of(&[Permission::TasksCancel]),
    );
    let unfinished = state
        .store
        .tasks(&wharf_store::TaskFilter {
            session_id: Some(id.to_string()),
            tenant: Some(principal.tenant().to_owned()),
            unfinished: true,
            limit: 100_000,
            ..Default::default()
        })
        .await?;
    let mut cancelled = Vec::new();
    for task in unfinished {
        match tasks::request_cancel(&state, &canceller, task.id).await {
            Ok(_) => cancelled.push(task.id),
            // It ended meanwhile.
            Err(e) if e.0.code == ErrorCode::TaskFinished => {}
            Err(e) => return Err(e),
        }
    }
    tracing::info!(session = %id, cancelled = cancelled.len(), by = %principal.actor(), "session deleted");
    Ok(Json(DeletedSession { session, cancelled }))
}

fn no_agent(name: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no agent {name:?}"))
}

/// Checks an agent's spec; `name` is the agent's.
fn check_agent(name: &str, spec: &AgentSpec) -> Result<(), ApiError> {
    let bad = |pointer: &str, detail: String| {
        Err(ApiError::field(ErrorCode::InvalidField, pointer, detail))
    };
    if !valid_name(name) {
        return bad("/name", "must be 1-64 letters, digits, '-' or '_'".into());
    }
    if spec.allowed_tools.is_empty() || spec.allowed_tools.len() > 1000 {
        return bad(
            "/allowed_tools",
            "must list 1 to 1000 tools or patterns".into(),
        );
    }
    for (i, pattern) in spec.allowed_tools.iter().enumerate() {
        // The only patterns are `server.*` and `*`: a tool name with other wildcard-looking
        // characters (`demo.>`, `demo.**`, `demo.ec*`) would be taken literally and match
        // nothing, so it is refused rather than stored.
        let wildcard = |c: char| matches!(c, '*' | '>' | '?' | '[' | ']' | '{' | '}');
        let ok = pattern == "*"
            || match pattern.split_once('.') {
                Some((server, "*")) => valid_name(server),
                Some((server, tool)) => {
                    valid_name(server)
                        && !tool.is_empty()
                        && tool.len() <= 128
                        && !tool
                            .contains(|c: char| wildcard(c) || c.is_whitespace() || c.is_control())
                }
                None => false,
            };
        if !ok {
            return bad(
                &format!("/allowed_tools/{i}"),
                format!(
                    "{pattern:?} is not a tool (server.tool), a server's tools (server.*) or \
                     all tools (*); no other pattern is understood"
                ),
            );
        }
    }
    if let Some(q) = &spec.default_queue
        && !valid_name(q)
    {
        return bad(
            "/default_queue",
            "must be 1-64 letters, digits, '-' or '_'".into(),
        );
    }
    if spec.max_attempts.is_some_and(|a| !(1..=100).contains(&a)) {
        return bad("/max_attempts", "must be between 1 and 100".into());
    }
    if spec
        .timeout_secs
        .is_some_and(|t| !(1..=86_400).contains(&t))
    {
        return bad("/timeout_secs", "must be between 1 and 86400".into());
    }
    if spec
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 1000)
    {
        return bad("/description", "must be at most 1000 characters".into());
    }
    Ok(())
}

/// `POST /api/v1/agents`
pub async fn create_agent(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(Permission::AgentsWrite)?;
    let spec: AgentSpec = body.parse()?;
    let Some(name) = spec.name.clone() else {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/name",
            "an agent needs a name",
        ));
    };
    check_agent(&name, &spec)?;
    let Some(agent) = state
        .store
        .write_agent(
            principal.tenant(),
            &name,
            &spec,
            principal.actor(),
            AgentWrite::Create,
        )
        .await?
    else {
        return Err(ApiError::field(
            ErrorCode::AgentExists,
            "/name",
            format!("agent {name:?} exists; update it with PUT /api/v1/agents/{name}"),
        ));
    };
    let location = format!("/api/v1/agents/{name}");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(agent),
    )
        .into_response())
}

/// `PUT /api/v1/agents/{name}`: a new revision with this spec.
pub async fn update_agent(
    State(state): State<AppState>,
    principal: Principal,
    Segment(name): Segment,
    body: JsonBody,
) -> Result<Json<Agent>, ApiError> {
    principal.require(Permission::AgentsWrite)?;
    let spec: AgentSpec = body.parse()?;
    if spec.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/name",
            "differs from the name in the path; an agent cannot be renamed",
        ));
    }
    if !valid_name(&name) {
        return Err(no_agent(&name));
    }
    check_agent(&name, &spec)?;
    state
        .store
        .write_agent(
            principal.tenant(),
            &name,
            &spec,
            principal.actor(),
            AgentWrite::Replace,
        )
        .await?
        .map(Json)
        .ok_or_else(|| no_agent(&name))
}

/// `GET /api/v1/agents`
pub async fn list_agents(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams<NoQuery>,
) -> Result<Json<AgentList>, ApiError> {
    principal.require(Permission::AgentsRead)?;
    query.read()?;
    Ok(Json(AgentList {
        agents: state.store.agents(principal.tenant()).await?,
    }))
}

/// `GET /api/v1/agents/{name}`
pub async fn get_agent(
    State(state): State<AppState>,
    principal: Principal,
    Segment(name): Segment,
) -> Result<Json<Agent>, ApiError> {
    principal.require(Permission::AgentsRead)?;
    if !valid_name(&name) {
        return Err(no_agent(&name));
    }
    state
        .store
        .agent(principal.tenant(), &name)
        .await?
        .map(Json)
        .ok_or_else(|| no_agent(&name))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsQuery {
    server: Option<String>,
    q: Option<String>,
}

/// `GET /api/v1/tools?server=&q=`: the catalog, by name; `q` matches names and descriptions,
/// ignoring case.
pub async fn tools(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams<ToolsQuery>,
) -> Result<Json<ToolList>, ApiError> {
    principal.require(Permission::ToolsRead)?;
    let q = query.read()?;
    let needle = q.q.map(|s| s.to_lowercase());
    // The catalog is kept by name, so the list comes sorted.
    let tools = state.catalog.list(|t| {
        q.server.as_ref().is_none_or(|s| t.server == *s)
            && needle.as_ref().is_none_or(|n| {
                t.name.to_lowercase().contains(n)
                    || t.description
                        .as_ref()
                        .is_some_and(|d| d.to_lowercase().contains(n))
            })
    });
    Ok(Json(ToolList { tools }))
}

/// Longest `wait` of a tool call: below the request deadline, so the answer is the caller's.
const MAX_WAIT: Duration = Duration::from_secs(50);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallQuery {
    wait: Option<String>,
}

/// Reads `30`, `30s` or `1500ms`.
fn parse_wait(raw: &str) -> Option<Duration> {
    if let Some(ms) = raw.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    raw.strip_suffix('s')
        .unwrap_or(raw)
        .parse::<f64>()
        .ok()
        // Bounded before it becomes a Duration, which cannot hold any f64.
        .filter(|s| s.is_finite() && (0.0..=MAX_WAIT.as_secs_f64()).contains(s))
        .map(Duration::from_secs_f64)
}

/// `POST /api/v1/tools/{name}/call?wait=30s`: submits a task calling the tool (through the
/// queue, as any task), then waits up to `wait` (default 30 s, at most 50 s) for it to end:
/// 200 with the finished task, else 202 with the task as it is, to follow or read later.
pub async fn call(
    State(state): State<AppState>,
    principal: Principal,
    Segment(tool): Segment,
    query: QueryParams<CallQuery>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(Permission::TasksSubmit)?;
    let q = query.read()?;
    let wait = match q.wait.as_deref() {
        None => Duration::from_secs(30),
        Some(raw) => parse_wait(raw)
            .filter(|w| *w <= MAX_WAIT)
            .ok_or_else(|| query_error("wait", "a duration up to 50 s: 30, 30s or 1500ms"))?,
    };
    // The answer must start before the request deadline (else 504): a wait that would reach it
    // is cut short, leaving a second to read the task and answer.
    let wait = wait.min(
        state
            .config
            .request_timeout
            .saturating_sub(Duration::from_secs(1)),
    );
    let call: CallTool = body.parse_or_default()?;
    let req = SubmitTask {
        tool,
        arguments: call.arguments,
        queue: call.queue,
        timeout_secs: call.timeout_secs,
        max_attempts: call.max_attempts,
        idempotency_key: call.idempotency_key,
        session_id: call.session_id,
        metadata: call.metadata,
        run_at: None,
        delay_secs: None,
        priority: call.priority,
        agent: call.agent,
    };
    let (view, events) =
        tasks::submit_and_follow(&state, &principal, req, tasks::trace_of(&headers)).await?;
    let id = view.id;
    let location = format!("/api/v1/tasks/{id}");
    let mut events = std::pin::pin!(events.take_until(tokio::time::sleep(wait)));
    let mut ended = false;
    while let Some(m) = events.next().await {
        if matches!(
            m,
            WsServerMessage::Complete { .. }
                | WsServerMessage::Error { .. }
                | WsServerMessage::Cancelled { .. }
        ) {
            ended = true;
            break;
        }
    }
    let now = tasks::find(&state, id).await?;
    if ended && let Some(done) = now {
        return Ok((StatusCode::OK, [(header::LOCATION, location)], Json(done)).into_response());
    }
    let now = now.unwrap_or(view);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(now),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_as_durations() {
        assert_eq!(parse_wait("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_wait("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_wait("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_wait("0.5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_wait("soon"), None);
        assert_eq!(parse_wait("-1"), None);
        // Found by the fuzz: a number too large for a Duration made the handler panic.
        assert_eq!(parse_wait("20000000000000000000"), None);
        assert_eq!(parse_wait("1e300s"), None);
        assert_eq!(parse_wait("99999999999999999999ms"), None);
    }

    #[test]
    fn agent_specs_are_checked() {
        let spec = |tools: &[&str]| AgentSpec {
            allowed_tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            ..AgentSpec::default()
        };
        assert!(check_agent("helper", &spec(&["demo.*", "x.y", "*"])).is_ok());
        for bad in [&[][..], &["demo"][..], &["de mo.*"][..], &["demo."][..]] {
            assert!(check_agent("helper", &spec(bad)).is_err(), "{bad:?}");
        }
        assert!(check_agent("no.dots", &spec(&["*"])).is_err());
    }
}
