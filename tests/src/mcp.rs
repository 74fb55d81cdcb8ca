//! MCP servers for tests: the bundled demo server, and the third-party ones of `tests/node`.

use std::path::PathBuf;
use std::time::Duration;

use wharf_worker::{McpServerConfig, McpTransport};

use crate::{eventually, wharf_bin};

/// The demo MCP server as a stdio child process. `log` receives its JSON-lines log.
pub fn demo_server(name: &str, log: Option<&std::path::Path>) -> McpServerConfig {
    let mut env = std::collections::BTreeMap::new();
    if let Some(log) = log {
        env.insert("WHARF_DEMO_LOG".into(), log.display().to_string());
    }
    McpServerConfig {
        name: name.into(),
        transport: McpTransport::Stdio {
            command: wharf_bin().display().to_string(),
            args: vec!["mcp-demo".into()],
            env,
            cwd: None,
        },
        retry_tool_errors: false,
    }
}

/// Where the third-party MCP servers of `tests/node` are installed (`npm ci` in `./test.sh`).
pub fn node_server(package_path: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("node/node_modules")
        .join(package_path);
    assert!(
        path.exists(),
        "{} is missing: run `npm ci --prefix tests/node` (./test.sh does)",
        path.display()
    );
    path
}

/// `@modelcontextprotocol/server-everything` over stdio, named `everything`.
pub fn everything_stdio() -> McpServerConfig {
    McpServerConfig {
        name: "everything".into(),
        transport: McpTransport::Stdio {
            command: "node".into(),
            args: vec![
                node_server("@modelcontextprotocol/server-everything/dist/index.js")
                    .display()
                    .to_string(),
                "stdio".into(),
            ],
            env: Default::default(),
            cwd: None,
        },
        retry_tool_errors: false,
    }
}

/// `@modelcontextprotocol/server-everything` serving streamable HTTP on a free port; killed when
/// dropped.
pub struct EverythingHttp {
    _child: tokio::process::Child,
    pub url: String,
}

impl EverythingHttp {
    pub async fn start() -> EverythingHttp {
        let port = wharf_local::free_port().unwrap();
        let child = tokio::process::Command::new("node")
            .arg(node_server(
                "@modelcontextprotocol/server-everything/dist/index.js",
            ))
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start node");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        eventually(
            "server-everything to listen",
            Duration::from_secs(20),
            || async { tokio::net::TcpStream::connect(addr).await.ok().map(|_| ()) },
        )
        .await;
        EverythingHttp {
            _child: child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }

    /// The server's address, from its URL.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.url
            .trim_start_matches("http://")
            .trim_end_matches("/mcp")
            .parse()
            .unwrap()
    }

    pub fn config(&self) -> McpServerConfig {
        McpServerConfig {
            name: "everything".into(),
            transport: McpTransport::Http {
                url: self.url.clone(),
            },
            retry_tool_errors: false,
        }
    }
}
