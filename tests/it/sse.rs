//! `GET /api/v1/tasks/{id}/events`: Server-Sent Events, history then live, closing at the end.

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use wharf_contract::TaskStatus;
use wharf_testkit::Wharf;

/// Reads an SSE response to its end: (event name, id, data) per frame.
async fn read_sse(response: reqwest::Response) -> Vec<(String, Option<u64>, Value)> {
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), read)
        .await
        .expect("the event stream closes after the terminal event");
    text.split("\n\n")
        .filter_map(|frame| {
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            };
            let data = field("data:")?;
            Some((
                field("event:").unwrap_or_default(),
                field("id:").and_then(|i| i.parse().ok()),
                serde_json::from_str(&data).unwrap(),
            ))
        })
        .collect()
}

/// `GET /api/v1/tasks/{id}/events`
async fn open_events(w: &Wharf, id: uuid::Uuid) -> reqwest::Response {
    w.client()
        .request(Method::GET, &format!("/api/v1/tasks/{id}/events"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sse_replays_history_follows_live_and_closes_after_the_end() {
    let w = Wharf::start().await;
    let id = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 0.5, "steps": 5}}))
        .await;
    let response = open_events(&w, id).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let frames = read_sse(response).await;
    let names: Vec<&str> = frames.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names.first(), Some(&"task:accepted"));
    assert_eq!(names.last(), Some(&"task:complete"));
    assert_eq!(names.iter().filter(|n| **n == "task:progress").count(), 5);

    w.wait_recorded(id, TaskStatus::Succeeded).await;
    let stored = w.event_seqs(id).await;
    let ids: Vec<u64> = frames.iter().filter_map(|f| f.1).collect();
    assert_eq!(ids, stored);

    // A finished task's stream is its whole history, then the end.
    let again = read_sse(open_events(&w, id).await).await;
    assert_eq!(again.iter().filter_map(|f| f.1).collect::<Vec<_>>(), stored);
    w.shutdown().await;
}

#[tokio::test]
async fn stopping_the_gateway_ends_open_event_streams() {
    let mut w = Wharf::start().await;
    let id = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 60}}))
        .await;
    let response = open_events(&w, id).await;
    // Read in the background, counting frames as they come.
    let (seen_tx, mut seen) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let mut body = response.bytes_stream();
        let mut text = String::new();
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            seen_tx.send_replace(text.matches("data:").count());
        }
        text
    });
    // The history (accepted, started) has arrived: the stream is open and live.
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        seen.wait_for(|n| *n >= 2),
    )
    .await
    .expect("the first events within 30 s")
    .unwrap();
    // Part::stop fails the test if the gateway takes more than 30 s.
    w.gateway.take().unwrap().stop().await;
    let text = tokio::time::timeout(std::time::Duration::from_secs(30), reader)
        .await
        .expect("the event stream ends when the gateway stops")
        .unwrap();
    assert!(text.contains("event: task:accepted"), "{text}");
    assert!(
        !text.contains("task:complete"),
        "the task was still running"
    );
    w.shutdown().await;
}
