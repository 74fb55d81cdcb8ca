//! `/mcp` calls: Wharf as an MCP server, called by rmcp's own client over streamable HTTP.
//! Calls are tasks; long calls become MCP tasks that outlive the gateway; cancelling a call
//! cancels its task, whichever gateway hears it.

use std::time::Duration;

use rmcp::model::{
    CallToolResponse, CallToolResult, CancelTaskParams, ErrorCode, GetTaskParams, TaskPayload,
    TaskStatus as McpStatus,
};
use serde_json::{Value, json};
use uuid::Uuid;
use wharf_contract::TaskStatus;
use wharf_gateway::mcp::McpConfig;
use wharf_testkit::{Wharf, eventually, round_robin_proxy};

use crate::mcp_kit::*;

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
async fn any_gateway_answers_any_request_of_a_client() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.sleep").await;
    let (other, other_gateway) = w.another_gateway().await;
    let other = other.as_str();
    // Each request on its own connection (rmcp's client keeps none idle), each connection
    // to the next gateway.
    let proxy = round_robin_proxy(vec![w.api.clone(), other.to_owned()]).await;
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

    // A 2025 client sends notifications/cancelled as a request of its own, which a balancer
    // may send to another gateway than the call's: here the call runs on the first gateway
    // and its cancellation goes to the other, which tells the first.
    let legacy = connect(&format!("{}/mcp", w.api), None, false, Protocol::Legacy).await;
    let handle = long_call(&legacy).await;
    let task = w.started_sleep(&[first]).await;
    let cancel = json!({
        "jsonrpc": "2.0",
        "method": "notifications/cancelled",
        "params": {"requestId": handle.id, "reason": "stop"},
    });
    let posted = reqwest::Client::new()
        .post(format!("{other}/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .json(&cancel)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 202);
    w.wait_demo_cancelled(task).await;
    w.wait_recorded(task, TaskStatus::Cancelled).await;
    legacy.cancel().await.unwrap();
    other_gateway.stop().await;
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
