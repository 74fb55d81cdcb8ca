//! Finding a request's credential and turning it into its principal before any handler runs.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use wharf_contract::{ErrorCode, Identity};

use super::*;
use crate::AppState;
use crate::problem::ApiError;

pub fn unauthenticated(detail: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, detail)
}

/// The credential a request carries: `Ok(None)` when it carries none, `Err` when it carries
/// something that is not one (an `Authorization` header of another scheme, an empty value), so
/// that it is refused rather than taken for no credentials at all.
fn credential(
    headers: &HeaderMap,
    query: Option<&str>,
    streams: bool,
) -> Result<Option<String>, &'static str> {
    const MALFORMED: &str =
        "send the credential as Authorization: Bearer <key or token> (or X-API-Key: <key>)";
    let found = if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| MALFORMED)?;
        match v.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
                Some(rest.trim().to_owned())
            }
            _ => return Err(MALFORMED),
        }
    } else if let Some(v) = headers.get("x-api-key") {
        Some(v.to_str().map_err(|_| MALFORMED)?.trim().to_owned())
    } else if streams {
        query.and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "access_token")
                .map(|(_, v)| v.to_owned())
        })
    } else {
        None
    };
    match found {
        Some(c) if c.is_empty() => Err(MALFORMED),
        other => Ok(other),
    }
}

/// The credential a request was authenticated with, for the WebSocket to check again later.
#[derive(Debug, Clone)]
pub struct Credential(pub Option<String>);

/// Resolves the caller of every route behind it into a [`Principal`] (put in the request's
/// extensions), refusing with 401 when it cannot. Counts the request against the caller's
/// tenant's rate limit.
pub async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    // Browsers cannot set headers on a WebSocket or an EventSource.
    let streams = path.starts_with("/ws/") || path.ends_with("/events");
    let given = credential(request.headers(), request.uri().query(), streams);
    let principal = match &given {
        Ok(Some(c)) => state.auth.resolve(c).await,
        Err(why) => Err(unauthenticated(*why)),
        Ok(None) if state.auth.mode() == AuthMode::Open => Ok(Principal::anonymous()),
        Ok(None) => Err(unauthenticated(
            "send an API key or token: Authorization: Bearer <key or token>",
        )),
    };
    let principal = match principal {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(reason = %e.0.detail, "request refused: not authenticated");
            let challenge = crate::mcp::challenge(&state, request.headers(), path);
            let mut response = e.into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_str(&challenge)
                    .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"wharf\"")),
            );
            return response;
        }
    };
    let class = crate::limits::Class::of(request.method());
    let allowance = match state.settings().limits.admit(principal.tenant(), class) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    request.extensions_mut().insert(principal.clone());
    request
        .extensions_mut()
        .insert(Credential(given.ok().flatten()));
    let mut response = next.run(request).await;
    // For the audit log, which runs outside this layer.
    response.extensions_mut().insert(principal);
    if let Some(a) = allowance {
        a.apply(response.headers_mut());
    }
    response
}

/// `GET /api/v1/whoami`: who the request acts as.
pub async fn whoami(principal: Principal) -> axum::Json<Identity> {
    axum::Json(principal.identity())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_found_where_clients_put_them() {
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h, Some("access_token=abc"), false), Ok(None));
        assert_eq!(
            credential(&h, Some("x=1&access_token=abc"), true),
            Ok(Some("abc".into()))
        );
        assert!(credential(&h, Some("access_token="), true).is_err());
        h.insert("x-api-key", HeaderValue::from_static("wharf_k"));
        assert_eq!(credential(&h, None, false), Ok(Some("wharf_k".into())));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t.o.k"),
        );
        assert_eq!(credential(&h, None, false), Ok(Some("t.o.k".into())));
        // Another scheme is refused, not taken for no credentials (nor for the X-API-Key).
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcg=="),
        );
        assert!(credential(&h, None, false).is_err());
    }
}
