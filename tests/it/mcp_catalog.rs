//! `/mcp` tools: what MCP clients are shown and may call (the catalog, an agent's tools, the
//! caller's permissions), and the notifications of its changes.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use wharf_contract::TaskStatus;
use wharf_testkit::{Options, Wharf};

use crate::mcp_kit::*;

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

/// A third-party server's tool (server-everything) keeps over `/mcp` what its server
/// declared and returned: title, outputSchema, annotations, structuredContent. A call with an
/// idempotency key in `_meta` is answered again from its first task.
#[tokio::test]
async fn third_party_tools_keep_their_schemas_and_structured_results() {
    let w = Wharf::start_with(Options {
        servers: vec![wharf_testkit::everything_stdio()],
        ..Options::default()
    })
    .await;
    w.wait_for_tool("everything.get-structured-content").await;
    let mcp = connect(&format!("{}/mcp", w.api), None, false, Protocol::Current).await;
    let tools = mcp.list_all_tools().await.unwrap();
    let weather = tools
        .iter()
        .find(|t| t.name == "everything.get-structured-content")
        .expect("listed");
    assert_eq!(
        weather.title.as_deref(),
        Some("Get Structured Content Tool")
    );
    let output = weather.output_schema.as_ref().expect("its outputSchema");
    assert!(output["properties"]["temperature"].is_object());
    assert_eq!(
        weather.annotations.as_ref().unwrap().read_only_hint,
        Some(true)
    );

    let r = mcp
        .call_tool(call_params(
            "everything.get-structured-content",
            json!({"location": "Chicago"}),
        ))
        .await
        .unwrap();
    assert_eq!(
        r.structured_content,
        Some(json!({"temperature": 36, "conditions": "Light rain / drizzle", "humidity": 82}))
    );
    let listed: Value = serde_json::from_str(&text(&r)).expect("the content holds the JSON");
    assert_eq!(listed["temperature"], 36);

    // The same idempotency key: the same task, not a second one.
    let keyed = |key: &str| {
        let mut p = call_params("everything.echo", json!({"message": "once"}));
        let mut meta = rmcp::model::RequestMetaObject::new();
        meta.0.0.insert("wharf/idempotencyKey".into(), json!(key));
        p.meta = Some(meta);
        p
    };
    let first = mcp.call_tool(keyed("order-1")).await.unwrap();
    let again = mcp.call_tool(keyed("order-1")).await.unwrap();
    let other = mcp.call_tool(keyed("order-2")).await.unwrap();
    assert_eq!(task_of(&first), task_of(&again));
    assert_ne!(task_of(&first), task_of(&other));
    assert_eq!(text(&again), "Echo: once");
    mcp.cancel().await.unwrap();
    w.shutdown().await;
}

/// One tenant's `/mcp` never reaches another's agents or tasks.
#[tokio::test]
async fn a_tenant_sees_only_its_own_agents_and_tasks() {
    use rmcp::model::{CancelTaskParams, ErrorCode, GetTaskParams};
    let w = Wharf::start_with(Options::closed()).await;
    let acme = w.key("acme", "tenant-admin").await;
    let globex = w.key("globex", "tenant-admin").await;
    let acme_api = w.client_with(&acme);
    wharf_testkit::wait_for_tool_at(&acme_api, "demo.echo").await;
    let (status, _, _) = wharf_testkit::call(
        &acme_api,
        reqwest::Method::POST,
        "/api/v1/agents",
        Some(json!({"name": "helper", "allowed_tools": ["demo.*"]})),
    )
    .await;
    assert!(status.is_success(), "{status}");
    let agent = format!("{}/mcp/agents/helper", w.api);
    let theirs = bare_list_with(&agent, &globex).await;
    assert_eq!(theirs.status(), 404, "another tenant's agent is not found");

    let mine = connect(&agent, Some(&acme), true, Protocol::Current).await;
    let echo = mine
        .call_tool(call_params("demo.echo", json!({"message": "acme's"})))
        .await
        .unwrap();
    let task = task_of(&echo).to_string();
    assert!(
        mine.get_task(GetTaskParams::new(task.clone()))
            .await
            .is_ok()
    );
    mine.cancel().await.unwrap();

    let other = connect(
        &format!("{}/mcp", w.api),
        Some(&globex),
        true,
        Protocol::Current,
    )
    .await;
    let e = rpc_error(other.get_task(GetTaskParams::new(task.clone())).await);
    assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{e:?}");
    let e = rpc_error(other.cancel_task(CancelTaskParams::new(task.clone())).await);
    assert_eq!(e.code, ErrorCode::INVALID_PARAMS, "{e:?}");
    other.cancel().await.unwrap();
    w.shutdown().await;
}

/// The MCP Inspector's command line (npm `@modelcontextprotocol/inspector`) lists the tools
/// and calls one.
#[tokio::test]
async fn the_mcp_inspector_lists_and_calls_a_tool() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.echo").await;
    let launcher = wharf_testkit::node_server(
        "@modelcontextprotocol/inspector/clients/launcher/build/index.js",
    );
    let catalog = w.dir.path().join("inspector-catalog.json");
    let inspector = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(&launcher)
            .arg("--cli")
            .arg(format!("{}/mcp", w.api))
            .args(args)
            .env("MCP_CATALOG_PATH", &catalog)
            .kill_on_drop(true);
        async move {
            let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
                .await
                .expect("the Inspector answers within a minute")
                .unwrap();
            assert!(
                out.status.success(),
                "the Inspector failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).expect("the Inspector prints JSON")
        }
    };
    let listed = inspector(&["--method", "tools/list"]).await;
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"demo.echo") && names.contains(&"demo.sleep"),
        "{listed}"
    );
    let called = inspector(&[
        "--method",
        "tools/call",
        "--tool-name",
        "demo.echo",
        "--tool-arg",
        "message=from the inspector",
    ])
    .await;
    assert_eq!(
        called["content"][0]["text"], "from the inspector",
        "{called}"
    );
    let task = called["_meta"]["wharf/taskId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    w.wait_recorded(task, TaskStatus::Succeeded).await;
    w.shutdown().await;
}
