//! The MCP servers of the runtime configuration's registry (`/api/v1/config`, `mcp_servers`),
//! which gateways put in the `wharf_registry` bucket: a worker follows it and connects to each
//! server meant for one of its queues, and disconnects from each one removed, while it runs.
//!
//! The registry holds streamable HTTP servers only, so changing it never starts a process on a
//! worker; a worker may also narrow it to some hosts ([`RegistryPolicy::allow_hosts`]), or
//! ignore it. A server of the worker's own configuration file wins over a registry server of
//! the same name.

use std::collections::{BTreeMap, HashSet};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wharf_bus::Bus;
use wharf_contract::{McpRegistry, RegistryServer};

use crate::mcp::{McpServer, McpServerConfig, McpTransport, ToolsUpdate};
use crate::{Servers, Serving, WorkerConfig};

/// What a worker takes from the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryPolicy {
    /// Follow the registry at all (on by default).
    pub enabled: bool,
    /// When not empty, only servers on these hosts: `host` (any port) or `host:port`.
    pub allow_hosts: Vec<String>,
}

impl Default for RegistryPolicy {
    fn default() -> Self {
        RegistryPolicy {
            enabled: true,
            allow_hosts: Vec::new(),
        }
    }
}

impl RegistryPolicy {
    /// Whether `url` is on an allowed host.
    pub fn allows(&self, url: &str) -> bool {
        if self.allow_hosts.is_empty() {
            return true;
        }
        let Ok(uri) = url.parse::<http::Uri>() else {
            return false;
        };
        let Some(host) = uri.host() else {
            return false;
        };
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        let with_port = port.map(|p| format!("{host}:{p}"));
        self.allow_hosts.iter().any(|allowed| {
            allowed.eq_ignore_ascii_case(host)
                || with_port
                    .as_deref()
                    .is_some_and(|hp| allowed.eq_ignore_ascii_case(hp))
        })
    }
}

/// A registry server this worker connected to.
struct Running {
    entry: RegistryServer,
    stop: CancellationToken,
}

/// Whether a running server must be started again to follow `entry`: only what the connection
/// uses counts (a change of `queues` alone starts or stops it, never restarts it).
fn needs_restart(running: &RegistryServer, entry: &RegistryServer) -> bool {
    running.url != entry.url || running.retry_tool_errors != entry.retry_tool_errors
}

/// Follows the registry until the worker stops (the task is aborted then; the connections
/// stop with `servers_stop`). A watch that ends is started again.
pub(crate) async fn follow(
    bus: Bus,
    config: WorkerConfig,
    servers: Servers,
    serving: Serving,
    tools: mpsc::UnboundedSender<ToolsUpdate>,
    servers_stop: CancellationToken,
) {
    let mut follower = Follower {
        local: config.servers.iter().map(|s| s.name.clone()).collect(),
        bus,
        config,
        servers,
        serving,
        tools,
        servers_stop,
        running: BTreeMap::new(),
        warned: HashSet::new(),
    };
    loop {
        let mut registry = match follower.bus.watch_registry().await {
            Ok(r) => Box::pin(r),
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow the mcp registry; trying again in 5 s");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                continue;
            }
        };
        while let Some(next) = registry.next().await {
            follower.apply(&next).await;
        }
        tracing::warn!("the mcp registry watch ended; watching again");
    }
}

/// What [`follow`] keeps between revisions of the registry.
struct Follower {
    bus: Bus,
    config: WorkerConfig,
    servers: Servers,
    serving: Serving,
    tools: mpsc::UnboundedSender<ToolsUpdate>,
    servers_stop: CancellationToken,
    /// The servers of the worker's own configuration file.
    local: HashSet<String>,
    running: BTreeMap<String, Running>,
    /// Refusals are logged once per server and revision, not at every change of the registry.
    warned: HashSet<(String, u64)>,
}

impl Follower {
    /// Brings the running servers in line with a revision of the registry.
    async fn apply(&mut self, next: &McpRegistry) {
        self.warned
            .retain(|(_, revision)| *revision == next.revision);
        let wanted = self.wanted(next);
        // Stop what left the registry (or this worker's part of it), or changed how it is
        // reached.
        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(name, r)| wanted.get(*name).is_none_or(|e| needs_restart(&r.entry, e)))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.stop(&name, next).await;
        }
        for (name, entry) in wanted {
            if let Some(r) = self.running.get_mut(&name) {
                // Still served the same way; keep what the entry says now.
                r.entry = entry;
                continue;
            }
            self.start(name, entry, next.revision);
        }
    }

    /// The registry's servers this worker should serve: meant for one of its queues, not
    /// shadowed by its own configuration, on an allowed host.
    fn wanted(&mut self, next: &McpRegistry) -> BTreeMap<String, RegistryServer> {
        let mut wanted = BTreeMap::new();
        for (name, entry) in &next.servers {
            let for_us = entry.queues.is_empty()
                || entry.queues.iter().any(|q| self.config.queues.contains(q));
            if !for_us {
                continue;
            }
            let why = if self.local.contains(name) {
                Some("this worker's configuration file has a server of that name, which wins")
            } else if !self.config.registry.allows(&entry.url) {
                Some("its host is not in this worker's registry allow_hosts")
            } else {
                None
            };
            match why {
                Some(why) => {
                    if self.warned.insert((name.clone(), next.revision)) {
                        tracing::warn!(server = %name, revision = next.revision, "not connecting to a registry server: {why}");
                    }
                }
                None => {
                    wanted.insert(name.clone(), entry.clone());
                }
            }
        }
        wanted
    }

    async fn stop(&mut self, name: &str, next: &McpRegistry) {
        let Some(r) = self.running.remove(name) else {
            return;
        };
        self.servers.write().unwrap().remove(name);
        self.serving.lock().unwrap().remove(name);
        r.stop.cancel();
        if !next.servers.contains_key(name) {
            // The gateway withdrew its tools already; this covers an advertisement made in
            // between.
            if let Err(e) = self.bus.withdraw_registry_tools(name).await {
                tracing::warn!(server = %name, error = %e, "cannot withdraw a removed server's tools");
            }
        }
        tracing::info!(server = %name, revision = next.revision, "registry server stopped");
    }

    fn start(&mut self, name: String, entry: RegistryServer, revision: u64) {
        let stop = self.servers_stop.child_token();
        let server = McpServer::start_from(
            McpServerConfig {
                name: name.clone(),
                transport: McpTransport::Http {
                    url: entry.url.clone(),
                },
                retry_tool_errors: entry.retry_tool_errors,
            },
            true,
            self.tools.clone(),
            stop.clone(),
        );
        self.servers.write().unwrap().insert(name.clone(), server);
        tracing::info!(server = %name, revision, "registry server added");
        self.running.insert(name, Running { entry, stop });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_change_in_how_a_server_is_reached_restarts_it() {
        let entry = RegistryServer {
            url: "http://a/mcp".into(),
            queues: vec![],
            retry_tool_errors: false,
        };
        let requeued = RegistryServer {
            queues: vec!["gpu".into()],
            ..entry.clone()
        };
        assert!(!needs_restart(&entry, &requeued));
        let moved = RegistryServer {
            url: "http://b/mcp".into(),
            ..entry.clone()
        };
        assert!(needs_restart(&entry, &moved));
        let retried = RegistryServer {
            retry_tool_errors: true,
            ..entry.clone()
        };
        assert!(needs_restart(&entry, &retried));
    }

    #[test]
    fn allowed_hosts_match_a_host_or_a_host_and_port() {
        let open = RegistryPolicy::default();
        assert!(open.allows("http://anything:1234/mcp"));
        let narrow = RegistryPolicy {
            enabled: true,
            allow_hosts: vec!["tools.internal".into(), "127.0.0.1:8080".into()],
        };
        assert!(narrow.allows("https://tools.internal/mcp"));
        assert!(narrow.allows("http://TOOLS.internal:9000/mcp"));
        assert!(narrow.allows("http://127.0.0.1:8080/mcp"));
        assert!(!narrow.allows("http://127.0.0.1:8081/mcp"));
        assert!(!narrow.allows("http://tools.internal.evil.example/mcp"));
        assert!(!narrow.allows("http://evil.example/tools.internal"));
        assert!(!narrow.allows("not a url"));
        let default_port = RegistryPolicy {
            enabled: true,
            allow_hosts: vec!["tools.internal:443".into()],
        };
        assert!(default_port.allows("https://tools.internal/mcp"));
        assert!(!default_port.allows("http://tools.internal/mcp"));
    }
}
