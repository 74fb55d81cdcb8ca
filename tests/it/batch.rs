//! `POST /api/v1/tasks/batch`: many tasks in one request, accepted all or none.

use reqwest::Method;
use serde_json::{Value, json};
use wharf_contract::{EVENTS_STREAM, TASKS_STREAM, TaskStatus};
use wharf_testkit::Wharf;

async fn post_batch(w: &Wharf, body: Value) -> (u16, Value) {
    let r = w
        .client()
        .request(Method::POST, "/api/v1/tasks/batch")
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn echo(message: &str) -> Value {
    json!({ "tool": "demo.echo", "arguments": { "message": message } })
}

#[tokio::test]
async fn a_batch_is_accepted_whole_and_every_task_runs() {
    let w = Wharf::start().await;
    let (status, body) = post_batch(
        &w,
        json!({ "tasks": [echo("one"), echo("two"), echo("three")] }),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let tasks = body["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    for (task, message) in tasks.iter().zip(["one", "two", "three"]) {
        assert_eq!(task["status"], "queued");
        assert_eq!(
            task["arguments"]["message"], message,
            "answers keep the order"
        );
        let id = task["id"].as_str().unwrap().parse().unwrap();
        let view = w.wait_recorded(id, TaskStatus::Succeeded).await;
        assert_eq!(view.result.unwrap()["content"][0]["text"], message);
    }
}

#[tokio::test]
async fn one_bad_task_refuses_the_batch_and_nothing_is_written() {
    let w = Wharf::start().await;
    let cases = [
        (
            json!({ "tasks": [echo("ok"), { "tool": "demo.ecko", "arguments": {} }] }),
            "unknown_tool",
            "/tasks/1/tool",
        ),
        (
            json!({ "tasks": [echo("ok"), echo("ok"), { "tool": "demo.echo", "arguments": { "message": 5 } }] }),
            "invalid_arguments",
            "/tasks/2/arguments/message",
        ),
        (
            json!({ "tasks": [echo("ok"), { "tool": "demo.echo", "queue": "a.b" }] }),
            "invalid_field",
            "/tasks/1/queue",
        ),
        (
            json!({ "tasks": [{ "tool": "demo.echo", "colour": "red" }] }),
            "invalid_field",
            "/tasks/0/colour",
        ),
        (json!({ "tasks": [] }), "invalid_field", "/tasks"),
        (
            json!({ "tasks": vec![echo("x"); 1001] }),
            "invalid_field",
            "/tasks",
        ),
    ];
    for (body, code, pointer) in cases {
        let (status, problem) = post_batch(&w, body).await;
        assert!(status == 400 || status == 422, "{status} {problem}");
        assert_eq!(problem["code"], code, "{problem}");
        let pointers: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["pointer"].as_str().unwrap())
            .collect();
        assert!(pointers.contains(&pointer), "{pointer} not in {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(pointer),
            "{problem}"
        );
    }
    assert_eq!(w.stream_messages(TASKS_STREAM).await, 0);
    assert_eq!(w.stream_messages(EVENTS_STREAM).await, 0);
}
