//! The table of stable error codes and the RFC 9457 problem document they are sent in.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Declares [`ErrorCode`] once: each variant with its HTTP status, its stable code string (how
/// it is written on the wire) and its title. The serde names come from the same strings.
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = ($status:literal, $code:literal, $title:literal),)*) => {
        /// Every error the API can answer with. The code string is stable: clients may match on it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* #[serde(rename = $code)] $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order of the table.
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)*];

            pub fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }

            pub fn title(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $title,)*
                }
            }

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    /// The body is not valid JSON, or not the expected shape.
    MalformedBody = (400, "malformed_body", "malformed request body"),
    /// A field has a value outside what it accepts.
    InvalidField = (422, "invalid_field", "invalid field"),
    /// The `tool` names no tool in the catalog.
    UnknownTool = (422, "unknown_tool", "unknown tool"),
    /// The `arguments` fail the tool's `inputSchema`.
    InvalidArguments = (422, "invalid_arguments", "arguments do not match the tool's input schema"),
    /// The body is larger than the configured limit.
    BodyTooLarge = (413, "body_too_large", "request body too large"),
    /// A query parameter is malformed.
    InvalidQuery = (400, "invalid_query", "invalid query parameter"),
    /// No task has this id.
    TaskNotFound = (404, "task_not_found", "task not found"),
    /// No resource at this path.
    NotFound = (404, "not_found", "not found"),
    /// The task has already ended; it cannot be cancelled.
    TaskFinished = (409, "task_finished", "task already finished"),
    /// The idempotency key belongs to a task with a different tool, arguments or queue.
    IdempotencyKeyReused = (409, "idempotency_key_reused", "idempotency key used for a different task"),
    /// A request with this idempotency key is still being handled; retry shortly.
    IdempotencyKeyInUse = (409, "idempotency_key_in_use", "a request with this idempotency key is in progress"),
    /// The dead letter holds no readable task to submit again.
    NotReplayable = (409, "not_replayable", "the dead letter cannot be replayed"),
    /// The body's media type is not `application/json`.
    UnsupportedMediaType = (415, "unsupported_media_type", "unsupported media type"),
    /// The task's agent may not use this tool.
    ToolNotAllowed = (403, "tool_not_allowed", "the agent may not use this tool"),
    /// An agent with this name already exists in the tenant.
    AgentExists = (409, "agent_exists", "an agent with this name exists"),
    /// The agent changed while this update was being written; read it and update it again.
    AgentConflict = (409, "agent_conflict", "the agent changed meanwhile"),
    /// The configuration changed since the revision the update names; read it and retry.
    ConfigConflict = (409, "config_conflict", "the configuration changed meanwhile"),
    /// No credentials, or credentials that do not prove who the caller is (unknown, revoked
    /// or expired key; token with a bad signature, issuer, audience or expiry).
    Unauthenticated = (401, "unauthenticated", "authentication required"),
    /// An inbound webhook's call is not signed by one of the hook's secrets, or its timestamp
    /// is outside the five minutes allowed (the detail says which).
    BadSignature = (401, "bad_signature", "webhook signature not accepted"),
    /// The caller is known but lacks the permission the route needs (named in the detail).
    Forbidden = (403, "forbidden", "permission denied"),
    /// Too many requests from this caller or address; retry after `Retry-After` seconds.
    RateLimited = (429, "rate_limited", "too many requests"),
    /// The tenant has as many tasks queued or running as it may; retry when some have ended.
    TooManyTasks = (429, "too_many_tasks", "too many tasks in flight"),
    /// The request took longer than `gateway.request_timeout_secs`; it may or may not have
    /// been done (look before retrying, or retry with an idempotency key).
    Timeout = (504, "timeout", "request timed out"),
    /// NATS or the database cannot be reached right now; nothing was done. Retry later.
    Unavailable = (503, "unavailable", "service unavailable"),
    /// An unexpected failure inside Wharf.
    Internal = (500, "internal", "internal error"),
}

/// One failing field: where (a JSON pointer into the request body) and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FieldError {
    /// JSON pointer (RFC 6901) into the request body, e.g. `/arguments/seconds`.
    pub pointer: String,
    pub detail: String,
}

/// An RFC 9457 problem document (`application/problem+json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Problem {
    /// `urn:wharf:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable code from the error table.
    pub code: ErrorCode,
    /// The failing fields, each with a JSON pointer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Names close to an unknown one (e.g. tools).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suggestions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The permission the caller lacks (`forbidden` only), e.g. `tasks:submit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_permission: Option<String>,
}

impl Problem {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Problem {
        Problem {
            type_uri: format!("urn:wharf:problem:{}", code.as_str().replace('_', "-")),
            title: code.title().to_owned(),
            status: code.status(),
            detail: detail.into(),
            code,
            errors: Vec::new(),
            suggestions: Vec::new(),
            instance: None,
            missing_permission: None,
        }
    }

    /// Names the failing field.
    pub fn field(mut self, pointer: impl Into<String>, detail: impl Into<String>) -> Problem {
        self.errors.push(FieldError {
            pointer: pointer.into(),
            detail: detail.into(),
        });
        self
    }
}
