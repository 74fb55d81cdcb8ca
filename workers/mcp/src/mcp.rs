//! Live connections to MCP servers: one per configured server, shared by every task of the
//! worker, supervised (a stdio child that dies is started again with backoff), with many calls in
//! flight at once and MCP progress notifications routed back to the task that asked.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, CancelledNotificationParam, ClientRequest,
    ProgressNotificationParam, ProgressToken, Request, RequestMetaObject, ServerResult, Tool,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, Peer, RoleClient, ServiceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// How to reach one MCP server. In configuration files it is one table with a `transport`
/// key, e.g. `{ name = "demo", transport = "stdio", command = "wharf", args = ["mcp-demo"] }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "ServerTable", into = "ServerTable")]
pub struct McpServerConfig {
    /// Name tools are addressed by (`<name>.<tool>`): letters, digits, `-`, `_`.
    pub name: String,
    pub transport: McpTransport,
    /// Treat the server's tool errors (`isError: true` results) as worth retrying, like a
    /// timeout, instead of final. For tools whose errors are often passing (a rate-limited API).
    pub retry_tool_errors: bool,
}

impl McpServerConfig {
    /// `message` without the secrets of this server's URL, if it has one.
    fn scrub(&self, message: &str) -> String {
        match &self.transport {
            McpTransport::Http { url } => wharf_bus::scrub_url(message, url),
            McpTransport::Stdio { .. } => message.to_owned(),
        }
    }
}

/// The transport of an MCP server.
#[derive(Debug, Clone, PartialEq)]
pub enum McpTransport {
    /// A child process speaking MCP on its stdin and stdout.
    Stdio {
        command: String,
        args: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: Option<String>,
    },
    /// A server speaking MCP streamable HTTP at `url`.
    Http { url: String },
}

/// The configuration-file shape of [`McpServerConfig`]: flat, tagged by `transport`, and strict
/// about unknown keys (serde cannot combine `flatten` with `deny_unknown_fields`).
#[derive(Serialize, Deserialize)]
#[serde(tag = "transport", rename_all = "snake_case", deny_unknown_fields)]
enum ServerTable {
    Stdio {
        name: String,
        command: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        #[serde(default)]
        cwd: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        retry_tool_errors: bool,
    },
    Http {
        name: String,
        url: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        retry_tool_errors: bool,
    },
}

impl From<ServerTable> for McpServerConfig {
    fn from(t: ServerTable) -> Self {
        match t {
            ServerTable::Stdio {
                name,
                command,
                args,
                env,
                cwd,
                retry_tool_errors,
            } => McpServerConfig {
                name,
                transport: McpTransport::Stdio {
                    command,
                    args,
                    env,
                    cwd,
                },
                retry_tool_errors,
            },
            ServerTable::Http {
                name,
                url,
                retry_tool_errors,
            } => McpServerConfig {
                name,
                transport: McpTransport::Http { url },
                retry_tool_errors,
            },
        }
    }
}

impl From<McpServerConfig> for ServerTable {
    fn from(c: McpServerConfig) -> Self {
        match c.transport {
            McpTransport::Stdio {
                command,
                args,
                env,
                cwd,
            } => ServerTable::Stdio {
                name: c.name,
                command,
                args,
                env,
                cwd,
                retry_tool_errors: c.retry_tool_errors,
            },
            McpTransport::Http { url } => ServerTable::Http {
                name: c.name,
                url,
                retry_tool_errors: c.retry_tool_errors,
            },
        }
    }
}

/// Why a call did not produce a tool result.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server is not reachable now (not started, crashed, connection lost): retry later.
    #[error("mcp server {server} is unavailable: {message}")]
    Unavailable { server: String, message: String },
    /// The server answered with a JSON-RPC error (e.g. invalid params): retrying won't help.
    #[error("mcp server {server} refused the call: {message}")]
    Refused { server: String, message: String },
    /// The caller cancelled the call; the server was told.
    #[error("cancelled")]
    Cancelled,
    /// The attempt ran past its timeout; the server was told to cancel.
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

/// Where progress notifications go, by token, for one connection (rmcp numbers tokens per
/// connection, so a new connection gets new routes). A notification can arrive before its call
/// has registered (rmcp hands each notification to its own task): those wait in `early` until
/// the call registers, at most [`EARLY_TTL`] and [`EARLY_MAX`] tokens.
#[derive(Default)]
struct Routes {
    live: HashMap<ProgressToken, ProgressSender>,
    early: HashMap<ProgressToken, (Instant, Vec<ProgressNotificationParam>)>,
}

const EARLY_TTL: Duration = Duration::from_secs(10);
const EARLY_MAX: usize = 1024;

type ProgressRoutes = Arc<Mutex<Routes>>;

/// Where one call's progress notifications go. Boxed: an unbounded channel allocates room for 32
/// items when it is made, and every call has one; 32 pointers cost far less than 32
/// notifications.
pub type ProgressSender = mpsc::UnboundedSender<Box<ProgressNotificationParam>>;

/// The client side of every connection: routes progress notifications by token.
#[derive(Clone, Default)]
struct WharfClient {
    routes: ProgressRoutes,
}

impl ClientHandler for WharfClient {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let mut routes = self.routes.lock().unwrap();
        if let Some(route) = routes.live.get(&params.progress_token) {
            let _ = route.send(Box::new(params));
            return;
        }
        let now = Instant::now();
        if routes.early.len() >= EARLY_MAX {
            routes
                .early
                .retain(|_, (at, _)| now.duration_since(*at) < EARLY_TTL);
        }
        if routes.early.len() < EARLY_MAX {
            routes
                .early
                .entry(params.progress_token.clone())
                .or_insert_with(|| (now, Vec::new()))
                .1
                .push(params);
        }
    }
}

impl WharfClient {
    /// Routes `token`'s notifications to `to`, including any that came early.
    fn register(&self, token: ProgressToken, to: ProgressSender) {
        let mut routes = self.routes.lock().unwrap();
        if let Some((at, early)) = routes.early.remove(&token)
            && at.elapsed() < EARLY_TTL
        {
            for note in early {
                let _ = to.send(Box::new(note));
            }
        }
        routes.live.insert(token, to);
    }
}

/// A live connection: the peer to call and the routes of its progress notifications.
#[derive(Clone)]
struct Live {
    peer: Peer<RoleClient>,
    client: WharfClient,
}

/// A supervised connection to one MCP server.
pub struct McpServer {
    name: String,
    live: watch::Receiver<Option<Live>>,
    retry_tool_errors: bool,
    /// Tells this connection's tool lists from those of an earlier one of the same name.
    generation: u64,
    /// Started from the runtime configuration's registry, not the worker's file.
    from_registry: bool,
    /// The URL of a streamable HTTP server, to keep its secrets out of error messages.
    url: Option<String>,
}

/// Numbers every [`McpServer`] a process starts.
static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl std::fmt::Debug for McpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpServer")
            .field("name", &self.name)
            .finish()
    }
}

/// Tools a server listed after (re)connecting: its name, its [`McpServer::generation`], the
/// tools.
pub type ToolsUpdate = (String, u64, Vec<Tool>);

impl McpServer {
    /// Starts supervising `config`: connects now and again whenever the connection ends,
    /// sending the server's tool list on `tools` after every successful connect.
    pub fn start(
        config: McpServerConfig,
        tools: mpsc::UnboundedSender<ToolsUpdate>,
        shutdown: CancellationToken,
    ) -> Arc<McpServer> {
        Self::start_from(config, false, tools, shutdown)
    }

    /// Like [`McpServer::start`]; `from_registry` marks a server of the runtime registry.
    pub(crate) fn start_from(
        config: McpServerConfig,
        from_registry: bool,
        tools: mpsc::UnboundedSender<ToolsUpdate>,
        shutdown: CancellationToken,
    ) -> Arc<McpServer> {
        if let McpTransport::Http { url } = &config.transport {
            // The HTTP client's own errors print the URL, token and all.
            for secret in wharf_bus::url_secrets(url) {
                wharf_telemetry::redact::keep_out_of_logs(&secret);
            }
        }
        let (tx, rx) = watch::channel(None);
        let generation = GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let server = Arc::new(McpServer {
            name: config.name.clone(),
            live: rx,
            retry_tool_errors: config.retry_tool_errors,
            generation,
            from_registry,
            url: match &config.transport {
                McpTransport::Http { url } => Some(url.clone()),
                McpTransport::Stdio { .. } => None,
            },
        });
        tokio::spawn(supervise(config, generation, tx, tools, shutdown));
        server
    }

    /// See [`ToolsUpdate`].
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether this server comes from the runtime registry.
    pub fn from_registry(&self) -> bool {
        self.from_registry
    }

    /// Whether this server's tool errors are retried (see [`McpServerConfig::retry_tool_errors`]).
    pub fn retry_tool_errors(&self) -> bool {
        self.retry_tool_errors
    }

    /// Waits up to `wait` for a live connection.
    async fn live(&self, wait: Duration) -> Result<Live, CallError> {
        let mut rx = self.live.clone();
        let found = tokio::time::timeout(wait, rx.wait_for(Option::is_some)).await;
        match found {
            Ok(Ok(peer)) => Ok(peer.clone().expect("waited for some")),
            _ => Err(CallError::Unavailable {
                server: self.name.clone(),
                message: format!("no connection within {wait:?}"),
            }),
        }
    }

    /// Calls `tool` with `arguments`, forwarding progress to `progress`, until it answers, `cancel`
    /// fires or `timeout` passes. In the last two cases the server receives
    /// `notifications/cancelled` for the request. (The caller times it: see [`measure_call`].)
    pub async fn call(
        &self,
        tool: &str,
        arguments: Map<String, Value>,
        meta: Map<String, Value>,
        progress: ProgressSender,
        cancel: &CancellationToken,
        timeout: Option<Duration>,
    ) -> Result<CallToolResult, CallError> {
        let Live { peer, client } = tokio::select! {
            live = Box::pin(self.live(Duration::from_secs(30))) => live?,
            () = cancel.cancelled() => return Err(CallError::Cancelled),
        };
        let mut params = CallToolRequestParams::new(tool.to_owned());
        params.arguments = Some(arguments);
        let options = PeerRequestOptions::no_options().with_meta(RequestMetaObject::from(meta));
        let request = ClientRequest::CallToolRequest(Request::new(params));
        // Boxed, like every await the call makes once: the call's future lives as long as the
        // call, and should not carry room for these (see `Publisher::publish` in run.rs).
        let handle = Box::pin(peer.send_cancellable_request(request, options))
            .await
            .map_err(|e| self.unavailable(e))?;
        let token = handle.progress_token.clone();
        let id = handle.id.clone();
        client.register(token.clone(), progress);
        let _route = RouteGuard {
            routes: &client.routes,
            token,
        };
        let deadline = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        let stop = tokio::select! {
            answer = handle.rx => {
                return match answer {
                    Ok(Ok(ServerResult::CallToolResult(result))) => Ok(result),
                    Ok(Ok(other)) => Err(CallError::Refused {
                        server: self.name.clone(),
                        message: format!("unexpected answer to tools/call: {other:?}"),
                    }),
                    Ok(Err(rmcp::ServiceError::McpError(e))) => Err(CallError::Refused {
                        server: self.name.clone(),
                        message: e.message.to_string(),
                    }),
                    Ok(Err(e)) => Err(self.unavailable(e)),
                    Err(_) => Err(CallError::Unavailable {
                        server: self.name.clone(),
                        message: "connection closed during the call".into(),
                    }),
                };
            }
            () = cancel.cancelled() => CallError::Cancelled,
            () = deadline => CallError::TimedOut(timeout.unwrap_or_default()),
        };
        let reason = match stop {
            CallError::TimedOut(_) => "timed out",
            _ => "cancelled by the user",
        };
        let note = CancelledNotificationParam::new(Some(id), Some(reason.into()));
        if let Err(e) = Box::pin(peer.notify_cancelled(note)).await {
            tracing::warn!(server = %self.name, error = %e, "could not tell the mcp server to cancel");
        }
        Err(stop)
    }

    /// The message becomes the task's error, which its tenant reads: the URL's secrets go.
    fn unavailable(&self, e: impl std::fmt::Display) -> CallError {
        let message = match &self.url {
            Some(url) => wharf_bus::scrub_url(&e.to_string(), url),
            None => e.to_string(),
        };
        CallError::Unavailable {
            server: self.name.clone(),
            message,
        }
    }
}

/// Records one call's time and outcome (`wharf_mcp_call_duration_seconds`, and
/// `wharf_mcp_call_errors_total` unless it returned a result). Kept out of [`McpServer::call`]:
/// a wrapper future around the call would cost every running task its size.
pub fn measure_call(
    server: &str,
    tool: &str,
    result: &Result<CallToolResult, CallError>,
    took: Duration,
) {
    let outcome = match result {
        Ok(r) if r.is_error == Some(true) => "tool_error",
        Ok(_) => "ok",
        Err(CallError::Cancelled) => "cancelled",
        Err(CallError::TimedOut(_)) => "timeout",
        Err(CallError::Unavailable { .. }) => "unavailable",
        Err(CallError::Refused { .. }) => "error",
    };
    let labels = [
        ("server", server.to_owned()),
        ("tool", tool.to_owned()),
        ("outcome", outcome.to_owned()),
    ];
    metrics::histogram!("wharf_mcp_call_duration_seconds", &labels).record(took.as_secs_f64());
    if outcome != "ok" {
        metrics::counter!("wharf_mcp_call_errors_total", &labels).increment(1);
    }
}

struct RouteGuard<'a> {
    routes: &'a ProgressRoutes,
    token: ProgressToken,
}

impl Drop for RouteGuard<'_> {
    fn drop(&mut self) {
        let mut routes = self.routes.lock().unwrap();
        routes.live.remove(&self.token);
        routes.early.remove(&self.token);
    }
}

async fn connect(
    config: &McpServerConfig,
    client: WharfClient,
) -> Result<RunningService<RoleClient, WharfClient>, String> {
    match &config.transport {
        McpTransport::Stdio {
            command,
            args,
            env,
            cwd,
        } => {
            let mut cmd = tokio::process::Command::new(command);
            cmd.args(args).envs(env);
            if let Some(cwd) = cwd {
                cmd.current_dir(cwd);
            }
            let transport =
                crate::stdio::spawn(cmd).map_err(|e| format!("cannot start {command}: {e}"))?;
            client.serve(transport).await.map_err(|e| e.to_string())
        }
        McpTransport::Http { url } => {
            let transport = StreamableHttpClientTransport::from_uri(url.as_str());
            // The error quotes the URL, whose query may hold a token.
            client
                .serve(transport)
                .await
                .map_err(|e| wharf_bus::scrub_url(&e.to_string(), url))
        }
    }
}

async fn list_tools(peer: &Peer<RoleClient>) -> Result<Vec<Tool>, String> {
    peer.list_all_tools().await.map_err(|e| e.to_string())
}

/// Keeps one server connected: connect, list tools, wait for the connection to end, back off,
/// start again. Backoff doubles from 100 ms to 30 s and resets after a connection that lived 30 s.
async fn supervise(
    config: McpServerConfig,
    generation: u64,
    live_tx: watch::Sender<Option<Live>>,
    tools_tx: mpsc::UnboundedSender<ToolsUpdate>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    let mut connects = 0u64;
    while !shutdown.is_cancelled() {
        let started = tokio::time::Instant::now();
        let connected = tokio::select! {
            c = connect(&config, WharfClient::default()) => c,
            () = shutdown.cancelled() => break,
        };
        match connected {
            Ok(service) => {
                let peer = service.peer().clone();
                match list_tools(&peer).await {
                    Ok(tools) => {
                        tracing::info!(server = %config.name, tools = tools.len(), "mcp server connected");
                        connects += 1;
                        if connects > 1 {
                            metrics::counter!("wharf_mcp_server_restarts_total", "server" => config.name.clone())
                                .increment(1);
                        }
                        let _ = tools_tx.send((config.name.clone(), generation, tools));
                        let client = service.service().clone();
                        live_tx.send_replace(Some(Live { peer, client }));
                        tokio::select! {
                            _ = service.waiting() => {
                                tracing::warn!(server = %config.name, "mcp server connection ended");
                            }
                            () = shutdown.cancelled() => {
                                live_tx.send_replace(None);
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        let e = config.scrub(&e);
                        tracing::warn!(server = %config.name, error = %e, "mcp server did not list its tools");
                        let _ = service.cancel().await;
                    }
                }
                live_tx.send_replace(None);
            }
            Err(e) => {
                tracing::warn!(server = %config.name, error = %e, "cannot connect to mcp server")
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.cancelled() => break,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}
