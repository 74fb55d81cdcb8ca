//! A task's life over HTTP: submit, progress, result, failure, cancellation.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use wharf_contract::TaskStatus;
use wharf_testkit::{Options, Wharf, eventually};

#[tokio::test]
async fn echo_round_trip_is_recorded_in_postgres() {
    let w = Wharf::start().await;
    let (status, answer) = w
        .submit(
            json!({"tool": "demo.echo", "arguments": {"message": "hello"}, "metadata": {"k": "v"}}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(answer["status"], "queued");
    let id: uuid::Uuid = answer["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(id.get_version_num(), 7, "task ids are UUIDv7");

    // Read your writes: the task is there at once, whatever the recorder has done.
    let first = w.get_task(id).await;
    assert_eq!(first.tool, "demo.echo");

    let done = w.wait_recorded(id, TaskStatus::Succeeded).await;
    assert_eq!(done.result.as_ref().unwrap()["content"][0]["text"], "hello");
    assert_eq!(done.attempts, 1);
    assert_eq!(done.metadata["k"], "v");
    assert!(done.created_at.is_some() && done.started_at.is_some() && done.finished_at.is_some());
    let kinds = w.event_kinds(id).await;
    assert_eq!(kinds, ["submitted", "started", "succeeded"]);
    w.shutdown().await;
}

#[tokio::test]
async fn location_header_points_at_the_task() {
    let w = Wharf::start().await;
    let r = w
        .client()
        .request(Method::POST, "/api/v1/tasks")
        .json(&json!({"tool": "demo.echo", "arguments": {"message": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/tasks/{}", body["id"].as_str().unwrap())
    );
    let again = w.get(&location).await;
    assert_eq!(again.status(), 200);
    w.shutdown().await;
}

#[tokio::test]
async fn sleep_reports_progress_then_succeeds() {
    let w = Wharf::start().await;
    let id = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 0.6, "steps": 3}}))
        .await;
    let done = w.wait_recorded(id, TaskStatus::Succeeded).await;
    let progress = done.progress.unwrap();
    assert_eq!((progress.progress, progress.total), (3.0, Some(3.0)));
    let progress_events = w
        .store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.kind_name() == "progress")
        .count();
    assert_eq!(progress_events, 3);
    w.shutdown().await;
}

#[tokio::test]
async fn a_tool_error_fails_the_task_without_retry() {
    let w = Wharf::start().await;
    let id = w
        .submit_ok(
            json!({"tool": "demo.fail", "arguments": {"message": "boom"}, "max_attempts": 3}),
        )
        .await;
    let done = w.wait_recorded(id, TaskStatus::Failed).await;
    let error = done.error.unwrap();
    assert_eq!(error.code, "tool_error");
    assert_eq!(error.message, "boom");
    assert_eq!(done.attempts, 1, "an MCP tool error is final");
    w.shutdown().await;
}

#[tokio::test]
async fn cancelling_a_running_task_cancels_the_mcp_call() {
    let w = Wharf::start().await;
    let id = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 60, "steps": 600}}))
        .await;
    // Wait until the tool has reported progress: the call is in flight.
    eventually("progress", Duration::from_secs(20), || async {
        w.store.task(id).await.unwrap()?.progress.map(|_| ())
    })
    .await;
    assert_eq!(w.cancel(id).await, 202);
    let done = w.wait_recorded(id, TaskStatus::Cancelled).await;
    assert!(done.cancel_requested_at.is_some());
    // The MCP server itself saw the cancellation.
    w.wait_demo_cancelled(id).await;
    // A finished task cannot be cancelled again.
    assert_eq!(w.cancel(id).await, 409);
    w.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_queued_task_never_starts() {
    let w = Wharf::start_with(Options {
        concurrency: 1,
        ..Options::default()
    })
    .await;
    w.wait_for_tool("demo.sleep").await;
    let blocker = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 60}}))
        .await;
    w.wait_recorded(blocker, TaskStatus::Running).await;
    let queued = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 1}}))
        .await;
    assert_eq!(w.cancel(queued).await, 202);
    // Free the only slot; the queued task is taken next and must end without starting.
    w.cancel(blocker).await;
    w.wait_recorded(blocker, TaskStatus::Cancelled).await;
    let done = w.wait_recorded(queued, TaskStatus::Cancelled).await;
    assert_eq!(done.started_at, None);
    let kinds = w.event_kinds(queued).await;
    assert!(!kinds.contains(&"started".to_owned()), "events: {kinds:?}");
    assert!(w.demo_log_for(queued).is_empty(), "the tool never ran");
    w.shutdown().await;
}

#[tokio::test]
async fn unknown_task_ids_are_404() {
    let w = Wharf::start().await;
    for path in [
        format!("/api/v1/tasks/{}", uuid::Uuid::now_v7()),
        "/api/v1/tasks/not-a-uuid".to_owned(),
        format!("/api/v1/tasks/{}/events", uuid::Uuid::now_v7()),
    ] {
        let r = w.get(&path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let r = w
        .client()
        .request(
            Method::POST,
            &format!("/api/v1/tasks/{}/cancel", uuid::Uuid::now_v7()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    w.shutdown().await;
}

#[tokio::test]
async fn a_task_past_its_timeout_fails_and_the_call_is_cancelled() {
    let w = Wharf::start().await;
    let id = w
        .submit_ok(json!({
            "tool": "demo.sleep",
            "arguments": {"seconds": 30},
            "timeout_secs": 1,
            "max_attempts": 1
        }))
        .await;
    let done = w.wait_recorded(id, TaskStatus::Failed).await;
    assert_eq!(done.error.unwrap().code, "timeout");
    w.wait_demo_cancelled(id).await;
    w.shutdown().await;
}

/// The event stored at `seq` in the events stream, with its `traceparent` header if it has one.
async fn stored_event(w: &Wharf, seq: u64) -> (Option<String>, wharf_contract::TaskEvent) {
    let stream = w
        .bus
        .jetstream()
        .get_stream(wharf_contract::EVENTS_STREAM)
        .await
        .unwrap();
    let m = stream.get_raw_message(seq).await.unwrap();
    let event = wharf_contract::TaskEvent::decode(&m.payload).unwrap();
    let tp = m.headers.get("traceparent").map(|h| h.as_str().to_owned());
    (tp, event)
}

#[tokio::test]
async fn the_trace_context_travels_from_the_request_to_every_event() {
    let w = Wharf::start().await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = w
        .client()
        .request(Method::POST, "/api/v1/tasks")
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"tool": "demo.echo", "arguments": {"message": "traced"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id: uuid::Uuid = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let done = w.wait_recorded(id, TaskStatus::Succeeded).await;
    assert_eq!(done.status, TaskStatus::Succeeded);
    // The task names its trace, in the history and through the API.
    assert_eq!(done.trace_id.as_deref(), Some(trace_id));
    assert_eq!(w.get_task(id).await.trace_id.as_deref(), Some(trace_id));
    // Every stored event of the task (gateway's and worker's) carries the caller's trace id.
    let events = w.store.events(id).await.unwrap();
    assert_eq!(events.len(), 3);
    let mut spans = Vec::new();
    for (seq, _) in events {
        let (tp, _) = stored_event(&w, seq).await;
        let tp = tp.unwrap();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts[1], trace_id, "event {seq}: {tp}");
        spans.push(parts[2].to_owned());
    }
    // submitted (the gateway's span), started and succeeded (the worker's span).
    let caller = "00f067aa0ba902b7";
    assert_ne!(spans[0], caller, "the gateway opens a span of its own");
    assert_ne!(spans[1], spans[0], "the worker opens a span of its own");
    assert_eq!(spans[1], spans[2], "one span for the worker's attempt");
    w.shutdown().await;
}

#[tokio::test]
async fn a_trace_begun_by_a_gateway_that_exports_nothing_travels_in_the_task() {
    // No caller's traceparent, and this gateway exports no spans: its messages carry no
    // traceparent (nats-server inspects every sampled one), and the worker continues the
    // trace the task names.
    let w = Wharf::start().await;
    let id = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "untraced"}}))
        .await;
    let done = w.wait_recorded(id, TaskStatus::Succeeded).await;
    let trace_id = done.trace_id.expect("every task names its trace");
    let events = w.store.events(id).await.unwrap();
    let (first, last) = (events[0].0, events[events.len() - 1].0);
    let (tp, submitted) = stored_event(&w, first).await;
    assert_eq!(tp, None, "{submitted:?}");
    let (tp, _) = stored_event(&w, last).await;
    let tp = tp.expect("the worker's events name its attempt's span");
    assert_eq!(tp.split('-').nth(1), Some(trace_id.as_str()), "{tp}");
    w.shutdown().await;
}

#[tokio::test]
async fn a_task_its_queue_refuses_ends_in_the_trace_it_began() {
    // The tasks stream refusing every task (too large for it): the submission is refused
    // (503), and the `failed` event that ends its history names the task's trace, though the
    // gateway sent the `submitted` event without a traceparent (it exports nothing).
    let w = Wharf::start_with(Options {
        // The refusal is retried until the patience runs out: keep it short.
        topology: wharf_bus::Topology {
            submit_patience: Duration::from_secs(1),
            ..wharf_bus::Topology::default()
        },
        ..Options::default()
    })
    .await;
    // Known to the gateway first: an unknown tool is refused (422) before anything is sent.
    w.wait_for_tool("demo.echo").await;
    let js = w.bus.jetstream();
    let mut tasks = js.get_stream(wharf_contract::TASKS_STREAM).await.unwrap();
    let mut config = tasks.info().await.unwrap().config.clone();
    config.max_message_size = 16;
    js.update_stream(&config).await.unwrap();
    let (status, body) = w
        .submit(json!({"tool": "demo.echo", "arguments": {"message": "no room"}}))
        .await;
    assert_eq!(status, 503, "{body}");
    let (tp, submitted) = stored_event(&w, 1).await;
    assert_eq!(tp, None);
    let wharf_contract::EventKind::Submitted { task } = submitted.kind else {
        panic!("{submitted:?}")
    };
    let trace_id = task.trace_id.expect("the task names its trace");
    // The failed event is written before the 503.
    let (tp, failed) = stored_event(&w, 2).await;
    assert_eq!(failed.task_id, task.id);
    assert_eq!(
        failed.terminal_status(),
        Some(TaskStatus::Failed),
        "{failed:?}"
    );
    let tp = tp.expect("the failed event names the trace");
    assert_eq!(tp.split('-').nth(1), Some(trace_id.as_str()), "{tp}");
    w.shutdown().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let w = Wharf::start().await;
    let health = w.get("/healthz").await;
    assert_eq!(health.status(), 200);
    let ready = w.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body, json!({"nats": true, "database": true}));
    let missing = w.get("/api/v1/nothing").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<serde_json::Value>().await.unwrap()["code"],
        "not_found"
    );
    w.shutdown().await;
}
