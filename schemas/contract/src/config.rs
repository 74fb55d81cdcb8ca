//! The settings an operator may change while the platform runs (`/api/v1/config`): rate
//! limits, queue defaults, the life of sessions, the registry of MCP servers. Every change is a
//! numbered revision, kept with who made it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::hooks::Hook;
use crate::task::Priority;

/// A sustained rate with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests per second, sustained; below 1 for fewer (0.5 is one every two seconds).
    #[schemars(range(min = *crate::rules::RATE_PER_SEC.start(), max = *crate::rules::RATE_PER_SEC.end()))]
    pub per_sec: f64,
    /// Requests allowed at once after a quiet spell; `per_sec` (at least 1) when absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::optional"
    )]
    #[schemars(range(min = 1, max = u32::MAX))]
    pub burst: Option<u32>,
}

/// Rate limits and the per-tenant cap on unfinished tasks; each is off when absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Every request from one client address, before authentication.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_ip: Option<Rate>,
    /// `GET` requests of one tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<Rate>,
    /// Other requests, WebSocket submissions and cancellations of one tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write: Option<Rate>,
    /// Most tasks one tenant may have queued or running.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::optional"
    )]
    #[schemars(range(min = 1, max = u64::MAX))]
    pub tenant_max_unfinished: Option<u64>,
}

/// What a queue gives the tasks submitted to it that do not say otherwise.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::optional"
    )]
    #[schemars(range(min = *crate::rules::MAX_ATTEMPTS.start(), max = *crate::rules::MAX_ATTEMPTS.end()))]
    pub max_attempts: Option<u32>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::optional"
    )]
    #[schemars(range(min = *crate::rules::TIMEOUT_SECS.start(), max = *crate::rules::TIMEOUT_SECS.end()))]
    pub timeout_secs: Option<u64>,
    /// Delay before the second attempt, doubling after each failure.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::optional"
    )]
    #[schemars(range(min = *crate::rules::RETRY_MS.start(), max = *crate::rules::RETRY_MS.end()))]
    pub retry_initial_ms: Option<u64>,
    /// Longest delay between attempts.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::whole::optional"
    )]
    #[schemars(range(min = *crate::rules::RETRY_MS.start(), max = *crate::rules::RETRY_MS.end()))]
    pub retry_max_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
}

/// An MCP server of the registry: every worker that serves one of `queues` (every worker, when
/// `queues` is empty) connects to it and serves its tools, besides the servers of its own
/// configuration file. Streamable HTTP only: the registry never starts a process on a worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryServer {
    /// The server's streamable HTTP endpoint, `http://` or `https://`.
    #[schemars(length(max = crate::rules::URL_BYTES), regex(pattern = "^https?://"))]
    pub url: String,
    /// The queues whose workers connect to it; every worker's when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = crate::rules::NAME_PATTERN)))]
    pub queues: Vec<String>,
    /// Retry the server's tool errors (`isError: true`) like a timeout, instead of ending the
    /// task with them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_tool_errors: bool,
}

/// The registry as workers read it from NATS: the servers of the configuration revision that
/// put it there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct McpRegistry {
    pub v: u32,
    pub revision: u64,
    pub servers: BTreeMap<String, RegistryServer>,
}

/// Wire version of [`McpRegistry`].
pub const MCP_REGISTRY_VERSION: u32 = 1;

/// The runtime settings, as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Defaults per queue name.
    #[serde(default)]
    #[schemars(extend("propertyNames" = {"pattern": crate::rules::NAME_PATTERN}))]
    pub queues: BTreeMap<String, QueueSettings>,
    /// Life of a session created without `ttl_secs`, in seconds (60 to 30 days).
    #[serde(deserialize_with = "crate::whole::required")]
    #[schemars(range(min = *crate::rules::SESSION_TTL_SECS.start(), max = *crate::rules::SESSION_TTL_SECS.end()))]
    pub session_ttl_secs: u64,
    /// MCP servers workers connect to, by name (the first part of their tools' names).
    #[serde(default)]
    #[schemars(extend("propertyNames" = {"pattern": crate::rules::NAME_PATTERN}, "maxProperties" = crate::rules::REGISTRY_SERVERS))]
    pub mcp_servers: BTreeMap<String, RegistryServer>,
    /// Inbound webhooks by name: `POST /hooks/{name}` starts a task ([`Hook`]).
    #[serde(default)]
    #[schemars(extend("propertyNames" = {"pattern": crate::rules::NAME_PATTERN}, "maxProperties" = crate::rules::HOOKS))]
    pub hooks: BTreeMap<String, Hook>,
    /// Callback settings by tenant: the secrets its callbacks are signed with, and its
    /// tasks' default callback.
    #[serde(default)]
    #[schemars(extend("propertyNames" = {"pattern": crate::rules::NAME_PATTERN}))]
    pub callbacks: crate::callbacks::CallbackSettings,
}

/// `GET /api/v1/config`: the settings in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigView {
    /// 0 while the settings are the configuration file's; one more at each change.
    pub revision: u64,
    pub config: RuntimeConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

/// `PUT /api/v1/config` body: the whole new settings, and the revision they replace (a change
/// made meanwhile by someone else is not overwritten: 409).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    #[serde(deserialize_with = "crate::whole::required")]
    #[schemars(range(max = u64::MAX))]
    pub revision: u64,
    pub config: RuntimeConfig,
}

/// One change of the settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigRevision {
    pub revision: u64,
    pub at: DateTime<Utc>,
    /// Who made it: `key:<id>`, `jwt:<sub>` or `anonymous`.
    pub by: String,
    /// What it changed, e.g. `limits.write`, `queues.emails`, `session_ttl_secs`.
    pub changed: Vec<String>,
    pub config: RuntimeConfig,
}

/// `GET /api/v1/config/revisions`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConfigHistory {
    pub revisions: Vec<ConfigRevision>,
}

/// Adds `<section>.<name>` to `changed` for each name whose entry differs between `before`
/// and `after` (added, removed or changed).
fn changed_entries<T: PartialEq>(
    changed: &mut Vec<String>,
    section: &str,
    before: &BTreeMap<String, T>,
    after: &BTreeMap<String, T>,
) {
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for name in names {
        if before.get(name) != after.get(name) {
            changed.push(format!("{section}.{name}"));
        }
    }
}

impl RuntimeConfig {
    /// The settings `other` holds differently, by section and name.
    pub fn changes_from(&self, other: &RuntimeConfig) -> Vec<String> {
        let mut changed = Vec::new();
        let (a, b) = (&other.limits, &self.limits);
        for (name, differs) in [
            ("limits.per_ip", a.per_ip != b.per_ip),
            ("limits.read", a.read != b.read),
            ("limits.write", a.write != b.write),
            (
                "limits.tenant_max_unfinished",
                a.tenant_max_unfinished != b.tenant_max_unfinished,
            ),
        ] {
            if differs {
                changed.push(name.to_owned());
            }
        }
        changed_entries(&mut changed, "queues", &other.queues, &self.queues);
        if other.session_ttl_secs != self.session_ttl_secs {
            changed.push("session_ttl_secs".into());
        }
        changed_entries(
            &mut changed,
            "mcp_servers",
            &other.mcp_servers,
            &self.mcp_servers,
        );
        changed_entries(&mut changed, "hooks", &other.hooks, &self.hooks);
        changed_entries(&mut changed, "callbacks", &other.callbacks, &self.callbacks);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_each_setting_that_differs() {
        let before = RuntimeConfig {
            limits: LimitsConfig::default(),
            queues: [("a".to_owned(), QueueSettings::default())].into(),
            session_ttl_secs: 60,
            mcp_servers: BTreeMap::new(),
            hooks: BTreeMap::new(),
            callbacks: BTreeMap::new(),
        };
        let mut after = before.clone();
        assert!(after.changes_from(&before).is_empty());
        after.queues.remove("a");
        after.queues.insert(
            "b".into(),
            QueueSettings {
                max_attempts: Some(2),
                ..Default::default()
            },
        );
        after.limits.write = Some(Rate {
            per_sec: 1.0,
            burst: None,
        });
        after.mcp_servers.insert(
            "s".into(),
            RegistryServer {
                url: "http://s/mcp".into(),
                queues: vec![],
                retry_tool_errors: false,
            },
        );
        assert_eq!(
            after.changes_from(&before),
            ["limits.write", "queues.a", "queues.b", "mcp_servers.s"]
        );
    }
}
