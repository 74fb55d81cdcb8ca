//! The request edge every handler shares: a JSON body, a query string and a page of a list,
//! each turned into a typed value or into a problem that names what is wrong.
//!
//! Bodies and queries are extracted as they arrived and read when the handler asks
//! ([`JsonBody::parse`], [`QueryParams::read`]): handlers check the caller's permission first,
//! so a caller who may not act learns nothing about what is wrong with its request.

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use wharf_contract::rules::PageSize;
use wharf_contract::{ErrorCode, FieldError};

use crate::AppState;
use crate::problem::ApiError;

/// A request's JSON body, within `gateway.max_body_bytes`, not parsed yet.
pub struct JsonBody {
    body: Result<Bytes, ApiError>,
    content_type: Option<HeaderValue>,
}

impl FromRequest<AppState> for JsonBody {
    type Rejection = std::convert::Infallible;

    /// A body whose `Content-Length` is over the limit is not read at all (nor is a `100
    /// Continue` sent for it): the 413 goes out at once, and the connection ends with a
    /// lingering close (`serve.rs`), so a client still sending reads it. A body without a length
    /// is cut off at the limit as it is read.
    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
        let limit = state.config.max_body_bytes;
        let announced = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let too_large = |size: &str| {
            ApiError::new(
                ErrorCode::BodyTooLarge,
                format!(
                    "the body is {size}; at most {limit} bytes are accepted (gateway.max_body_bytes)"
                ),
            )
        };
        let body = match announced {
            Some(n) if n > limit as u64 => Err(too_large(&format!("{n} bytes"))),
            _ => Bytes::from_request(request, state).await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    too_large("larger than that")
                } else {
                    ApiError::new(ErrorCode::MalformedBody, e.body_text())
                }
            }),
        };
        Ok(JsonBody { body, content_type })
    }
}

impl JsonBody {
    /// The body as a `T`: 413 over the size limit, 415 for a media type other than JSON, 400
    /// for what is not JSON, 422 naming the field that does not fit `T`.
    pub fn parse<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        parse_json(&self.bytes()?)
    }

    /// Like [`JsonBody::parse`], but an empty body (or only white space) is `T::default()`.
    pub fn parse_or_default<T: DeserializeOwned + Default>(self) -> Result<T, ApiError> {
        let body = self.bytes()?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        parse_json(&body)
    }

    /// The body as it arrived, of whatever media type (a signature is checked over these bytes
    /// before anything reads them): only the size limit applies.
    pub fn raw(self) -> Result<Bytes, ApiError> {
        self.body
    }

    fn bytes(self) -> Result<Bytes, ApiError> {
        let body = self.body?;
        if let Some(ct) = &self.content_type {
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
}

/// Parses JSON text (a body, a WebSocket message), naming the failing field in the error.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
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

/// A request's query string, not parsed yet. `T` refuses parameters it does not know
/// (`#[serde(deny_unknown_fields)]`), as every route does.
pub struct QueryParams<T>(Result<Query<T>, QueryRejection>);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(QueryParams(Query::from_request_parts(parts, state).await))
    }
}

impl<T> QueryParams<T> {
    /// The parameters, or 400 `invalid_query` naming the one at fault.
    pub fn read(self) -> Result<T, ApiError> {
        self.0.map(|Query(q)| q).map_err(|e| {
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
}

/// 400 `invalid_query` naming `param` (`/query/<param>`).
pub fn query_error(param: &str, detail: impl Into<String>) -> ApiError {
    let detail = detail.into();
    let mut e = ApiError::new(ErrorCode::InvalidQuery, format!("{param}: {detail}"));
    e.0.errors.push(FieldError {
        pointer: format!("/query/{param}"),
        detail,
    });
    e
}

/// The query of a list that takes no parameters: any parameter is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// The query of a list that takes only a page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// A cursor that is a stream sequence (`^[0-9]+$`, as the document says): digits only, no sign;
/// one past every sequence there can be names an empty page, not an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seq(pub u64);

impl std::str::FromStr for Seq {
    type Err = ();

    fn from_str(s: &str) -> Result<Seq, ()> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        Ok(Seq(s.parse().unwrap_or(u64::MAX)))
    }
}

/// Where a page of a list starts and how long it is, from its `limit` and `cursor`.
#[derive(Debug)]
pub struct Page<C> {
    /// 1 to the list's most; its default when `limit` is left out.
    pub limit: u64,
    /// What the previous page's `next_cursor` named; `None` for the first page.
    pub after: Option<C>,
}

impl<C: std::str::FromStr> Page<C> {
    /// A page of a list whose pages hold `default` items unless `limit` says otherwise, and at
    /// most `max`.
    pub fn read(
        limit: Option<&str>,
        cursor: Option<&str>,
        PageSize { default, max }: PageSize,
    ) -> Result<Page<C>, ApiError> {
        let limit = match limit {
            None => default,
            Some(l) => l
                .parse::<u64>()
                .ok()
                .filter(|l| (1..=max).contains(l))
                .ok_or_else(|| query_error("limit", format!("must be a number from 1 to {max}")))?,
        };
        let after = cursor
            .map(str::parse)
            .transpose()
            .map_err(|_| query_error("cursor", "not a cursor from a previous page"))?;
        Ok(Page { limit, after })
    }

    /// Cuts `items` (read with one more than the page holds) to the page, and names the cursor
    /// of the next page, if there is one.
    pub fn close<T>(
        &self,
        items: &mut Vec<T>,
        cursor_of: impl Fn(&T) -> Option<String>,
    ) -> Option<String> {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        if items.len() <= limit {
            return None;
        }
        items.truncate(limit);
        items.last().and_then(cursor_of)
    }
}

#[cfg(test)]
mod tests {
    use super::Seq;

    #[test]
    fn a_sequence_cursor_is_digits_and_a_huge_one_is_past_the_end() {
        assert_eq!("42".parse(), Ok(Seq(42)));
        assert_eq!("69492934490049231641".parse(), Ok(Seq(u64::MAX)));
        for bad in ["", "+5", "-1", "1.0", " 1", "x"] {
            assert_eq!(bad.parse::<Seq>(), Err(()), "{bad:?}");
        }
    }
}
