//! Parts stopping, crashing and coming back: nothing accepted is lost, nothing runs twice.

use std::time::Duration;

use serde_json::json;
use wharf_contract::{EventKind, TaskStatus};
use wharf_testkit::{Options, Wharf, eventually};

#[tokio::test]
async fn a_task_is_readable_right_after_the_202_even_with_no_recorder() {
    let mut w = Wharf::start().await;
    w.recorder.take().unwrap().stop().await;
    let id = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "early"}}))
        .await;
    // The database has nothing; the gateway answers from the event stream.
    assert!(w.store.task(id).await.unwrap().is_none());
    let view = w.get_task(id).await;
    assert_eq!(view.tool, "demo.echo");
    assert_eq!(view.arguments["message"], "early");
    eventually(
        "the stream to show the result",
        Duration::from_secs(20),
        || async { (w.get_task(id).await.status == TaskStatus::Succeeded).then_some(()) },
    )
    .await;
    w.start_recorder();
    w.wait_recorded(id, TaskStatus::Succeeded).await;
    w.shutdown().await;
}

#[tokio::test]
async fn a_crashed_recorder_is_replaced_without_losing_or_doubling_events() {
    let mut w = Wharf::start().await;
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(
            w.submit_ok(json!({"tool": "demo.echo", "arguments": {"message": format!("{i}")}}))
                .await,
        );
        if i == 20 {
            // Crash while events are flowing: prefetched, unacknowledged events come back to
            // the next recorder once their ack deadline passes.
            w.recorder.take().unwrap().abort().await;
        }
    }
    w.start_recorder();
    // Events the crashed recorder had taken come back after their ack deadline, possibly
    // after newer ones: wait for each history to be whole, then check it.
    for id in &ids {
        w.wait_recorded(*id, TaskStatus::Succeeded).await;
        let kinds = eventually("every event recorded", Duration::from_secs(60), || async {
            let kinds = w.event_kinds(*id).await;
            (kinds.len() >= 3).then_some(kinds)
        })
        .await;
        assert_eq!(kinds, ["submitted", "started", "succeeded"], "task {id}");
    }
    w.shutdown().await;
}

#[tokio::test]
async fn a_restarted_gateway_knows_the_tools_at_once() {
    let mut w = Wharf::start().await;
    w.gateway.take().unwrap().stop().await;
    w.start_gateway().await;
    // No waiting for the catalog: the new gateway loaded it before listening.
    let id = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "straight away"}}))
        .await;
    w.wait_recorded(id, TaskStatus::Succeeded).await;
    w.shutdown().await;
}

#[tokio::test]
async fn a_task_cancelled_while_no_worker_runs_never_starts() {
    let mut w = Wharf::start().await;
    w.workers.pop().unwrap().stop().await;
    let id = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 5}}))
        .await;
    assert_eq!(w.cancel(id).await, 202);
    // A new worker learns of the cancellation before it takes its first task.
    w.add_worker();
    let done = w.wait_recorded(id, TaskStatus::Cancelled).await;
    assert_eq!(done.started_at, None);
    assert!(w.demo_log_for(id).is_empty(), "the tool never ran");
    w.shutdown().await;
}

#[tokio::test]
async fn a_stopping_worker_hands_running_tasks_back_instead_of_failing_them() {
    let mut w = Wharf::start_with(Options {
        shutdown_grace: Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    w.wait_for_tool("demo.sleep").await;
    let id = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 3, "steps": 3}, "max_attempts": 1}))
        .await;
    w.wait_recorded(id, TaskStatus::Running).await;
    w.workers.pop().unwrap().stop().await;
    // Another worker picks the task up and finishes it; no attempt failed.
    w.add_worker();
    let done = w.wait_recorded(id, TaskStatus::Succeeded).await;
    let events = w.store.events(id).await.unwrap();
    let started = events
        .iter()
        .filter(|(_, e)| matches!(e.kind, EventKind::Started { .. }))
        .count();
    assert_eq!(started, 2, "started once per worker");
    assert!(
        events.iter().all(|(_, e)| !matches!(
            e.kind,
            EventKind::AttemptFailed { .. } | EventKind::Failed { .. }
        )),
        "{events:?}"
    );
    assert!(done.result.is_some());
    w.shutdown().await;
}

#[tokio::test]
async fn nul_characters_are_recorded_and_do_not_stall_the_recorder() {
    let w = Wharf::start().await;
    let odd = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "a\u{0}b \\u0000"}, "metadata": {"k\u{0}": "v\u{0}"}}))
        .await;
    let done = w.wait_recorded(odd, TaskStatus::Succeeded).await;
    // The tool got the real text; the database copy has U+FFFD in place of NUL (and a
    // backslash followed by `u0000`, which is no NUL, as it was).
    assert_eq!(
        done.result.unwrap()["content"][0]["text"],
        "a\u{FFFD}b \\u0000"
    );
    assert_eq!(done.metadata["k\u{FFFD}"], "v\u{FFFD}");
    // The same submission again under one key, once recorded: the first task, although the
    // stored arguments differ from the sent ones by the NUL.
    let keyed = json!({"tool": "demo.echo", "arguments": {"message": "x\u{0}y"}, "idempotency_key": "nul-1"});
    let (status, first) = w.submit(keyed.clone()).await;
    assert_eq!(status, 202, "{first}");
    let first: uuid::Uuid = first["id"].as_str().unwrap().parse().unwrap();
    w.wait_recorded(first, TaskStatus::Succeeded).await;
    let (status, again) = w.submit(keyed).await;
    assert_eq!(status, 200, "the repeat is the same submission: {again}");
    assert_eq!(again["id"], first.to_string());
    let next = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "after"}}))
        .await;
    w.wait_recorded(next, TaskStatus::Succeeded).await;
    w.shutdown().await;
}

#[tokio::test]
async fn a_task_longer_than_its_lease_is_never_redelivered_while_its_worker_lives() {
    // Leases of 3 s: without heartbeats the 8 s task would go to the other worker twice.
    let w = Wharf::start_with(Options {
        workers: 2,
        topology: wharf_bus::Topology {
            ack_wait: Duration::from_secs(3),
            ..wharf_bus::Topology::default()
        },
        ..Options::default()
    })
    .await;
    w.wait_for_tool("demo.sleep").await;
    let id = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 8, "steps": 2}, "max_attempts": 1}))
        .await;
    let done = w.wait_recorded(id, TaskStatus::Succeeded).await;
    assert_eq!(done.attempts, 1);
    let started = w
        .store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| matches!(e.kind, EventKind::Started { .. }))
        .count();
    assert_eq!(started, 1, "one run, on one worker");
    assert_eq!(
        w.demo_log_for(id)
            .iter()
            .filter(|l| l["event"] == "started")
            .count(),
        1,
        "the tool was called once"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn a_redelivered_task_that_already_ended_is_acknowledged_not_run_again() {
    let mut w = Wharf::start().await;
    w.wait_for_tool("demo.sleep").await;
    // No worker: the task waits in its queue.
    w.workers.pop().unwrap().stop().await;
    let id = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 0.1, "steps": 1}, "max_attempts": 1}))
        .await;
    // As if a worker had run it, stored its terminal event, and died before acknowledging:
    // the redelivery is past its only attempt, and must still not fail it or dead-letter it.
    // the terminal event is in the stream, and the message comes back a second time.
    let event = wharf_contract::TaskEvent::new(
        id,
        1,
        EventKind::Succeeded {
            result: json!({"content": [], "isError": false}),
        },
    );
    w.bus
        .publish_event("default", &event, &format!("{id}:terminal"), None)
        .await
        .unwrap()
        .await
        .unwrap();
    let consumer = w
        .bus
        .queue_consumer("default", wharf_contract::Priority::Normal)
        .await
        .unwrap();
    let mut first = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    use futures::StreamExt;
    let m = first.next().await.unwrap().unwrap();
    wharf_bus::Delivery::RetryAfter(Duration::ZERO)
        .settle(&m)
        .await
        .unwrap();

    w.add_worker();
    eventually(
        "the task message acknowledged",
        Duration::from_secs(30),
        || async { (w.stream_messages("WHARF_TASKS").await == 0).then_some(()) },
    )
    .await;
    let done = w.wait_recorded(id, TaskStatus::Succeeded).await;
    assert_eq!(done.started_at, None, "no attempt started");
    assert!(w.demo_log_for(id).is_empty(), "the tool was not called");
    assert!(
        w.bus.dead_letter(id).await.unwrap().is_none(),
        "a task that succeeded is no dead letter"
    );
    w.shutdown().await;
}
