//! What the `/mcp` tests share: an rmcp client that keeps its progress notifications, how it
//! connects, and small readers of its answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ClientRequest,
    ErrorData, GetTaskParams, Implementation, ProgressNotificationParam, ProtocolVersion, Request,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, ServiceError, ServiceExt};
use serde_json::{Value, json};
use uuid::Uuid;
use wharf_gateway::GatewayConfig;
use wharf_gateway::mcp::McpConfig;
use wharf_testkit::{Options, Wharf, eventually};

/// An MCP client that keeps the progress notifications it receives.
#[derive(Clone, Default)]
pub(crate) struct TestClient {
    pub tasks: bool,
    pub progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl ClientHandler for TestClient {
    fn get_info(&self) -> ClientConfig {
        let mut caps = ClientCapabilities::builder();
        if self.tasks {
            caps = caps.enable_tasks();
        }
        ClientConfig::new(caps.build(), Implementation::new("wharf-test", "0.0.0"))
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _cx: NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }
}

pub(crate) type Mcp = RunningService<RoleClient, TestClient>;

/// How a test client speaks: MCP 2026-07-28 (stateless, capabilities on every request) or the
/// 2025 protocol with `initialize`.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Protocol {
    Current,
    Legacy,
}

pub(crate) async fn connect(
    url: &str,
    credential: Option<&str>,
    tasks: bool,
    protocol: Protocol,
) -> Mcp {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    if let Some(c) = credential {
        config = config.auth_header(c.to_owned());
    }
    let transport = StreamableHttpClientTransport::from_config(config);
    let client = TestClient {
        tasks,
        ..TestClient::default()
    };
    match protocol {
        Protocol::Current => client
            .serve_with_lifecycle(
                transport,
                ClientLifecycleMode::Discover {
                    preferred_versions: vec![ProtocolVersion::V_2026_07_28],
                },
            )
            .await
            .expect("discover /mcp"),
        Protocol::Legacy => client.serve(transport).await.expect("initialize /mcp"),
    }
}

pub(crate) fn call_params(tool: &str, arguments: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_owned()).with_arguments(
        arguments
            .as_object()
            .expect("arguments are an object")
            .clone(),
    )
}

/// The Wharf task a result names in its `_meta`.
pub(crate) fn task_of(r: &CallToolResult) -> Uuid {
    let meta = r.meta.as_ref().expect("the result has _meta");
    meta.0["wharf/taskId"].as_str().unwrap().parse().unwrap()
}

/// The JSON-RPC error of a request the server refused.
pub(crate) fn rpc_error<T: std::fmt::Debug>(r: Result<T, ServiceError>) -> ErrorData {
    match r {
        Err(ServiceError::McpError(e)) => e,
        other => panic!("not an MCP error: {other:?}"),
    }
}

pub(crate) fn text(r: &CallToolResult) -> String {
    r.content[0].as_text().expect("text content").text.clone()
}

/// A platform whose demo tools are listed, and a client of MCP 2026-07-28 on its `/mcp`.
pub(crate) async fn started(tasks: bool) -> (Wharf, Mcp) {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.sleep").await;
    let mcp = connect(&format!("{}/mcp", w.api), None, tasks, Protocol::Current).await;
    (w, mcp)
}

/// Starts a call of `demo.sleep` for a minute, to cancel.
pub(crate) async fn long_call(mcp: &Mcp) -> rmcp::service::RequestHandle<RoleClient> {
    let call = ClientRequest::CallToolRequest(Request::new(call_params(
        "demo.sleep",
        json!({"seconds": 60}),
    )));
    mcp.send_cancellable_request(call, PeerRequestOptions::no_options())
        .await
        .unwrap()
}

/// Polls `tasks/get` until the task ended, and returns its last state.
pub(crate) async fn ended(mcp: &Mcp, id: &str) -> rmcp::model::GetTaskResult {
    eventually("the MCP task ending", Duration::from_secs(30), || async {
        let t = mcp
            .get_task(GetTaskParams::new(id.to_owned()))
            .await
            .unwrap();
        t.task.task.status.is_terminal().then_some(t)
    })
    .await
}

/// A bare `tools/list` POST to `url`, without credentials.
pub(crate) async fn bare_list(url: &str) -> reqwest::Response {
    list_request(url).send().await.unwrap()
}

/// A bare `tools/list` POST to `url` with `credential`.
pub(crate) async fn bare_list_with(url: &str, credential: &str) -> reqwest::Response {
    list_request(url)
        .bearer_auth(credential)
        .send()
        .await
        .unwrap()
}

fn list_request(url: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
}

pub(crate) fn with_mcp(mcp: McpConfig) -> Options {
    Options {
        gateway: GatewayConfig {
            mcp,
            ..GatewayConfig::default()
        },
        ..Options::default()
    }
}
