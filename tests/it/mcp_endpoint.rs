//! `/mcp`: Wharf as an MCP server, called by rmcp's own client over streamable HTTP. Tools are
//! the catalog's, calls are tasks, long calls become MCP tasks that outlive the gateway.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ClientCapabilities,
    ClientConfig, ClientRequest, ErrorCode, ErrorData, GetTaskParams, Implementation,
    ProgressNotificationParam, ProtocolVersion, Request, TaskPayload, TaskStatus as McpStatus,
};
use rmcp::service::{NotificationContext, PeerRequestOptions, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, ServiceError, ServiceExt};
use serde_json::{Value, json};
use uuid::Uuid;
use wharf_contract::TaskStatus;
use wharf_gateway::GatewayConfig;
use wharf_gateway::mcp::McpConfig;
use wharf_testkit::{Options, Wharf, eventually, round_robin_proxy};

/// An MCP client that keeps the progress notifications it receives.
#[derive(Clone, Default)]
struct TestClient {
    tasks: bool,
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
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

type Mcp = RunningService<RoleClient, TestClient>;

/// How a test client speaks: MCP 2026-07-28 (stateless, capabilities on every request) or the
/// 2025 protocol with `initialize`.
#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Current,
    Legacy,
}

async fn connect(url: &str, credential: Option<&str>, tasks: bool, protocol: Protocol) -> Mcp {
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

fn call_params(tool: &str, arguments: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_owned()).with_arguments(
        arguments
            .as_object()
            .expect("arguments are an object")
            .clone(),
    )
}

/// The Wharf task a result names in its `_meta`.
fn task_of(r: &CallToolResult) -> Uuid {
    let meta = r.meta.as_ref().expect("the result has _meta");
    meta.0["wharf/taskId"].as_str().unwrap().parse().unwrap()
}

/// The JSON-RPC error of a request the server refused.
fn rpc_error<T: std::fmt::Debug>(r: Result<T, ServiceError>) -> ErrorData {
    match r {
        Err(ServiceError::McpError(e)) => e,
        other => panic!("not an MCP error: {other:?}"),
    }
}

fn text(r: &CallToolResult) -> String {
    r.content[0].as_text().expect("text content").text.clone()
}

/// A platform whose demo tools are listed, and a client of MCP 2026-07-28 on its `/mcp`.
async fn started(tasks: bool) -> (Wharf, Mcp) {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.sleep").await;
    let mcp = connect(&format!("{}/mcp", w.api), None, tasks, Protocol::Current).await;
    (w, mcp)
}

/// Starts a call of `demo.sleep` for a minute, to cancel.
async fn long_call(mcp: &Mcp) -> rmcp::service::RequestHandle<RoleClient> {
    let call = ClientRequest::CallToolRequest(Request::new(call_params(
        "demo.sleep",
        json!({"seconds": 60}),
    )));
    mcp.send_cancellable_request(call, PeerRequestOptions::no_options())
        .await
        .unwrap()
}

/// Polls `tasks/get` until the task ended, and returns its last state.
async fn ended(mcp: &Mcp, id: &str) -> rmcp::model::GetTaskResult {
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
async fn bare_list(url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap()
}

fn with_mcp(mcp: McpConfig) -> Options {
    Options {
        gateway: GatewayConfig {
            mcp,
            ..GatewayConfig::default()
        },
        ..Options::default()
    }
}

#[tokio::test]
async fn an_mcp_client_lists_the_catalog_and_calls_tools_through_the_queue() {
    let (w, mcp) = started(false).await;

    let tools = mcp.list_all_tools().await.unwrap();
    let sleep = tools
        .iter()
        .find(|t| t.name == "demo.sleep")
        .expect("demo.sleep listed");
    assert!(sleep.description.as_deref().unwrap().contains("Sleeps"));
    assert!(sleep.input_schema["properties"]["seconds"].is_object());
    assert!(tools.iter().any(|t| t.name == "demo.echo"));

    let echo = mcp
        .call_tool(call_params("demo.echo", json!({"message": "over mcp"})))
        .await
        .unwrap();
    assert_eq!(text(&echo), "over mcp");
    assert_ne!(echo.is_error, Some(true));
    let task = w.wait_recorded(task_of(&echo), TaskStatus::Succeeded).await;
    assert_eq!(task.tool, "demo.echo");

    // Progress reaches the caller on its own progress token.
    let sleep = mcp
        .call_tool(call_params("demo.sleep", json!({"seconds": 1, "steps": 4})))
        .await
        .unwrap();
    assert_eq!(text(&sleep), "slept 1 seconds");
    let progress = mcp.service().progress.lock().unwrap().clone();
    assert!(progress.len() >= 2, "progress notifications: {progress:?}");
    assert!(progress.iter().all(|p| p.total == Some(4.0)));
    assert_eq!(progress.last().unwrap().progress, 4.0);

    // A tool's own error is its result, unchanged.
    let failed = mcp
        .call_tool(call_params("demo.fail", json!({"message": "no luck"})))
        .await
        .unwrap();
    assert_eq!(failed.is_error, Some(true));
    assert_eq!(text(&failed), "no luck");

    // Arguments that fail the schema are a tool error naming the field; nothing is queued.
    let queued = w.stream_last_sequence("WHARF_TASKS").await;
    let bad = mcp
        .call_tool(call_params("demo.sleep", json!({"seconds": "soon"})))
        .await
        .unwrap();
    assert_eq!(bad.is_error, Some(true));
    let problem = bad.structured_content.expect("the problem document");
    assert_eq!(problem["code"], "invalid_arguments");
    assert_eq!(problem["errors"][0]["pointer"], "/arguments/seconds");
    assert_eq!(w.stream_last_sequence("WHARF_TASKS").await, queued);

    // An unknown tool is a protocol error.
    let e = rpc_error(mcp.call_tool(call_params("demo.nope", json!({}))).await);
    assert_eq!(e.code, ErrorCode::INVALID_PARAMS);
    mcp.cancel().await.unwrap();
    w.shutdown().await;
}

#[tokio::test]
async fn a_client_that_closes_its_call_cancels_the_task() {
    let (w, mcp) = started(false).await;
    let handle = long_call(&mcp).await;
    let task = w.started_sleep(&[]).await;
    // MCP 2026-07-28 cancels by closing the call's stream.
    handle.cancel(Some("changed my mind".into())).await.unwrap();
    w.wait_demo_cancelled(task).await;
    w.wait_recorded(task, TaskStatus::Cancelled).await;
    mcp.cancel().await.unwrap();
    w.shutdown().await;
}

#[tokio::test]
async fn long_calls_become_mcp_tasks_that_outlive_the_gateway() {
    let (mut w, mcp) = started(true).await;
    let answer = mcp
        .call_tool_once(call_params("demo.sleep", json!({"seconds": 3})))
        .await
        .unwrap();
    let CallToolResponse::Task(created) = answer else {
        panic!("a 3 s call should become a task: {answer:?}");
    };
    assert_eq!(created.task.status, McpStatus::Working);
    let id: Uuid = created.task.task_id.parse().expect("the Wharf task id");
    mcp.cancel().await.unwrap();

    // Another gateway process answers for it.
    w.gateway.take().unwrap().stop().await;
    w.start_gateway().await;
    let mcp = connect(&format!("{}/mcp", w.api), None, true, Protocol::Current).await;
    let done = ended(&mcp, &id.to_string()).await;
    let TaskPayload::Completed { result } = done.task.payload else {
        panic!("the task should complete: {:?}", done.task);
    };
    let result: CallToolResult = serde_json::from_value(Value::Object(result)).unwrap();
    assert_eq!(text(&result), "slept 3 seconds");

    // tasks/cancel cancels the Wharf task.
    let answer = mcp
        .call_tool_once(call_params("demo.sleep", json!({"seconds": 60})))
        .await
        .unwrap();
    let CallToolResponse::Task(created) = answer else {
        panic!("a 60 s call should become a task");
    };
    let id: Uuid = created.task.task_id.parse().unwrap();
    eventually("the sleep starting", Duration::from_secs(15), || async {
        w.demo_log_for(id)
            .iter()
            .any(|l| l["event"] == "started")
            .then_some(())
    })
    .await;
    mcp.cancel_task(CancelTaskParams::new(id.to_string()))
        .await
        .unwrap();
    w.wait_demo_cancelled(id).await;
    let t = ended(&mcp, &id.to_string()).await;
    assert_eq!(t.task.task.status, McpStatus::Cancelled);
    assert!(matches!(t.task.payload, TaskPayload::Cancelled));

    // A task id Wharf never made is not found.
    let e = rpc_error(
        mcp.get_task(GetTaskParams::new(Uuid::now_v7().to_string()))
            .await,
    );
    assert_eq!(e.code, ErrorCode::INVALID_PARAMS);
    mcp.cancel().await.unwrap();
    w.shutdown().await;
}

#[tokio::test]
async fn without_the_tasks_extension_a_call_waits_then_names_its_task() {
    let w = Wharf::start_with(with_mcp(McpConfig {
        max_wait_secs: 1,
        ..McpConfig::default()
    }))
    .await;
    w.wait_for_tool("demo.sleep").await;
    let mcp = connect(&format!("{}/mcp", w.api), None, false, Protocol::Current).await;
    let e = rpc_error(
        mcp.call_tool(call_params("demo.sleep", json!({"seconds": 3})))
            .await,
    );
    let id: Uuid = e.data.as_ref().unwrap()["taskId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(e.message.contains(&id.to_string()), "{}", e.message);
    // The task runs on to its end.
    w.wait_recorded(id, TaskStatus::Succeeded).await;

    // The tasks methods need the extension declared.
    let e = rpc_error(mcp.get_task(GetTaskParams::new(id.to_string())).await);
    assert_eq!(e.code, ErrorCode(-32021), "{e:?}");
    mcp.cancel().await.unwrap();
    w.shutdown().await;
}

#[tokio::test]
async fn an_agent_is_a_virtual_server_with_its_own_tools_and_defaults() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.sleep").await;
    let (status, _, _) = wharf_testkit::call(
        &w.client(),
        reqwest::Method::POST,
        "/api/v1/agents",
        Some(json!({"name": "greeter", "allowed_tools": ["demo.echo"], "max_attempts": 7})),
    )
    .await;
    assert!(status.is_success(), "{status}");
    let mcp = connect(
        &format!("{}/mcp/agents/greeter", w.api),
        None,
        false,
        Protocol::Current,
    )
    .await;
    let tools = mcp.list_all_tools().await.unwrap();
    let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["demo.echo"]);
    let echo = mcp
        .call_tool(call_params("demo.echo", json!({"message": "hello"})))
        .await
        .unwrap();
    let task = w.wait_recorded(task_of(&echo), TaskStatus::Succeeded).await;
    assert_eq!(task.agent.as_deref(), Some("greeter"));
    assert_eq!(task.max_attempts, 7);
    let refused = mcp
        .call_tool(call_params("demo.sleep", json!({"seconds": 0})))
        .await
        .unwrap();
    assert_eq!(refused.is_error, Some(true));
    assert_eq!(
        refused.structured_content.unwrap()["code"],
        "tool_not_allowed"
    );
    mcp.cancel().await.unwrap();

    let missing = bare_list(&format!("{}/mcp/agents/nobody", w.api)).await;
    assert_eq!(missing.status(), 404);
    w.shutdown().await;
}

#[tokio::test]
async fn mcp_needs_the_same_credentials_as_the_api() {
    let w = Wharf::start_with(Options::closed()).await;
    let refused = bare_list(&format!("{}/mcp", w.api)).await;
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().contains_key("www-authenticate"));

    let reader = w.key("default", "reader").await;
    let admin = w.key("default", "admin").await;
    wharf_testkit::wait_for_tool_at(&w.client_with(&admin), "demo.echo").await;
    let mcp = connect(
        &format!("{}/mcp", w.api),
        Some(&admin),
        false,
        Protocol::Current,
    )
    .await;
    assert!(!mcp.list_all_tools().await.unwrap().is_empty());
    mcp.cancel().await.unwrap();
    // A key that may read but not submit lists, and is refused a call.
    let mcp = connect(
        &format!("{}/mcp", w.api),
        Some(&reader),
        false,
        Protocol::Current,
    )
    .await;
    let e = rpc_error(
        mcp.call_tool(call_params("demo.echo", json!({"message": "hi"})))
            .await,
    );
    assert_eq!(e.data.unwrap()["code"], "forbidden");
    mcp.cancel().await.unwrap();
    w.shutdown().await;
}

#[tokio::test]
async fn any_gateway_answers_any_request_of_a_client() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.sleep").await;
    let (other, other_gateway) = w.another_gateway().await;
    // Each request on its own connection (rmcp's client keeps none idle), each connection
    // to the next gateway.
    let proxy = round_robin_proxy(vec![w.api.clone(), other]).await;
    let url = format!("{proxy}/mcp");

    let mcp = connect(&url, None, true, Protocol::Current).await;
    assert!(!mcp.list_all_tools().await.unwrap().is_empty());
    let answer = mcp
        .call_tool_once(call_params("demo.sleep", json!({"seconds": 2})))
        .await
        .unwrap();
    let CallToolResponse::Task(created) = answer else {
        panic!("a 2 s call should become a task");
    };
    let id = created.task.task_id;
    let first: Uuid = id.parse().unwrap();
    let done = ended(&mcp, &id).await;
    assert_eq!(done.task.task.status, McpStatus::Completed);
    mcp.cancel().await.unwrap();

    // A 2025 client sends notifications/cancelled as a request of its own: it reaches the
    // other gateway, which tells the one running the call.
    let legacy = connect(&url, None, false, Protocol::Legacy).await;
    let handle = long_call(&legacy).await;
    let task = w.started_sleep(&[first]).await;
    handle.cancel(Some("stop".into())).await.unwrap();
    w.wait_demo_cancelled(task).await;
    w.wait_recorded(task, TaskStatus::Cancelled).await;
    legacy.cancel().await.unwrap();
    other_gateway.stop().await;
    w.shutdown().await;
}

/// A client of MCP 2026-07-28 that listens hears when the catalog changes, and not before.
#[tokio::test]
async fn listening_clients_hear_when_the_tools_change() {
    use rmcp::model::{ServerNotification, SubscriptionFilter};
    let mut w = Wharf::start().await;
    let mcp = connect(&format!("{}/mcp", w.api), None, false, Protocol::Current).await;
    let mut changes = mcp
        .listen(SubscriptionFilter::builder().tools_list_changed().build())
        .await
        .unwrap();
    // A second worker with the same server advertises the same tools: no change, no
    // notification.
    let (_, advertised) = w.bus.watch_tools().await.unwrap();
    let mut advertised = std::pin::pin!(advertised);
    w.add_worker();
    let again = tokio::time::timeout(Duration::from_secs(30), advertised.next()).await;
    assert!(
        again.is_ok(),
        "the second worker advertises its tools within 30 s"
    );
    // The gateway's catalog reads the same update: give it half a second to (not) speak.
    let quiet = tokio::time::timeout(Duration::from_millis(500), changes.next()).await;
    assert!(quiet.is_err(), "a notification with no change: {quiet:?}");

    // A worker advertises a new server.
    let server = wharf_contract::ToolServer {
        v: wharf_contract::tool::TOOL_SERVER_VERSION,
        server: "extra".into(),
        queues: vec!["default".into()],
        tools: vec![wharf_contract::ToolInfo {
            name: "extra.ping".into(),
            server: "extra".into(),
            description: Some("Answers pong".into()),
            input_schema: json!({"type": "object"}),
            title: Some("Ping".into()),
            output_schema: Some(
                json!({"type": "object", "properties": {"pong": {"type": "boolean"}}}),
            ),
            annotations: Some(json!({"readOnlyHint": true})),
        }],
        updated_at: chrono::Utc::now(),
        registry: false,
    };
    w.bus.advertise_tools(&server).await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(10), changes.next())
        .await
        .expect("a notification within 10 s")
        .unwrap();
    assert!(
        matches!(
            heard,
            Some(ServerNotification::ToolListChangedNotification(_))
        ),
        "{heard:?}"
    );
    // The list shows the new tool with what its server declared.
    let tools = mcp.list_all_tools().await.unwrap();
    let ping = tools
        .iter()
        .find(|t| t.name == "extra.ping")
        .expect("extra.ping listed");
    assert_eq!(ping.title.as_deref(), Some("Ping"));
    assert!(ping.output_schema.is_some());
    assert_eq!(
        ping.annotations.as_ref().unwrap().read_only_hint,
        Some(true)
    );
    changes.cancel().await.unwrap();
    mcp.cancel().await.unwrap();
    w.shutdown().await;
}

/// A gateway that stops closes its streams; that is no client cancelling: the calls run on.
#[tokio::test]
async fn a_gateway_stopping_mid_call_cancels_nothing() {
    let (mut w, mcp) = started(false).await;
    let call = tokio::spawn(async move {
        let r = mcp
            .call_tool(call_params("demo.sleep", json!({"seconds": 3})))
            .await;
        (mcp, r)
    });
    let task = w.started_sleep(&[]).await;
    w.gateway.take().unwrap().stop().await;
    let (mcp, answer) = call.await.unwrap();
    assert!(
        answer.is_err(),
        "the stream ended with the gateway: {answer:?}"
    );
    w.wait_recorded(task, TaskStatus::Succeeded).await;
    let _ = mcp.cancel().await;
    w.shutdown().await;
}
