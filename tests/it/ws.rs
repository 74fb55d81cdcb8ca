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

/// A client frame: FIN, `opcode`, masked with a fixed key (as a client must mask), the length
/// in the shortest form that holds `announced`, then the first `payload` bytes, masked.
fn frame(opcode: u8, announced: u64, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match announced {
        0..=125 => f.push(mask_bit | announced as u8),
        126..=0xFFFF => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(announced as u16).to_be_bytes());
        }
        _ => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&announced.to_be_bytes());
        }
    }
    let key = [0x12, 0x34, 0x56, 0x78];
    if masked {
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// Each way of breaking the protocol closes the socket with the close code the docs give, at
/// once, and a socket that is merely quiet stays open.
#[tokio::test]
async fn broken_or_oversized_messages_close_the_socket_with_their_code() {
    let mut options = wharf_testkit::Options::default();
    // A message that starts arriving must be whole within this.
    options.gateway.header_timeout = std::time::Duration::from_secs(2);
    let w = Wharf::start_with(options).await;
    let soon = std::time::Duration::from_secs(5);
    let limit = w.options.gateway.max_body_bytes;

    // A message over the limit, sent whole.
    let mut ws = WsClient::connect(&w).await;
    ws.send_text(&"x".repeat(limit + 1)).await;
    assert_eq!(
        ws.close_code(soon).await,
        Some(1009),
        "message over the limit"
    );

    // A frame header announcing twice the limit, with no payload: refused on its header,
    // without waiting for what never comes.
    let mut ws = WsClient::connect(&w).await;
    ws.send_raw(&frame(0x1, 2 * limit as u64, b"", true)).await;
    assert_eq!(
        ws.close_code(soon).await,
        Some(1009),
        "frame header over the limit"
    );

    // A client frame that is not masked breaks the protocol.
    let mut ws = WsClient::connect(&w).await;
    ws.send_raw(&frame(0x1, 2, b"hi", false)).await;
    assert_eq!(ws.close_code(soon).await, Some(1002), "unmasked frame");

    // A text message that is not UTF-8.
    let mut ws = WsClient::connect(&w).await;
    ws.send_raw(&frame(0x1, 2, &[0xff, 0xfe], true)).await;
    assert_eq!(
        ws.close_code(soon).await,
        Some(1007),
        "text that is not UTF-8"
    );

    // A message that starts and never finishes is a slow request: closed after the header
    // deadline (2 s here), while a socket that sends nothing stays open.
    let mut quiet = WsClient::connect(&w).await;
    let mut ws = WsClient::connect(&w).await;
    ws.send_raw(&frame(0x1, 100, b"{\"type\"", true)).await;
    let started = std::time::Instant::now();
    assert_eq!(
        ws.close_code(std::time::Duration::from_secs(10)).await,
        Some(1008),
        "a message cut short"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "closed only after the deadline, at {:?}",
        started.elapsed()
    );
    let probe = Uuid::now_v7();
    quiet
        .send(json!({"type": "task:subscribe", "task_id": probe}))
        .await;
    assert_eq!(
        quiet.next().await["code"],
        "task_not_found",
        "a socket that was only quiet is still open"
    );
    w.shutdown().await;
}
