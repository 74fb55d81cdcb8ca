//! Bodies of `/api/v1/sessions`, `/api/v1/agents` and `POST /api/v1/tools/{name}/call`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::task::Priority;

/// `POST /api/v1/sessions` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// A label of the caller's choosing (1 to 255 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = *crate::rules::KEY_CHARS.start(), max = *crate::rules::KEY_CHARS.end()))]
    pub name: Option<String>,
    /// How long the session lives, in seconds (60 to 30 days); the gateway's
    /// `session_ttl_secs` (24 h) when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::optional"
    )]
    #[schemars(range(min = *crate::rules::SESSION_TTL_SECS.start(), max = *crate::rules::SESSION_TTL_SECS.end()))]
    pub ttl_secs: Option<u64>,
    /// Free-form data stored with the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

/// A session: a group of tasks (`session_id` of a submission) that lives until it expires or
/// is deleted. Tasks may be submitted to a live session only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Session {
    pub id: Uuid,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// When the session was deleted (its queued and running tasks were cancelled then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<DateTime<Utc>>,
}

/// `GET /api/v1/sessions`: the tenant's live sessions, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SessionList {
    pub sessions: Vec<Session>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// The answer to `DELETE /api/v1/sessions/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeletedSession {
    pub session: Session,
    /// The queued and running tasks whose cancellation was requested.
    pub cancelled: Vec<Uuid>,
}

/// `POST /api/v1/agents` and `PUT /api/v1/agents/{name}` body: a named profile tasks may be
/// submitted with (`agent` of a submission).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// 1 to 64 letters, digits, '-' or '_'; unique in the tenant. In `PUT`, the path's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::rules::NAME_PATTERN))]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = crate::rules::DESCRIPTION_CHARS))]
    pub description: Option<String>,
    /// The tools its tasks may call: exact names (`demo.echo`), a server's (`demo.*`), or all
    /// (`*`). At least one.
    #[schemars(length(min = *crate::rules::AGENT_TOOLS.start(), max = *crate::rules::AGENT_TOOLS.end()))]
    #[schemars(inner(regex(pattern = crate::rules::ALLOWED_TOOL_PATTERN)))]
    pub allowed_tools: Vec<String>,
    /// Queue of its tasks that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::rules::NAME_PATTERN))]
    pub default_queue: Option<String>,
    /// Level of its tasks that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// `max_attempts` of its tasks that name none (1 to 100).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::optional"
    )]
    #[schemars(range(min = *crate::rules::MAX_ATTEMPTS.start(), max = *crate::rules::MAX_ATTEMPTS.end()))]
    pub max_attempts: Option<u32>,
    /// `timeout_secs` of its tasks that name none (1 to 86,400).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::optional"
    )]
    #[schemars(range(min = *crate::rules::TIMEOUT_SECS.start(), max = *crate::rules::TIMEOUT_SECS.end()))]
    pub timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// The callback of the agent's tasks that name none (before the tenant's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<crate::callbacks::Callback>,
}

/// An agent as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Agent {
    pub name: String,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub allowed_tools: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<crate::callbacks::Callback>,
    /// 1 when created, one more at each update.
    pub revision: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Who created or last updated it.
    pub updated_by: String,
}

impl Agent {
    /// True when the agent may call `tool`.
    pub fn allows(&self, tool: &str) -> bool {
        self.allowed_tools
            .iter()
            .any(|pattern| tool_matches(pattern, tool))
    }
}

/// True when `tool` (`server.tool`) matches `pattern`: `*`, `server.*` or the exact name.
pub fn tool_matches(pattern: &str, tool: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => prefix.ends_with('.') && tool.starts_with(prefix),
        None => pattern == tool,
    }
}

/// `GET /api/v1/agents`: the tenant's agents, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AgentList {
    pub agents: Vec<Agent>,
}

/// `POST /api/v1/tools/{name}/call` body: a submission whose tool is the path's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallTool {
    #[serde(default)]
    pub arguments: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::rules::NAME_PATTERN))]
    pub queue: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::optional"
    )]
    #[schemars(range(min = *crate::rules::TIMEOUT_SECS.start(), max = *crate::rules::TIMEOUT_SECS.end()))]
    pub timeout_secs: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::optional"
    )]
    #[schemars(range(min = *crate::rules::MAX_ATTEMPTS.start(), max = *crate::rules::MAX_ATTEMPTS.end()))]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = *crate::rules::KEY_CHARS.start(), max = *crate::rules::KEY_CHARS.end()))]
    #[schemars(extend("not" = {"type": "string", "pattern": crate::rules::RESERVED_KEY_PATTERN}))]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = *crate::rules::KEY_CHARS.start(), max = *crate::rules::KEY_CHARS.end()))]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::rules::NAME_PATTERN))]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
}

#[cfg(test)]
mod tests {
    use super::tool_matches;

    #[test]
    fn tool_patterns() {
        assert!(tool_matches("*", "demo.echo"));
        assert!(tool_matches("demo.*", "demo.echo"));
        assert!(!tool_matches("demo.*", "demonic.echo"));
        assert!(tool_matches("demo.echo", "demo.echo"));
        assert!(!tool_matches("demo.echo", "demo.echoes"));
        assert!(
            !tool_matches("demo*", "demo.echo"),
            "a prefix must end at the server's dot"
        );
    }
}
