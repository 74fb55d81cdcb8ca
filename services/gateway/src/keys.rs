//! `/api/v1/keys`: API keys. Created with a secret shown once (only its SHA-256 is stored),
//! listed, read and revoked, within the caller's tenant (any tenant with `tenants:admin`).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use uuid::Uuid;
use wharf_contract::NAME_RULE;
use wharf_contract::rules::{KEY_EXPIRY_SECS, range_rule};
use wharf_contract::{
    ApiKeyInfo, ApiKeyList, CreateKey, CreatedKey, ErrorCode, Permission, valid_name,
};

use crate::AppState;
use crate::auth::{Principal, mint_key};
use crate::http::{JsonBody, QueryParams, query_error};
use crate::problem::{ApiError, Segment};

/// `POST /api/v1/keys`
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<Response, ApiError> {
    principal.require(Permission::KeysAdmin)?;
    let req: CreateKey = body.parse()?;
    if !valid_name(&req.name) {
        return Err(ApiError::field(ErrorCode::InvalidField, "/name", NAME_RULE));
    }
    let Some(granted) = state.auth.role(&req.role) else {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "/role",
            format!(
                "no role {:?}; the built-in roles are {}",
                req.role,
                wharf_contract::auth::BUILTIN_ROLES.join(", ")
            ),
        ));
    };
    // Nobody hands out more than they hold.
    if let Some(p) = granted.list().into_iter().find(|p| !principal.can(*p)) {
        let mut e = ApiError::field(
            ErrorCode::Forbidden,
            "/role",
            format!(
                "role {:?} holds {p}, which {} lacks; a key cannot be given more than its \
                 creator holds",
                req.role,
                principal.actor()
            ),
        );
        e.0.missing_permission = Some(p.as_str().to_owned());
        return Err(e);
    }
    let tenant = match req.tenant {
        None => principal.tenant().to_owned(),
        Some(t) if !valid_name(&t) => {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                "/tenant",
                NAME_RULE,
            ));
        }
        Some(t) if t != principal.tenant() => {
            principal
                .require(Permission::TenantsAdmin)
                .map_err(|e| e.within("/tenant"))?;
            t
        }
        Some(t) => t,
    };
    let now = chrono::Utc::now();
    let expires_at = match req.expires_in_secs {
        None => None,
        Some(s) if !KEY_EXPIRY_SECS.contains(&s) => {
            return Err(ApiError::field(
                ErrorCode::InvalidField,
                "/expires_in_secs",
                range_rule(&KEY_EXPIRY_SECS),
            ));
        }
        Some(s) => Some(now + chrono::Duration::seconds(s as i64)),
    };
    let (info, secret, hash) = mint_key(
        req.name,
        tenant,
        req.role,
        principal.actor().to_owned(),
        expires_at,
    );
    state.store.create_key(&info, &hash).await?;
    tracing::info!(key_id = %info.id, tenant = %info.tenant, role = %info.role, by = %principal.actor(), "API key created");
    let location = format!("/api/v1/keys/{}", info.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(CreatedKey { secret, key: info }),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    tenant: Option<String>,
}

/// `GET /api/v1/keys`: the caller's tenant's keys (`?tenant=` another's, with `tenants:admin`).
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    query: QueryParams<ListQuery>,
) -> Result<Json<ApiKeyList>, ApiError> {
    principal.require(Permission::KeysAdmin)?;
    let q = query.read()?;
    let tenant = match q.tenant {
        Some(t) if t != principal.tenant() => {
            if !valid_name(&t) {
                return Err(query_error("tenant", NAME_RULE));
            }
            principal.require(Permission::TenantsAdmin)?;
            t
        }
        _ => principal.tenant().to_owned(),
    };
    Ok(Json(ApiKeyList {
        keys: state.store.keys(Some(&tenant)).await?,
    }))
}

fn no_key(raw: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no API key {raw}"))
}

/// The tenant scope of a key lookup: the caller's, or every tenant with `tenants:admin`.
fn scope(principal: &Principal) -> Option<&str> {
    (!principal.can(Permission::TenantsAdmin)).then(|| principal.tenant())
}

/// `GET /api/v1/keys/{id}`
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Segment(raw): Segment,
) -> Result<Json<ApiKeyInfo>, ApiError> {
    principal.require(Permission::KeysAdmin)?;
    let id: Uuid = raw.parse().map_err(|_| no_key(&raw))?;
    let scope = scope(&principal);
    state
        .store
        .key(id)
        .await?
        .filter(|k| scope.is_none_or(|t| k.tenant == t))
        .map(Json)
        .ok_or_else(|| no_key(&raw))
}

/// `DELETE /api/v1/keys/{id}`: revokes the key at once, on every gateway. Revoking a revoked
/// key is not an error.
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Segment(raw): Segment,
) -> Result<Json<ApiKeyInfo>, ApiError> {
    principal.require(Permission::KeysAdmin)?;
    let id: Uuid = raw.parse().map_err(|_| no_key(&raw))?;
    let Some(info) = state.store.revoke_key(id, scope(&principal)).await? else {
        return Err(no_key(&raw));
    };
    state.auth.forget_key(id);
    if let Err(e) = state.bus.announce(&wharf_bus::KEY_REVOKED, &id).await {
        tracing::warn!(key_id = %id, error = %e, "revoked; other gateways drop it when their cache expires");
    }
    tracing::info!(key_id = %id, by = %principal.actor(), "API key revoked");
    Ok(Json(info))
}
