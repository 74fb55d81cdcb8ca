//! `/mcp`: Wharf as an MCP server (streamable HTTP, rmcp's server side). Its tools are the
//! catalog's; each `tools/call` is a task in the queue like any other, so a long call survives
//! the connection, the gateway and the worker. `/mcp/agents/{agent}` is one agent's view: its
//! tools only, its defaults on every call.
//!
//! The service is stateless (no `Mcp-Session-Id`): every request carries what it needs, so any
//! gateway answers any request of a client, and a restart loses nothing a client holds. What
//! outlives a request (a call turned into an MCP task) is a Wharf task, read from JetStream and
//! the database by whichever gateway is asked.
//!
//! - `server.rs`: the handler (capabilities, `tools/list`, `tasks/get`, `tasks/cancel`, the
//!   `subscriptions/listen` that carries `notifications/tools/list_changed`);
//! - `call.rs`: `tools/call`, from the submission to the tool's result or a task handle;
//! - `cancel.rs`: `notifications/cancelled` from clients of the protocol versions that send it
//!   as a request of its own, turned into a task cancel;
//! - `resource.rs`: the OAuth protected-resource metadata naming the JWT issuer.

mod call;
mod cancel;
mod resource;
mod server;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde::{Deserialize, Serialize};
use wharf_contract::ErrorCode;

use crate::auth::Principal;
use crate::problem::ApiError;
use crate::{AppState, AuthMode};

pub(crate) use resource::challenge;
pub(crate) use server::WharfMcp;

/// `[gateway.mcp]`: how `/mcp` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// `Host` names `/mcp` answers (a name alone matches any port), against DNS rebinding.
    /// Empty: the loopback names when authentication is open (a page a browser loaded from
    /// elsewhere cannot reach a local gateway through a name it controls), any name otherwise
    /// (a request without the credential gets nowhere).
    pub allowed_hosts: Vec<String>,
    /// How long `tools/call` waits for the task to end before it answers with an MCP task
    /// instead, for clients that declared the tasks extension.
    pub task_after_ms: u64,
    /// How long `tools/call` waits at most for clients without the tasks extension; then it
    /// answers with an error naming the task, which runs on (read it over REST).
    pub max_wait_secs: u64,
    /// The polling interval `tasks/get` suggests to clients.
    pub poll_interval_ms: u64,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            allowed_hosts: Vec::new(),
            task_after_ms: 1000,
            max_wait_secs: 600,
            poll_interval_ms: 1000,
        }
    }
}

impl McpConfig {
    pub fn task_after(&self) -> Duration {
        Duration::from_millis(self.task_after_ms)
    }

    pub fn max_wait(&self) -> Duration {
        Duration::from_secs(self.max_wait_secs)
    }
}

/// The agent of `/mcp/agents/{agent}`, looked up before rmcp sees the request.
#[derive(Debug, Clone)]
pub(crate) struct McpAgent(pub wharf_contract::Agent);

/// `/mcp` and `/mcp/agents/{agent}`; the caller must already be authenticated.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let service = service(state);
    Router::new()
        .route_service("/mcp", service.clone())
        .route_service("/mcp/agents/{agent}", service)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cancel::relay_cancellations,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            find_agent,
        ))
}

/// What `/mcp` serves before authentication: its protected-resource metadata.
pub(crate) fn public_routes() -> Router<AppState> {
    Router::new()
        .route(resource::WELL_KNOWN, axum::routing::get(resource::metadata))
        .route(
            &format!("{}/{{*path}}", resource::WELL_KNOWN),
            axum::routing::get(resource::metadata),
        )
}

fn service(state: &AppState) -> StreamableHttpService<WharfMcp, NeverSessionManager> {
    let c = &state.config;
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        // SSE from the first byte: progress flows as it comes, and keep-alive comments hold
        // a long call's connection open through proxies.
        .with_json_response(false)
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        .with_max_request_body_bytes(c.max_body_bytes)
        .with_cancellation_token(state.stopping.child_token());
    config = if !c.mcp.allowed_hosts.is_empty() {
        config.with_allowed_hosts(c.mcp.allowed_hosts.clone())
    } else if state.auth.mode() == AuthMode::Open {
        config.with_allowed_hosts(["localhost", "127.0.0.1", "::1", "[::1]"])
    } else {
        config.disable_allowed_hosts()
    };
    let calls = cancel::Calls::default();
    tokio::spawn(calls.clone().follow(state.clone()));
    let handler = WharfMcp::new(state.clone(), calls);
    StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// Puts the agent a `/mcp/agents/{agent}` request names into its extensions; 404 when the
/// caller's tenant has no such agent.
async fn find_agent(
    State(state): State<AppState>,
    principal: Principal,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(name) = request.uri().path().strip_prefix("/mcp/agents/") else {
        return next.run(request).await;
    };
    let name = name.to_owned();
    let agent = if wharf_contract::valid_name(&name) {
        match state.store.agent(principal.tenant(), &name).await {
            Ok(agent) => agent,
            Err(e) => return ApiError::from(e).into_response(),
        }
    } else {
        None
    };
    match agent {
        Some(agent) => {
            request.extensions_mut().insert(McpAgent(agent));
            next.run(request).await
        }
        None => ApiError::new(
            ErrorCode::NotFound,
            format!("no agent {name:?} in this tenant (see GET /api/v1/agents)"),
        )
        .into_response(),
    }
}
