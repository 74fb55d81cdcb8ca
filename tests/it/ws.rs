//! The WebSocket protocol: submit, live events, late subscribers, bad messages.

use serde_json::{Value, json};
use uuid::Uuid;
use wharf_contract::TaskStatus;
use wharf_testkit::{Wharf, WsClient};

fn seqs(messages: &[Value]) -> Vec<u64> {
    messages.iter().filter_map(|m| m["seq"].as_u64()).collect()
}

#[tokio::test]
async fn submit_over_websocket_streams_progress_and_the_result() {
    let w = Wharf::start().await;
    let mut ws = WsClient::connect(&w).await;
    ws.send(json!({
        "type": "task:submit",
        "ref": "r1",
        "task": {"tool": "demo.sleep", "arguments": {"seconds": 0.4, "steps": 4}}
    }))
    .await;
    let accepted = ws.next().await;
    assert_eq!(accepted["type"], "task:accepted");
    assert_eq!(accepted["ref"], "r1");
    assert_eq!(accepted["task"]["status"], "queued");
    let id: Uuid = accepted["task_id"].as_str().unwrap().parse().unwrap();

    let rest = ws.until_terminal(id).await;
    let types: Vec<&str> = rest.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "task:started",
            "task:progress",
            "task:progress",
            "task:progress",
            "task:progress",
            "task:complete"
        ]
    );
    assert_eq!(rest[4]["progress"], 4.0);
    assert_eq!(rest[4]["total"], 4.0);
    assert_eq!(rest[5]["result"]["content"][0]["text"], "slept 0.4 seconds");

    let recorded = w.wait_recorded(id, TaskStatus::Succeeded).await;
    assert_eq!(recorded.progress.unwrap().progress, 4.0);
    // What the socket showed is exactly what was recorded, minus the submission.
    let stored = w.event_seqs(id).await;
    assert_eq!(seqs(&rest), stored[1..]);
    w.shutdown().await;
}

#[tokio::test]
async fn late_subscribers_get_the_history_then_live_events_once_each() {
    let w = Wharf::start().await;
    let id = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 1.5, "steps": 15}}))
        .await;
    // One subscriber joins while the task runs, one after it ended.
    wharf_testkit::eventually(
        "some progress",
        std::time::Duration::from_secs(20),
        || async {
            let p = w.store.task(id).await.unwrap()?.progress?;
            (p.progress >= 3.0).then_some(())
        },
    )
    .await;
    let mut during = WsClient::connect(&w).await;
    during
        .send(json!({"type": "task:subscribe", "task_id": id}))
        .await;
    let seen_during = during.until_terminal(id).await;

    w.wait_recorded(id, TaskStatus::Succeeded).await;
    let mut after = WsClient::connect(&w).await;
    after
        .send(json!({"type": "task:subscribe", "task_id": id}))
        .await;
    let seen_after = after.until_terminal(id).await;

    let stored = w.event_seqs(id).await;
    assert_eq!(
        stored.len(),
        1 + 1 + 15 + 1,
        "submitted, started, 15 progress, complete"
    );
    assert_eq!(seqs(&seen_during), stored, "mid-flight subscriber");
    assert_eq!(seqs(&seen_after), stored, "late subscriber");
    assert_eq!(seen_after[0]["type"], "task:accepted");
    w.shutdown().await;
}

#[tokio::test]
async fn bad_client_messages_get_an_error_and_the_socket_stays_open() {
    let w = Wharf::start().await;
    let mut ws = WsClient::connect(&w).await;

    ws.send_text("this is not json").await;
    let e = ws.next().await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "malformed_body");

    ws.send(json!({"type": "task:dance"})).await;
    assert_eq!(ws.next().await["code"], "invalid_field");

    ws.send(json!({"type": "task:submit", "ref": "x", "task": {"tool": "demo.nope"}}))
        .await;
    let e = ws.next().await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("unknown_tool"), Some("x"))
    );
    let suggestions = e["problem"]["suggestions"].as_array().unwrap();
    assert!(
        !suggestions.is_empty()
            && suggestions
                .iter()
                .all(|s| s.as_str().unwrap().starts_with("demo.")),
        "{suggestions:?}"
    );

    ws.send(json!({"type": "task:submit", "task": {"tool": "demo.sleep", "arguments": {"seconds": -1}}}))
        .await;
    let e = ws.next().await;
    assert_eq!(e["code"], "invalid_arguments");
    assert_eq!(e["problem"]["errors"][0]["pointer"], "/arguments/seconds");

    let unknown = Uuid::now_v7();
    ws.send(json!({"type": "task:subscribe", "task_id": unknown}))
        .await;
    let e = ws.next().await;
    assert_eq!(
        (e["code"].as_str(), e["task_id"].as_str()),
        (Some("task_not_found"), Some(unknown.to_string().as_str()))
    );

    // Still open and working.
    ws.send(json!({"type": "task:submit", "task": {"tool": "demo.echo", "arguments": {"message": "still here"}}}))
        .await;
    let accepted = ws.next().await;
    assert_eq!(accepted["type"], "task:accepted");
    let id: Uuid = accepted["task_id"].as_str().unwrap().parse().unwrap();
    let rest = ws.until_terminal(id).await;
    assert_eq!(
        rest.last().unwrap()["result"]["content"][0]["text"],
        "still here"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn cancel_over_websocket_ends_the_task_cancelled() {
    let w = Wharf::start().await;
    let mut ws = WsClient::connect(&w).await;
    ws.send(json!({"type": "task:submit", "task": {"tool": "demo.sleep", "arguments": {"seconds": 60}}}))
        .await;
    let id: Uuid = ws.next().await["task_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ws.next().await["type"], "task:started");
    ws.send(json!({"type": "task:cancel", "task_id": id})).await;
    let rest = ws.until_terminal(id).await;
    assert_eq!(rest.last().unwrap()["type"], "task:cancelled");
    w.wait_recorded(id, TaskStatus::Cancelled).await;
    w.shutdown().await;
}
