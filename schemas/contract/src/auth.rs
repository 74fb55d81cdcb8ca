//! Who may do what: tenants, permissions, roles, and the bodies of `/api/v1/keys`.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The tenant of everything made without one: every task of a platform that does not use
/// tenants, and every object of `wharf dev`'s open mode.
pub const DEFAULT_TENANT: &str = "default";

/// Prefix of every API key's secret, so a leaked key is recognisable (and scannable) as one.
pub const API_KEY_PREFIX: &str = "wharf_";

/// One thing a caller may be allowed to do. A role is a set of these; every route needs one.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Permission {
    /// Submit tasks (`POST /api/v1/tasks[/batch]`, WebSocket `task:submit`).
    #[serde(rename = "tasks:submit")]
    TasksSubmit,
    /// Read the tenant's tasks and follow their events (HTTP, SSE, WebSocket).
    #[serde(rename = "tasks:read")]
    TasksRead,
    /// Cancel the tenant's tasks.
    #[serde(rename = "tasks:cancel")]
    TasksCancel,
    /// List and read the tenant's dead letters.
    #[serde(rename = "dlq:read")]
    DlqRead,
    /// Submit a dead letter again.
    #[serde(rename = "dlq:replay")]
    DlqReplay,
    /// Read the tool catalog.
    #[serde(rename = "tools:read")]
    ToolsRead,
    /// Read the platform's state: workers, queues, `system:status`, `/metrics`. Spans tenants.
    #[serde(rename = "ops:read")]
    OpsRead,
    /// Change the platform's running state: pause and resume queues. Spans tenants.
    #[serde(rename = "ops:write")]
    OpsWrite,
    /// Create, list and revoke the tenant's API keys.
    #[serde(rename = "keys:admin")]
    KeysAdmin,
    /// Read the tenant's audit log.
    #[serde(rename = "audit:read")]
    AuditRead,
    /// Read the tenant's sessions.
    #[serde(rename = "sessions:read")]
    SessionsRead,
    /// Create and delete the tenant's sessions (deleting cancels their tasks).
    #[serde(rename = "sessions:write")]
    SessionsWrite,
    /// Read the tenant's agents.
    #[serde(rename = "agents:read")]
    AgentsRead,
    /// Create and update the tenant's agents.
    #[serde(rename = "agents:write")]
    AgentsWrite,
    /// Read the platform's runtime configuration. Spans tenants.
    #[serde(rename = "config:read")]
    ConfigRead,
    /// Change the platform's runtime configuration (limits, queue defaults). Spans tenants.
    #[serde(rename = "config:write")]
    ConfigWrite,
    /// Act across tenants: manage other tenants' keys, read their audit entries, see dead
    /// letters of no tenant. (Nothing opens another tenant's tasks, sessions or agents.)
    #[serde(rename = "tenants:admin")]
    TenantsAdmin,
}

impl Permission {
    pub const ALL: [Permission; 17] = [
        Permission::TasksSubmit,
        Permission::TasksRead,
        Permission::TasksCancel,
        Permission::DlqRead,
        Permission::DlqReplay,
        Permission::ToolsRead,
        Permission::OpsRead,
        Permission::OpsWrite,
        Permission::KeysAdmin,
        Permission::AuditRead,
        Permission::SessionsRead,
        Permission::SessionsWrite,
        Permission::AgentsRead,
        Permission::AgentsWrite,
        Permission::ConfigRead,
        Permission::ConfigWrite,
        Permission::TenantsAdmin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::TasksSubmit => "tasks:submit",
            Permission::TasksRead => "tasks:read",
            Permission::TasksCancel => "tasks:cancel",
            Permission::DlqRead => "dlq:read",
            Permission::DlqReplay => "dlq:replay",
            Permission::ToolsRead => "tools:read",
            Permission::OpsRead => "ops:read",
            Permission::OpsWrite => "ops:write",
            Permission::KeysAdmin => "keys:admin",
            Permission::AuditRead => "audit:read",
            Permission::SessionsRead => "sessions:read",
            Permission::SessionsWrite => "sessions:write",
            Permission::AgentsRead => "agents:read",
            Permission::AgentsWrite => "agents:write",
            Permission::ConfigRead => "config:read",
            Permission::ConfigWrite => "config:write",
            Permission::TenantsAdmin => "tenants:admin",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown permission {s:?}"))
    }
}

/// The roles every gateway knows; configuration may add more (`[gateway.auth.roles.<name>]`).
pub fn builtin_role(name: &str) -> Option<&'static [Permission]> {
    use Permission::*;
    Some(match name {
        // Every permission: the platform's settings and state, and other tenants' keys and
        // audit entries (but not their tasks, sessions or agents: nothing gives those).
        "admin" => &Permission::ALL,
        // Everything within its own tenant.
        "tenant-admin" => &[
            TasksSubmit,
            TasksRead,
            TasksCancel,
            DlqRead,
            DlqReplay,
            ToolsRead,
            KeysAdmin,
            AuditRead,
            SessionsRead,
            SessionsWrite,
            AgentsRead,
            AgentsWrite,
        ],
        // Runs the platform: reads everything of its tenant and the platform's state, cancels,
        // replays dead letters, pauses and resumes queues; submits nothing new.
        "operator" => &[
            TasksRead,
            TasksCancel,
            DlqRead,
            DlqReplay,
            ToolsRead,
            OpsRead,
            OpsWrite,
            SessionsRead,
            AgentsRead,
            ConfigRead,
        ],
        // An application that submits work and follows it.
        "submitter" => &[
            TasksSubmit,
            TasksRead,
            TasksCancel,
            ToolsRead,
            SessionsRead,
            SessionsWrite,
            AgentsRead,
        ],
        // Looks only.
        "reader" => &[TasksRead, ToolsRead, SessionsRead, AgentsRead],
        _ => return None,
    })
}

/// The names of the built-in roles, in the order [`builtin_role`] lists them.
pub const BUILTIN_ROLES: [&str; 5] = ["admin", "tenant-admin", "operator", "submitter", "reader"];

/// `POST /api/v1/keys` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for, e.g. `billing-service` (1 to 64 letters, digits, '-' or '_').
    #[schemars(regex(pattern = crate::rules::NAME_PATTERN))]
    pub name: String,
    /// Role the key acts with; it may not hold a permission its creator lacks.
    #[schemars(example = &"submitter")]
    #[schemars(regex(pattern = crate::rules::NAME_PATTERN))]
    pub role: String,
    /// Tenant the key belongs to; the creator's when absent. Another tenant needs
    /// `tenants:admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::rules::NAME_PATTERN))]
    pub tenant: Option<String>,
    /// The key stops working after this many seconds (60 to 3 years); never when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::optional"
    )]
    #[schemars(range(min = *crate::rules::KEY_EXPIRY_SECS.start(), max = *crate::rules::KEY_EXPIRY_SECS.end()))]
    pub expires_in_secs: Option<u64>,
}

/// An API key as listed: never its secret (only a hash of it is stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiKeyInfo {
    pub id: Uuid,
    pub name: String,
    pub tenant: String,
    pub role: String,
    /// The first characters of the secret, to tell keys apart (`wharf_3fa9…`).
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    /// Who created it: `key:<id>`, `jwt:<subject>`, `anonymous` (open mode) or `bootstrap`.
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The answer to `POST /api/v1/keys`: the key and, this once, its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CreatedKey {
    /// Send it as `Authorization: Bearer <secret>` (or `X-API-Key`). It is not shown again.
    pub secret: String,
    pub key: ApiKeyInfo,
}

/// `GET /api/v1/keys`: the tenant's keys, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiKeyList {
    pub keys: Vec<ApiKeyInfo>,
}

/// Who a request comes from, as `GET /api/v1/whoami` tells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Identity {
    /// `key:<id>`, `jwt:<subject>`, or `anonymous` (open mode).
    pub actor: String,
    pub tenant: String,
    /// The role, for an API key; the roles claim, for a token.
    pub roles: Vec<String>,
    pub permissions: Vec<Permission>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_strings_round_trip() {
        for p in Permission::ALL {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
            assert_eq!(p.as_str().parse::<Permission>().unwrap(), p);
        }
        assert!("tasks:delete".parse::<Permission>().is_err());
    }

    #[test]
    fn builtin_roles_nest() {
        for name in BUILTIN_ROLES {
            let perms = builtin_role(name).unwrap();
            assert!(
                perms
                    .iter()
                    .all(|p| builtin_role("admin").unwrap().contains(p))
            );
        }
        assert!(
            !builtin_role("tenant-admin")
                .unwrap()
                .contains(&Permission::TenantsAdmin)
        );
        assert!(builtin_role("root").is_none());
    }
}

/// One line of the audit log: a state-changing call, or a refused caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditEntry {
    /// Sortable (UUIDv7); the cursor of `GET /api/v1/audit`.
    pub id: Uuid,
    pub at: DateTime<Utc>,
    /// What was done: `task.submit`, `task.submit_batch`, `task.cancel`, `dlq.replay`,
    /// `key.create`, `key.revoke`, `session.create`, `session.delete`, `agent.create`,
    /// `agent.update`, `tool.call`, `config.update`, `auth.unauthenticated`, `auth.forbidden`,
    /// or `<METHOD> <route>` for anything else.
    pub action: String,
    /// `ok` (done), `denied` (401, 403), `refused` (other 4xx), `failed` (5xx).
    pub outcome: String,
    /// The HTTP status answered (for a WebSocket message, the status its HTTP twin would get:
    /// 202 when accepted).
    pub status: u16,
    /// `key:<id>`, `jwt:<sub>`, `anonymous`, or `unknown` for a caller that did not
    /// authenticate.
    pub actor: String,
    /// The caller's tenant; empty for a caller that did not authenticate.
    pub tenant: String,
    /// What it was done to: the created resource, else the request path.
    pub target: String,
    /// The request id (`x-request-id`).
    pub request_id: String,
    /// The client's address.
    pub ip: String,
    /// Why it was refused, for refusals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `GET /api/v1/audit`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}
