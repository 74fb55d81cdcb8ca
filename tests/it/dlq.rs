//! Dead letters: a task that fails after using every attempt, or whose message cannot be read,
//! is kept in the DLQ, listed, inspected and replayed.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;
use wharf_contract::TaskStatus;
use wharf_testkit::{Wharf, eventually, send};

async fn get(w: &Wharf, path: &str) -> (u16, Value) {
    let r = w.get(path).await;
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn post(w: &Wharf, path: &str) -> (u16, Value) {
    let r = w.client().request(Method::POST, path).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Waits until task `id` is listed in the DLQ; returns its entry.
async fn listed(w: &Wharf, id: Uuid) -> Value {
    eventually("the task in the DLQ", Duration::from_secs(30), || async {
        let (status, list) = get(w, "/api/v1/dlq").await;
        assert_eq!(status, 200, "{list}");
        list["dead_letters"]
            .as_array()?
            .iter()
            .find(|d| d["task_id"] == id.to_string())
            .cloned()
    })
    .await
}

#[tokio::test]
async fn a_task_that_used_every_attempt_is_dead_lettered_and_can_be_replayed() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.sleep").await;
    // Each attempt times out (a retryable failure); the second is the last.
    let id = w
        .submit_ok(json!({
            "tool": "demo.sleep",
            "arguments": {"seconds": 30, "steps": 1},
            "timeout_secs": 1,
            "max_attempts": 2,
            "metadata": {"order": 7},
        }))
        .await;
    let view = w.wait_recorded(id, TaskStatus::Failed).await;
    let error = view.error.unwrap();
    assert_eq!(error.code, "timeout");
    assert!(
        error.dead_letter,
        "the final error says the task was dead-lettered"
    );
    assert_eq!(
        w.event_kinds(id).await,
        [
            "submitted",
            "started",
            "attempt_failed",
            "started",
            "failed"
        ]
    );

    let entry = listed(&w, id).await;
    assert_eq!(entry["queue"], "default");
    assert_eq!(entry["attempts"], 2);
    assert_eq!(entry["error"]["code"], "timeout");
    assert_eq!(entry["task"]["tool"], "demo.sleep");
    let (status, one) = get(&w, &format!("/api/v1/dlq/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(one, entry);

    // Replay: a new task with the same spec, pointing back at the dead one.
    let (status, replay) = post(&w, &format!("/api/v1/dlq/{id}/replay")).await;
    assert_eq!(status, 202, "{replay}");
    let new = id_of(&replay);
    assert_ne!(new, id);
    assert_eq!(replay["tool"], "demo.sleep");
    assert_eq!(replay["timeout_secs"], 1);
    assert_eq!(replay["max_attempts"], 2);
    assert_eq!(replay["metadata"]["order"], 7);
    assert_eq!(replay["metadata"]["replay_of"], id.to_string());
    // The letter is gone; replaying again finds nothing to replay.
    let (status, problem) = get(&w, &format!("/api/v1/dlq/{id}")).await;
    assert_eq!(status, 404, "{problem}");
    let (status, _) = post(&w, &format!("/api/v1/dlq/{id}/replay")).await;
    assert_eq!(status, 404);
    // The replay runs (and, timing out the same way, ends in the DLQ in its turn).
    listed(&w, new).await;
    let (_, list) = get(&w, "/api/v1/dlq").await;
    assert_eq!(list["dead_letters"].as_array().unwrap().len(), 1);
    w.shutdown().await;
}

#[tokio::test]
async fn a_tool_error_fails_at_once_without_a_dead_letter() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.fail").await;
    let id = w
        .submit_ok(json!({"tool": "demo.fail", "arguments": {}, "max_attempts": 3}))
        .await;
    let view = w.wait_recorded(id, TaskStatus::Failed).await;
    let error = view.error.unwrap();
    assert_eq!(error.code, "tool_error");
    assert!(!error.dead_letter);
    assert_eq!(view.attempts, 1, "a tool error is final");
    let (status, list) = get(&w, "/api/v1/dlq").await;
    assert_eq!(status, 200);
    assert_eq!(list["dead_letters"], json!([]));
    let (status, problem) = get(&w, "/api/v1/dlq?limit=0").await;
    assert_eq!(status, 400);
    assert_eq!(problem["code"], "invalid_query");
    w.shutdown().await;
}

#[tokio::test]
async fn an_unreadable_task_message_is_dead_lettered_with_its_body() {
    let w = Wharf::start().await;
    let id = Uuid::now_v7();
    let body = json!({"v": 1, "id": id, "tool": 5}).to_string();
    w.bus
        .jetstream()
        .publish("wharf.tasks.default", body.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let entry = listed(&w, id).await;
    assert_eq!(entry["error"]["code"], "bad_message");
    assert_eq!(entry["payload"], body);
    assert!(entry.get("task").is_none());
    let view = w.wait_recorded(id, TaskStatus::Failed).await;
    assert!(view.error.unwrap().dead_letter);
    let (status, problem) = post(&w, &format!("/api/v1/dlq/{id}/replay")).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "not_replayable");
    w.shutdown().await;
}

#[tokio::test]
async fn a_server_configured_to_retry_tool_errors_gets_them_retried() {
    let mut demo = wharf_testkit::demo_server("demo", None);
    demo.retry_tool_errors = true;
    let w = Wharf::start_with(wharf_testkit::Options {
        servers: vec![demo],
        ..Default::default()
    })
    .await;
    w.wait_for_tool("demo.fail").await;
    let id = w
        .submit_ok(
            json!({"tool": "demo.fail", "arguments": {"message": "busy"}, "max_attempts": 2}),
        )
        .await;
    let view = w.wait_recorded(id, TaskStatus::Failed).await;
    assert_eq!(view.attempts, 2, "the tool error was retried");
    let error = view.error.unwrap();
    assert_eq!(error.code, "tool_error");
    assert_eq!(error.message, "busy");
    assert!(error.dead_letter, "retried to the end, it is dead-lettered");
    assert_eq!(
        w.event_kinds(id).await,
        [
            "submitted",
            "started",
            "attempt_failed",
            "started",
            "failed"
        ]
    );
    listed(&w, id).await;
    w.shutdown().await;
}

/// A platform whose workers serve `default` and `queue`, and a second gateway that gives
/// `queue` the defaults `defaults`: its API address and the running gateway.
async fn with_queue_defaults(
    queue: &str,
    defaults: wharf_gateway::QueueDefaults,
) -> (Wharf, String, wharf_testkit::Part) {
    let w = Wharf::start_with(wharf_testkit::Options {
        queues: vec!["default".into(), queue.into()],
        ..Default::default()
    })
    .await;
    w.wait_for_tool("demo.sleep").await;
    let config = wharf_gateway::GatewayConfig {
        queues: [(queue.to_owned(), defaults)].into(),
        ..Default::default()
    };
    let (api, gateway) = w.gateway_with(config).await;
    (w, api, gateway)
}

/// `POST {api}/api/v1/tasks`, asserting the 202; the task as answered.
async fn submit_at(w: &Wharf, api: &str, body: Value) -> Value {
    let r = w
        .client()
        .at(api)
        .unwrap()
        .request(Method::POST, "/api/v1/tasks")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json().await.unwrap()
}

fn id_of(task: &Value) -> Uuid {
    task["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_queue_gives_its_tasks_attempts_timeout_and_backoff() {
    let urgent = wharf_gateway::QueueDefaults {
        max_attempts: Some(2),
        timeout_secs: Some(1),
        retry: Some(wharf_contract::RetryPolicy {
            initial_ms: 100,
            max_ms: 200,
        }),
        priority: Some(wharf_contract::Priority::High),
    };
    let (w, api, gateway) = with_queue_defaults("urgent", urgent).await;
    let sleep =
        |queue: &str| json!({"tool": "demo.sleep", "arguments": {"seconds": 30}, "queue": queue});
    let plain = submit_at(&w, &api, sleep("default")).await;
    assert_eq!(plain["max_attempts"], 3, "the gateway's default");
    assert!(plain.get("timeout_secs").is_none());
    let task = submit_at(&w, &api, sleep("urgent")).await;
    assert_eq!(task["max_attempts"], 2, "the queue's default");
    assert_eq!(task["timeout_secs"], 1);
    assert_eq!(task["priority"], "high", "the queue's default");
    assert_eq!(plain["priority"], "normal");
    let id = id_of(&task);
    w.wait_recorded(id, TaskStatus::Failed).await;
    let retry_in = w
        .store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .find_map(|(_, e)| match e.kind {
            wharf_contract::EventKind::AttemptFailed { retry_in_ms, .. } => Some(retry_in_ms),
            _ => None,
        })
        .expect("an attempt failed and was retried");
    assert!(
        (50..=100).contains(&retry_in),
        "the queue's backoff: {retry_in} ms"
    );
    w.cancel(id_of(&plain)).await;
    gateway.stop().await;
    w.shutdown().await;
}

#[tokio::test]
async fn a_task_waiting_for_its_retry_is_cancelled_without_running_again() {
    // A queue whose retries wait 5 to 10 s: time enough to cancel during the wait.
    let patient = wharf_gateway::QueueDefaults {
        retry: Some(wharf_contract::RetryPolicy {
            initial_ms: 10_000,
            max_ms: 10_000,
        }),
        ..Default::default()
    };
    let (w, api, gateway) = with_queue_defaults("patient", patient).await;
    let body = json!({
        "tool": "demo.sleep",
        "arguments": {"seconds": 30, "steps": 1},
        "queue": "patient",
        "timeout_secs": 1,
        "max_attempts": 5,
    });
    let id = id_of(&submit_at(&w, &api, body).await);
    // The first attempt times out; the task waits out its backoff before the second.
    eventually(
        "the first attempt to fail",
        Duration::from_secs(30),
        || async {
            w.event_kinds(id)
                .await
                .contains(&"attempt_failed".to_owned())
                .then_some(())
        },
    )
    .await;
    assert_eq!(w.cancel(id).await, 202);
    // When the delay is over, the worker that takes the task ends it without starting it.
    let done = w.wait_recorded(id, TaskStatus::Cancelled).await;
    assert_eq!(done.status, TaskStatus::Cancelled);
    let kinds = w.event_kinds(id).await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "started").count(),
        1,
        "no attempt started after the cancellation: {kinds:?}"
    );
    gateway.stop().await;
    w.shutdown().await;
}

#[tokio::test]
async fn a_dead_letter_is_withdrawn_when_another_outcome_was_recorded_first() {
    let mut w = Wharf::start().await;
    w.wait_for_tool("demo.sleep").await;
    w.workers.pop().unwrap().stop().await;
    // One attempt, which times out: a failure for good, dead-lettered.
    let id = w
        .submit_ok(json!({
            "tool": "demo.sleep",
            "arguments": {"seconds": 30, "steps": 1},
            "max_attempts": 1,
            "timeout_secs": 1,
        }))
        .await;
    // Another outcome is stored first, as a stale attempt's or a cancellation's would be. A
    // first delivery does not read the history, so the worker still runs its attempt.
    let cancelled = wharf_contract::TaskEvent::new(
        id,
        1,
        wharf_contract::EventKind::Cancelled {
            reason: Some("recorded first".into()),
        },
    );
    w.bus
        .publish_event("default", &cancelled, &format!("{id}:terminal"), None)
        .await
        .unwrap()
        .await
        .unwrap();
    w.add_worker();
    eventually("the attempt started", Duration::from_secs(30), || async {
        w.event_kinds(id)
            .await
            .iter()
            .any(|k| k == "started")
            .then_some(())
    })
    .await;
    // The worker acknowledges the task last, after storing (then withdrawing) its letter.
    eventually("the task acknowledged", Duration::from_secs(30), || async {
        let mut consumer = w
            .bus
            .queue_consumer("default", wharf_contract::Priority::Normal)
            .await
            .unwrap();
        let info = consumer.info().await.unwrap();
        (info.num_ack_pending == 0 && info.num_pending == 0).then_some(())
    })
    .await;
    let (status, problem) = get(&w, &format!("/api/v1/dlq/{id}")).await;
    assert_eq!(
        status, 404,
        "no dead letter for a cancelled task: {problem}"
    );
    assert_eq!(
        w.wait_recorded(id, TaskStatus::Cancelled).await.status,
        TaskStatus::Cancelled
    );
    w.shutdown().await;
}

/// A cursor is a stream sequence: one past every sequence there can be is an empty page (it
/// was a 400, or a panic at `u64::MAX`), and a signed one is refused.
#[tokio::test]
async fn a_cursor_past_every_dead_letter_is_an_empty_page() {
    let w = Wharf::start().await;
    for cursor in ["18446744073709551615", "69492934490049231641"] {
        let path = format!("/api/v1/dlq?cursor={cursor}");
        let (status, body) = send(w.client().request(Method::GET, &path)).await;
        assert_eq!(status, 200, "{cursor}: {body}");
        assert_eq!(body["dead_letters"], json!([]), "{cursor}");
    }
    let (status, body) = send(w.client().request(Method::GET, "/api/v1/dlq?cursor=%2B5")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_query");
    w.shutdown().await;
}
