//! The HTTP edge of every error: one type, answered as RFC 9457 `application/problem+json`.

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wharf_contract::{ErrorCode, Problem};

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError(pub Box<Problem>, Hints);

/// Headers an error is answered with besides its body.
#[derive(Debug, Default)]
struct Hints {
    retry_after: Option<std::time::Duration>,
    rate_limit: Option<Allowance>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> ApiError {
        ApiError(Box::new(Problem::new(code, detail)), Hints::default())
    }

    /// Tells the client when to try again (`Retry-After`, whole seconds, at least 1).
    pub fn retry_after(mut self, wait: std::time::Duration) -> ApiError {
        self.1.retry_after = Some(wait);
        self
    }

    /// How long the client should wait before trying again, if waiting helps: what the error
    /// was given, else a second for a 503 (`Retry-After`, over HTTP and NATS alike).
    pub fn wait(&self) -> Option<std::time::Duration> {
        self.1.retry_after.or_else(|| {
            (self.0.status == StatusCode::SERVICE_UNAVAILABLE.as_u16())
                .then(|| std::time::Duration::from_secs(1))
        })
    }

    /// `Retry-After`'s value for [`ApiError::wait`]: whole seconds, at least 1.
    pub fn wait_secs(&self) -> Option<u64> {
        self.wait().map(|w| (w.as_secs_f64().ceil() as u64).max(1))
    }

    /// Sends the `RateLimit-*` headers of the allowance that refused the request.
    pub fn rate_limit(mut self, allowance: Allowance) -> ApiError {
        self.1.rate_limit = Some(allowance);
        self
    }

    /// A 422 naming the failing field by JSON pointer.
    pub fn field(code: ErrorCode, pointer: &str, detail: impl Into<String>) -> ApiError {
        let detail = detail.into();
        ApiError(
            Box::new(Problem::new(code, format!("{pointer}: {detail}")).field(pointer, detail)),
            Hints::default(),
        )
    }

    /// The same error for a part of a larger body: every pointer gets `prefix` in front, e.g.
    /// `/tool` of the fourth task of a batch becomes `/tasks/3/tool`.
    pub fn within(mut self, prefix: &str) -> ApiError {
        let p = &mut self.0;
        for e in &mut p.errors {
            e.pointer.insert_str(0, prefix);
        }
        p.detail = if p.detail.starts_with('/') {
            format!("{prefix}{}", p.detail)
        } else {
            format!("{prefix}: {}", p.detail)
        };
        self
    }

    pub fn unavailable(e: impl std::fmt::Display) -> ApiError {
        tracing::warn!(error = %e, "dependency unavailable");
        ApiError::new(ErrorCode::Unavailable, e.to_string())
    }

    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "internal error");
        ApiError::new(
            ErrorCode::Internal,
            "an unexpected error happened; it was logged",
        )
    }
}

impl From<wharf_store::Error> for ApiError {
    fn from(e: wharf_store::Error) -> ApiError {
        match e {
            wharf_store::Error::Db(e) => ApiError::unavailable(e),
            // Agents are the only rows the store writes over a revision it read.
            wharf_store::Error::Conflict(why) => ApiError::new(ErrorCode::AgentConflict, why),
            other => ApiError::internal(other),
        }
    }
}

impl From<wharf_bus::Error> for ApiError {
    fn from(e: wharf_bus::Error) -> ApiError {
        ApiError::unavailable(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.0).expect("a problem serialises");
        let mut response = (status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.wait_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(a) = self.1.rate_limit {
            a.apply(response.headers_mut());
        }
        response.extensions_mut().insert(Refusal {
            code: self.0.code,
            detail: self.0.detail.clone(),
        });
        response
    }
}

/// A route's one path parameter, percent-decoded. axum's own `Path` refuses a segment that is
/// not UTF-8 once decoded (`/api/v1/tasks/%ff`) with a `text/plain` 400; such a segment names
/// nothing Wharf has (ids and names are ASCII), so here it is a problem+json 404.
#[derive(Debug)]
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(segment)) => Ok(Segment(segment)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "no resource at {}: {}",
                    parts.uri.path(),
                    e.body_text().trim_start_matches("Invalid URL: ")
                ),
            )),
            Err(e) => Err(ApiError::internal(e.body_text())),
        }
    }
}

/// What a counted request is told about its allowance.
#[derive(Debug, Clone, Copy)]
pub struct Allowance {
    pub limit: u32,
    pub remaining: u32,
    pub reset: std::time::Duration,
}

impl Allowance {
    pub fn apply(self, headers: &mut axum::http::HeaderMap) {
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert(
            "ratelimit-reset",
            HeaderValue::from(self.reset.as_secs_f64().ceil() as u64),
        );
    }
}

/// What a refusal said, for the audit entry (put in the response by `ApiError`).
#[derive(Debug, Clone)]
pub struct Refusal {
    pub code: ErrorCode,
    pub detail: String,
}
