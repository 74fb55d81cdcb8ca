//! Task callbacks at the gateway: a submission's callback checked (its URL against the callback
//! policy, its tenant able to sign it), the tenants' callback settings checked and their secrets
//! kept out of reads, and the delivery log (`/api/v1/tasks/{id}/deliveries`,
//! `/api/v1/deliveries`, `/api/v1/deliveries/{id}/redeliver`). The recorder delivers.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use wharf_contract::rules::{PageSize, URL_BYTES};
use wharf_contract::{
    Callback, DeliveryList, DeliveryStatus, ErrorCode, NAME_RULE, Permission, TenantCallbacks,
    valid_name,
};
use wharf_webhooks::{Sender, TargetPolicy, check_secrets};

use crate::AppState;
use crate::auth::Principal;
use crate::http::{Page, QueryParams};
use crate::problem::{ApiError, Segment};

/// Pages of the delivery log.
const DELIVERY_PAGE: PageSize = PageSize {
    default: 100,
    max: 1000,
};

/// The callback a task gets: its own, else its agent's, else its tenant's default; refused
/// (naming `/callback`) when the policy refuses its URL or the tenant has no secrets to sign
/// it with.
pub fn callback_of(
    state: &AppState,
    principal: &Principal,
    given: Option<Callback>,
    agent: Option<&wharf_contract::Agent>,
) -> Result<Option<Callback>, ApiError> {
    let settings = state.settings();
    let tenant = settings.runtime.callbacks.get(principal.tenant());
    let Some(callback) = given
        .or_else(|| agent.and_then(|a| a.callback.clone()))
        .or_else(|| tenant.and_then(|t| t.default.clone()))
    else {
        return Ok(None);
    };
    check_callback(&state.config.callback_policy, &callback).map_err(|(field, why)| {
        ApiError::field(ErrorCode::InvalidField, &format!("/callback{field}"), why)
    })?;
    if tenant.is_none() {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/callback",
            format!(
                "tenant {:?} has no callback secrets to sign deliveries with; an operator sets \
                 callbacks.{}.secrets in /api/v1/config",
                principal.tenant(),
                principal.tenant()
            ),
        ));
    }
    Ok(Some(callback))
}

/// A callback's URL and events: on failure, the field below the callback and why.
pub fn check_callback(policy: &TargetPolicy, c: &Callback) -> Result<(), (&'static str, String)> {
    if c.url.len() as u64 > URL_BYTES {
        return Err(("/url", format!("at most {URL_BYTES} bytes")));
    }
    Sender::check_url(policy, &c.url).map_err(|why| ("/url", why))?;
    if c.events.is_empty() || c.events.len() > 8 {
        return Err(("/events", "1 to 8 events".into()));
    }
    Ok(())
}

/// The rules the tenants' callback settings keep to (`callbacks/<tenant>/...`).
pub fn validate(callbacks: &BTreeMap<String, TenantCallbacks>) -> Result<(), (String, String)> {
    for (tenant, c) in callbacks {
        let at = |field: &str| format!("callbacks/{tenant}{field}");
        if !valid_name(tenant) {
            return Err((at(""), format!("a tenant name {NAME_RULE}")));
        }
        check_secrets(&c.secrets).map_err(|(field, why)| (at(&field), why))?;
    }
    Ok(())
}

/// The checks that need the gateway's callback policy: each default callback's URL.
pub fn check_defaults(
    state: &AppState,
    callbacks: &BTreeMap<String, TenantCallbacks>,
) -> Result<(), ApiError> {
    for (tenant, c) in callbacks {
        if let Some(default) = &c.default {
            check_callback(&state.config.callback_policy, default).map_err(|(field, why)| {
                ApiError::field(
                    ErrorCode::InvalidField,
                    &format!("/config/callbacks/{tenant}/default{field}"),
                    why,
                )
            })?;
        }
    }
    Ok(())
}

/// Every tenant's secrets as reads show them.
pub fn redact(callbacks: &mut BTreeMap<String, TenantCallbacks>) {
    for c in callbacks.values_mut() {
        wharf_webhooks::redact_all(&mut c.secrets);
    }
}

/// Puts back the secrets sent back as they were read.
pub fn restore_secrets(
    new: &mut BTreeMap<String, TenantCallbacks>,
    current: &BTreeMap<String, TenantCallbacks>,
) {
    for (tenant, c) in new.iter_mut() {
        if let Some(stored) = current.get(tenant) {
            wharf_webhooks::restore_redacted(&mut c.secrets, &stored.secrets);
        }
    }
}

/// `GET /api/v1/tasks/{id}/deliveries`: the task's deliveries in order, with every attempt.
pub async fn of_task(
    State(state): State<AppState>,
    principal: Principal,
    Segment(raw): Segment,
) -> Result<Json<DeliveryList>, ApiError> {
    principal.require(Permission::TasksRead)?;
    let id = crate::tasks::parse_id(&raw)?;
    crate::tasks::find_owned(&state, &principal, id).await?;
    let deliveries = state.store.task_deliveries(id).await?;
    Ok(Json(DeliveryList {
        deliveries,
        next_cursor: None,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// A page's cursor: the last delivery's creation time (microseconds since 1970) and id.
struct Cursor(chrono::DateTime<chrono::Utc>, String);

/// What a cursor looks like, as the OpenAPI document states it: every string of this form is
/// read (one past every time there can be names the newest page).
pub const CURSOR_PATTERN: &str =
    "^[0-9]{1,19}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-[0-9]{1,20}$";

impl Cursor {
    fn of(d: &wharf_contract::Delivery) -> String {
        format!("{}_{}", d.created_at.timestamp_micros().max(0), d.id)
    }
}

impl std::str::FromStr for Cursor {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (micros, id) = s.split_once('_').ok_or(())?;
        if micros.is_empty() || micros.len() > 19 || !micros.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        let (task, seq) = id.rsplit_once('-').ok_or(())?;
        let valid_id = task.len() == 36
            && task.parse::<uuid::Uuid>().is_ok()
            && task == task.to_ascii_lowercase()
            && !seq.is_empty()
            && seq.len() <= 20
            && seq.bytes().all(|b| b.is_ascii_digit());
        if !valid_id {
            return Err(());
        }
        let at = micros
            .parse::<i64>()
            .ok()
            .and_then(chrono::DateTime::from_timestamp_micros)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        Ok(Cursor(at, id.to_owned()))
    }
}

/// `GET /api/v1/deliveries?status=&limit=&cursor=`: the tenant's deliveries, newest first.
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams<ListQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    principal.require(Permission::TasksRead)?;
    let q = query.read()?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(DeliveryStatus::parse(s).ok_or_else(|| {
            ApiError::field(
                ErrorCode::InvalidQuery,
                "/query/status",
                "pending, delivered or failed",
            )
        })?),
    };
    let page = Page::<Cursor>::read(q.limit.as_deref(), q.cursor.as_deref(), DELIVERY_PAGE)?;
    let mut deliveries = state
        .store
        .deliveries(
            principal.tenant(),
            status,
            page.after.as_ref().map(|c| (c.0, c.1.clone())),
            page.limit + 1,
        )
        .await?;
    let next_cursor = page.close(&mut deliveries, |d| Some(Cursor::of(d)));
    Ok(Json(DeliveryList {
        deliveries,
        next_cursor,
    }))
}

/// `POST /api/v1/deliveries/{id}/redeliver`: due again now and retried for another 24 h,
/// whatever came of it before.
pub async fn redeliver(
    State(state): State<AppState>,
    principal: Principal,
    Segment(id): Segment,
) -> Result<Json<wharf_contract::Delivery>, ApiError> {
    principal.require(Permission::TasksSubmit)?;
    let until = chrono::Utc::now() + chrono::Duration::hours(24);
    state
        .store
        .redeliver(principal.tenant(), &id, until)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no delivery {id:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document's pattern and the parser agree: what the pattern allows is read, and what
    /// it refuses is refused.
    #[test]
    fn every_cursor_of_the_documented_form_is_read() {
        let schema = serde_json::json!({"type": "string", "pattern": CURSOR_PATTERN});
        let documented = jsonschema::validator_for(&schema).unwrap();
        for good in [
            "1764876000000000_01a242ad-ab9f-762f-9570-2f31b20aa27b-3",
            "9999999999999999999_01a242ad-ab9f-762f-9570-2f31b20aa27b-99999999999999999999",
            "0_00000000-0000-0000-0000-000000000000-0",
        ] {
            assert!(documented.is_valid(&serde_json::json!(good)), "{good}");
            assert!(good.parse::<Cursor>().is_ok(), "{good}");
        }
        for bad in ["", "x_y", "12|01a242ad-ab9f-762f-9570-2f31b20aa27b-3"] {
            assert!(!documented.is_valid(&serde_json::json!(bad)), "{bad}");
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
    }
}
