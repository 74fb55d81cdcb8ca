//! When an attempt's start is stored: with its outcome when the attempt is short, in a
//! `started` event of its own when it runs on, at once when it is a redelivery. Readers see the
//! same history either way.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;
use wharf_contract::{EventKind, TaskStatus};
use wharf_testkit::{Options, Wharf, eventually};

/// The `type` of each message stored for task `id`, and whether it reports a start too.
async fn stored(w: &Wharf, id: Uuid) -> Vec<(String, bool)> {
    w.stored_events(id)
        .await
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e.get("started").is_some(),
            )
        })
        .collect()
}

fn kinds(list: &[(&str, bool)]) -> Vec<(String, bool)> {
    list.iter().map(|(k, s)| ((*k).to_owned(), *s)).collect()
}

#[tokio::test]
async fn a_short_attempt_stores_its_start_with_its_outcome_and_readers_see_both() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.echo").await;
    let id = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "quick"}}))
        .await;
    w.wait_recorded(id, TaskStatus::Succeeded).await;

    // Two messages in nats-server, not three: the start travels with the outcome.
    assert_eq!(
        stored(&w, id).await,
        kinds(&[("submitted", false), ("succeeded", true)])
    );
    let terminal = w.stored_events(id).await.pop().unwrap();
    let start: &Value = &terminal["started"];
    assert_eq!(start["worker"], "test-worker-0");
    assert_eq!(start["tool"], "demo.echo");
    assert_eq!(start["queue"], "default");

    // Every reader shows it as the step it is: the database's history, the stream's history
    // (what the gateway follows), the task's row.
    assert_eq!(
        w.event_kinds(id).await,
        ["submitted", "started", "succeeded"]
    );
    let history = w.bus.history(id).await.unwrap();
    let names: Vec<_> = history.iter().map(|(_, e)| e.kind_name()).collect();
    assert_eq!(names, ["submitted", "started", "succeeded"]);
    let EventKind::Started { worker, .. } = &history[1].1.kind else {
        panic!("the second step is the start: {history:?}");
    };
    assert_eq!(worker, "test-worker-0");
    assert_eq!(
        history[1].0, history[2].0,
        "the start shares its outcome's sequence"
    );
    let view = w.store.task(id).await.unwrap().unwrap();
    let at: chrono::DateTime<chrono::Utc> = start["at"].as_str().unwrap().parse().unwrap();
    // (Postgres keeps microseconds.)
    let recorded = view.started_at.expect("the row has the start");
    assert_eq!(recorded.timestamp_micros(), at.timestamp_micros());
    assert_eq!(view.tool, "demo.echo");

    // A client following over SSE gets `task:started` before `task:complete`.
    let body = w
        .get(&format!("/api/v1/tasks/{id}/events"))
        .await
        .text()
        .await
        .unwrap();
    let types: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(types, ["task:accepted", "task:started", "task:complete"]);
    // Each says when it happened: the start at the attempt's own start, not its outcome's.
    let times: Vec<chrono::DateTime<chrono::Utc>> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| {
            serde_json::from_str::<Value>(d).unwrap()["at"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(times.len(), 3);
    assert_eq!(times[1].timestamp_micros(), at.timestamp_micros());
    assert!(times[0] <= times[1] && times[1] <= times[2], "{times:?}");
    w.shutdown().await;
}

#[tokio::test]
async fn a_long_attempt_stores_its_start_while_it_runs() {
    let w = Wharf::start_with(Options {
        started_event_after: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    w.wait_for_tool("demo.sleep").await;
    // One step: the only progress comes with the end, so nothing but the timer announces it.
    let id = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 4, "steps": 1}}))
        .await;
    eventually(
        "the start stored on its own",
        Duration::from_secs(10),
        || async {
            (stored(&w, id).await == kinds(&[("submitted", false), ("started", false)]))
                .then_some(())
        },
    )
    .await;
    // Listed as running from then on, well before it ends.
    eventually("the task shown running", Duration::from_secs(3), || async {
        let task: Value = w
            .get(&format!("/api/v1/tasks/{id}"))
            .await
            .json()
            .await
            .unwrap();
        (task["status"] == "running").then_some(())
    })
    .await;

    w.wait_recorded(id, TaskStatus::Succeeded).await;
    assert_eq!(
        stored(&w, id).await,
        kinds(&[
            ("submitted", false),
            ("started", false),
            ("progress", false),
            ("succeeded", false)
        ])
    );
    w.shutdown().await;
}

/// A stale attempt (its worker paused past its lease) reads the history before recording its
/// outcome, and gives way to a newer attempt it finds there (docs/delivery.md, Fencing). So a
/// redelivered attempt stores its start at once, however long starts are otherwise held back.
#[tokio::test]
async fn a_redelivered_attempt_stores_its_start_at_once() {
    let w = Wharf::start_with(Options {
        started_event_after: Duration::from_secs(600),
        ..Options::default()
    })
    .await;
    w.wait_for_tool("demo.sleep").await;
    // Times out twice: the first attempt ends in `attempt_failed`, the second, a redelivery,
    // in `failed`.
    let id = w
        .submit_ok(json!({
            "tool": "demo.sleep", "arguments": {"seconds": 30, "steps": 1},
            "timeout_secs": 1, "max_attempts": 2,
        }))
        .await;
    eventually(
        "the second attempt's start stored while it runs",
        Duration::from_secs(20),
        || async {
            let s = stored(&w, id).await;
            (s == kinds(&[
                ("submitted", false),
                ("attempt_failed", true),
                ("started", false),
            ]))
            .then_some(())
        },
    )
    .await;
    w.wait_recorded(id, TaskStatus::Failed).await;
    assert_eq!(
        stored(&w, id).await,
        kinds(&[
            ("submitted", false),
            ("attempt_failed", true),
            ("started", false),
            ("failed", false)
        ])
    );
    let attempts: Vec<u32> = w
        .store
        .events(id)
        .await
        .unwrap()
        .iter()
        .filter(|(_, e)| matches!(e.kind, EventKind::Started { .. }))
        .map(|(_, e)| e.attempt)
        .collect();
    assert_eq!(attempts, [1, 2]);
    w.shutdown().await;
}
