//! The OAuth protected-resource metadata (RFC 9728) that the MCP authorization specification
//! asks of a server taking bearer tokens: where clients get a token for `/mcp`. Served when
//! the gateway takes JWTs (`gateway.auth.jwt`), naming their issuer as the authorization
//! server; a 401 on `/mcp` points to it in `WWW-Authenticate`.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use wharf_contract::ErrorCode;

use crate::AppState;
use crate::problem::ApiError;

/// Where the metadata of the MCP endpoint at `path` lives (RFC 9728 §3.1: the well-known
/// prefix before the resource's path).
pub(crate) const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The origin a request reached, as its client wrote it: `https://` when the gateway serves
/// TLS or a proxy says it forwarded HTTPS.
fn origin(state: &AppState, headers: &HeaderMap) -> String {
    let forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .map(|p| p.eq_ignore_ascii_case("https"));
    let scheme = if forwarded.unwrap_or(state.config.tls.is_some()) {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| state.config.listen.to_string(), str::to_owned);
    format!("{scheme}://{host}")
}

/// The `WWW-Authenticate` of a refused `/mcp` request: the bearer challenge, with the metadata
/// document's address when there is one.
pub(crate) fn challenge(state: &AppState, headers: &HeaderMap, path: &str) -> String {
    if state.config.auth.jwt.is_none() || !path.starts_with("/mcp") {
        return "Bearer realm=\"wharf\"".to_owned();
    }
    format!(
        "Bearer realm=\"wharf\", resource_metadata=\"{}{WELL_KNOWN}{path}\"",
        origin(state, headers)
    )
}

/// `GET /.well-known/oauth-protected-resource[/mcp...]`: the metadata of `/mcp` (or of the
/// agent's endpoint the path names); 404 when the gateway takes no JWTs.
pub(crate) async fn metadata(State(state): State<AppState>, request: Request) -> Response {
    let Some(jwt) = &state.config.auth.jwt else {
        return ApiError::new(
            ErrorCode::NotFound,
            "this gateway takes API keys only: there is no authorization server to name",
        )
        .into_response();
    };
    let path = request
        .uri()
        .path()
        .strip_prefix(WELL_KNOWN)
        .filter(|p| p.starts_with("/mcp"))
        .unwrap_or("/mcp");
    let resource = format!("{}{path}", origin(&state, request.headers()));
    Json(json!({
        "resource": resource,
        "authorization_servers": [jwt.issuer],
        "bearer_methods_supported": ["header"],
        "resource_name": "Wharf",
    }))
    .into_response()
}
