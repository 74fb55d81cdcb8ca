//! The tool catalog as the gateway knows it: every advertised tool with a compiled validator for
//! its `inputSchema`, kept current by watching the tools bucket.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use serde_json::{Map, Value};
use wharf_bus::Bus;
use wharf_contract::{FieldError, ToolInfo, ToolServer};

struct Entry {
    info: ToolInfo,
    validator: Option<jsonschema::Validator>,
    /// Advertised by a server of the runtime registry (not of a worker's file).
    registry: bool,
}

/// Tools by qualified name.
#[derive(Clone)]
pub struct Catalog {
    tools: Arc<RwLock<BTreeMap<String, Arc<Entry>>>>,
    /// Counts the changes to the list of tools (what `tools/list` shows), for MCP clients
    /// listening for `notifications/tools/list_changed`.
    changes: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            tools: Arc::default(),
            changes: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
}

/// Why arguments were refused.
pub enum Refusal {
    UnknownTool { suggestions: Vec<String> },
    InvalidArguments(Vec<FieldError>),
}

impl Catalog {
    /// Loads the catalog, then follows the tools bucket in the background for as long as the
    /// process lives.
    pub async fn watch(bus: &Bus) -> Result<Catalog, wharf_bus::Error> {
        let catalog = Catalog::default();
        let (now, updates) = bus.watch_tools().await?;
        for server in now {
            catalog.replace_server(server);
        }
        let mut updates = Box::pin(updates);
        let c = catalog.clone();
        tokio::spawn(async move {
            while let Some((name, server)) = updates.next().await {
                match server {
                    Some(server) => c.replace_server(server),
                    None => c.remove_server(&name),
                }
            }
            tracing::error!("the tool catalog watch ended; the catalog no longer updates");
        });
        Ok(catalog)
    }

    /// Follows the changes to the list of tools: the receiver sees a new value after each.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    fn replace_server(&self, server: ToolServer) {
        // Every worker that starts or reconnects to a server advertises it again: most of
        // these are no change. The catalog lists by name; a server lists in its own order.
        let mut advertised: Vec<&ToolInfo> = server.tools.iter().collect();
        advertised.sort_by(|a, b| a.name.cmp(&b.name));
        let known = self.list(|t| t.server == server.server);
        let changed = !known.iter().eq(advertised.iter().copied());
        let mut tools = self.tools.write().unwrap();
        tools.retain(|_, e| e.info.server != server.server);
        for info in server.tools {
            let validator = match jsonschema::validator_for(&info.input_schema) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(tool = %info.name, error = %e, "tool has an unusable inputSchema; its arguments are not checked");
                    None
                }
            };
            tools.insert(
                info.name.clone(),
                Arc::new(Entry {
                    info,
                    validator,
                    registry: server.registry,
                }),
            );
        }
        drop(tools);
        if changed {
            self.changed();
        }
    }

    /// Whether a worker serves a server called `name` from its own configuration file (as far
    /// as the catalog knows: a server that lists no tools is not seen).
    pub fn served_from_file(&self, name: &str) -> bool {
        self.tools
            .read()
            .unwrap()
            .values()
            .any(|e| e.info.server == name && !e.registry)
    }

    fn remove_server(&self, name: &str) {
        let mut tools = self.tools.write().unwrap();
        let before = tools.len();
        tools.retain(|_, e| e.info.server != name);
        let removed = tools.len() != before;
        drop(tools);
        if removed {
            self.changed();
        }
    }

    /// The tools `keep` keeps, by name; only those are copied.
    pub fn list(&self, keep: impl Fn(&ToolInfo) -> bool) -> Vec<ToolInfo> {
        self.tools
            .read()
            .unwrap()
            .values()
            .filter(|e| keep(&e.info))
            .map(|e| e.info.clone())
            .collect()
    }

    /// One tool, if the catalog has it.
    pub fn tool(&self, name: &str) -> Option<ToolInfo> {
        let tools = self.tools.read().unwrap();
        tools.get(name).map(|e| e.info.clone())
    }

    /// The arguments `tool`'s input schema requires (none for a tool the catalog lacks).
    pub fn required_arguments(&self, tool: &str) -> Vec<String> {
        let tools = self.tools.read().unwrap();
        tools
            .get(tool)
            .map(|e| required_of(&e.info.input_schema))
            .unwrap_or_default()
    }

    /// Checks that `tool` exists and that `arguments` satisfy its schema. Field pointers are
    /// relative to the request body (`/arguments/...`).
    pub fn check(&self, tool: &str, arguments: &Map<String, Value>) -> Result<(), Refusal> {
        let entry = self.tools.read().unwrap().get(tool).cloned();
        let Some(entry) = entry else {
            return Err(Refusal::UnknownTool {
                suggestions: self.close_names(tool),
            });
        };
        let Some(validator) = &entry.validator else {
            return Ok(());
        };
        let instance = Value::Object(arguments.clone());
        let errors: Vec<FieldError> = validator
            .iter_errors(&instance)
            .take(20)
            .map(|e| FieldError {
                pointer: format!("/arguments{}", e.instance_path().as_str()),
                detail: e.to_string(),
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Refusal::InvalidArguments(errors))
        }
    }

    /// Up to five known names close to `name`: same tool on another server, or a small edit away.
    fn close_names(&self, name: &str) -> Vec<String> {
        let tools = self.tools.read().unwrap();
        let tail = name.rsplit('.').next().unwrap_or(name);
        let mut scored: Vec<(f64, &String)> = tools
            .keys()
            .filter_map(|known| {
                let known_tail = known.split_once('.').map_or(known.as_str(), |(_, t)| t);
                let score = strsim::jaro_winkler(name, known)
                    .max(strsim::jaro_winkler(tail, known_tail) - 0.05);
                (score > 0.75).then_some((score, known))
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().take(5).map(|(_, n)| n.clone()).collect()
    }
}

/// The property names an object schema lists as `required`.
pub fn required_of(schema: &Value) -> Vec<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(names: &[&str]) -> ToolServer {
        ToolServer {
            v: 1,
            server: "s".into(),
            queues: vec!["default".into()],
            tools: names
                .iter()
                .map(|n| ToolInfo {
                    name: format!("s.{n}"),
                    server: "s".into(),
                    description: None,
                    input_schema: serde_json::json!({"type": "object"}),
                    title: None,
                    output_schema: None,
                    annotations: None,
                })
                .collect(),
            updated_at: chrono::Utc::now(),
            registry: false,
        }
    }

    #[test]
    fn the_same_tools_again_in_another_order_are_no_change() {
        let catalog = Catalog::default();
        let changes = catalog.changes();
        catalog.replace_server(server(&["zeta", "alpha"]));
        assert_eq!(*changes.borrow(), 1);
        catalog.replace_server(server(&["zeta", "alpha"]));
        catalog.replace_server(server(&["alpha", "zeta"]));
        assert_eq!(
            *changes.borrow(),
            1,
            "re-advertising the same tools is no change"
        );
        catalog.replace_server(server(&["alpha"]));
        catalog.remove_server("s");
        catalog.remove_server("s");
        assert_eq!(*changes.borrow(), 3);
    }
}
