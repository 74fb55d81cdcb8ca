//! `/api/v1/sessions`: create, list, read and delete a tenant's sessions; deleting one cancels
//! its unfinished tasks.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;
use wharf_contract::rules::{self, KEY_CHARS, SESSION_TTL_SECS, chars_within, range_rule};
use wharf_contract::{CreateSession, DeletedSession, ErrorCode, Permission, Session, SessionList};

use crate::AppState;
use crate::auth::Principal;
use crate::http::{JsonBody, Page, PageQuery, QueryParams};
use crate::problem::{ApiError, Segment};
use crate::tasks;

fn no_session(raw: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no session {raw}"))
}

/// `POST /api/v1/sessions`
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(Permission::SessionsWrite)?;
    let req: CreateSession = body.parse()?;
    if let Some(n) = &req.name
        && !chars_within(n, &KEY_CHARS)
    {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/name",
            wharf_contract::rules::chars_rule(&KEY_CHARS),
        ));
    }
    let ttl = req
        .ttl_secs
        .unwrap_or(state.settings().runtime.session_ttl_secs);
    if !SESSION_TTL_SECS.contains(&ttl) {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/ttl_secs",
            range_rule(&SESSION_TTL_SECS),
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
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams<PageQuery>,
) -> Result<Json<SessionList>, ApiError> {
    principal.require(Permission::SessionsRead)?;
    let q = query.read()?;
    let page = Page::<Uuid>::read(
        q.limit.as_deref(),
        q.cursor.as_deref(),
        rules::SESSIONS_PAGE,
    )?;
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
pub async fn get(
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
pub async fn delete(
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
