//! The tool catalog workers advertise.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Version written into every [`ToolServer`] this build publishes.
pub const TOOL_SERVER_VERSION: u32 = 1;

/// One MCP server's tools as a worker sees them (`tool-server.v1`), stored in the tools bucket
/// under the server's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolServer {
    pub v: u32,
    /// The configured server name; tools are addressed as `<server>.<tool>`.
    pub server: String,
    /// Queues served by the workers that advertise this server.
    pub queues: Vec<String>,
    pub tools: Vec<ToolInfo>,
    pub updated_at: DateTime<Utc>,
    /// The server comes from the runtime configuration's MCP registry, not from a worker's
    /// configuration file: removing it from the registry withdraws this entry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub registry: bool,
}

/// One tool in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ToolInfo {
    /// Qualified name, `<server>.<tool>`.
    pub name: String,
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The tool's JSON Schema for its arguments, as the MCP server declares it.
    #[serde(rename = "inputSchema")]
    pub input_schema: Value,
    /// A human-readable name, as the MCP server gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The JSON Schema of the tool's `structuredContent`, as the MCP server declares it.
    #[serde(
        default,
        rename = "outputSchema",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_schema: Option<Value>,
    /// The MCP server's hints about the tool (`readOnlyHint`, `destructiveHint`, ...), as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Value>,
}
