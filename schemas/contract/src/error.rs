//! The table of stable error codes and the RFC 9457 problem document they are sent in.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Every error the API can answer with. The code string is stable: clients may match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON, or not the expected shape.
    MalformedBody,
    /// A field has a value outside what it accepts.
    InvalidField,
    /// The `tool` names no tool in the catalog.
    UnknownTool,
    /// The `arguments` fail the tool's `inputSchema`.
    InvalidArguments,
    /// The body is larger than the configured limit.
    BodyTooLarge,
    /// A query parameter is malformed.
    InvalidQuery,
    /// No task has this id.
    TaskNotFound,
    /// No resource at this path.
    NotFound,
    /// The task has already ended; it cannot be cancelled.
    TaskFinished,
    /// The idempotency key belongs to a task with a different tool, arguments or queue.
    IdempotencyKeyReused,
    /// A request with this idempotency key is still being handled; retry shortly.
    IdempotencyKeyInUse,
    /// The dead letter holds no readable task to submit again.
    NotReplayable,
    /// The body's media type is not `application/json`.
    UnsupportedMediaType,
    /// The task's agent may not use this tool.
    ToolNotAllowed,
    /// An agent with this name already exists in the tenant.
    AgentExists,
    /// The agent changed while this update was being written; read it and update it again.
    AgentConflict,
    /// The configuration changed since the revision the update names; read it and retry.
    ConfigConflict,
    /// No credentials, or credentials that do not prove who the caller is (unknown, revoked
    /// or expired key; token with a bad signature, issuer, audience or expiry).
    Unauthenticated,
    /// The caller is known but lacks the permission the route needs (named in the detail).
    Forbidden,
    /// Too many requests from this caller or address; retry after `Retry-After` seconds.
    RateLimited,
    /// The tenant has as many tasks queued or running as it may; retry when some have ended.
    TooManyTasks,
    /// The request took longer than `gateway.request_timeout_secs`; it may or may not have
    /// been done (look before retrying, or retry with an idempotency key).
    Timeout,
    /// NATS or the database cannot be reached right now; nothing was done. Retry later.
    Unavailable,
    /// An unexpected failure inside Wharf.
    Internal,
}

impl ErrorCode {
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::MalformedBody | ErrorCode::InvalidQuery => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::RateLimited | ErrorCode::TooManyTasks => 429,
            ErrorCode::TaskNotFound | ErrorCode::NotFound => 404,
            ErrorCode::TaskFinished
            | ErrorCode::IdempotencyKeyReused
            | ErrorCode::IdempotencyKeyInUse
            | ErrorCode::NotReplayable
            | ErrorCode::AgentExists
            | ErrorCode::AgentConflict
            | ErrorCode::ConfigConflict => 409,
            ErrorCode::ToolNotAllowed => 403,
            ErrorCode::BodyTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::InvalidField | ErrorCode::UnknownTool | ErrorCode::InvalidArguments => 422,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::Internal => 500,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            ErrorCode::MalformedBody => "malformed request body",
            ErrorCode::InvalidField => "invalid field",
            ErrorCode::UnknownTool => "unknown tool",
            ErrorCode::InvalidArguments => "arguments do not match the tool's input schema",
            ErrorCode::BodyTooLarge => "request body too large",
            ErrorCode::InvalidQuery => "invalid query parameter",
            ErrorCode::TaskNotFound => "task not found",
            ErrorCode::NotFound => "not found",
            ErrorCode::TaskFinished => "task already finished",
            ErrorCode::IdempotencyKeyReused => "idempotency key used for a different task",
            ErrorCode::IdempotencyKeyInUse => "a request with this idempotency key is in progress",
            ErrorCode::NotReplayable => "the dead letter cannot be replayed",
            ErrorCode::UnsupportedMediaType => "unsupported media type",
            ErrorCode::ToolNotAllowed => "the agent may not use this tool",
            ErrorCode::AgentExists => "an agent with this name exists",
            ErrorCode::AgentConflict => "the agent changed meanwhile",
            ErrorCode::ConfigConflict => "the configuration changed meanwhile",
            ErrorCode::Unauthenticated => "authentication required",
            ErrorCode::Forbidden => "permission denied",
            ErrorCode::RateLimited => "too many requests",
            ErrorCode::TooManyTasks => "too many tasks in flight",
            ErrorCode::Unavailable => "service unavailable",
            ErrorCode::Timeout => "request timed out",
            ErrorCode::Internal => "internal error",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedBody => "malformed_body",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::UnknownTool => "unknown_tool",
            ErrorCode::InvalidArguments => "invalid_arguments",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::TaskNotFound => "task_not_found",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TaskFinished => "task_finished",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::IdempotencyKeyInUse => "idempotency_key_in_use",
            ErrorCode::NotReplayable => "not_replayable",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::ToolNotAllowed => "tool_not_allowed",
            ErrorCode::AgentExists => "agent_exists",
            ErrorCode::AgentConflict => "agent_conflict",
            ErrorCode::ConfigConflict => "config_conflict",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyTasks => "too_many_tasks",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
        }
    }
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
