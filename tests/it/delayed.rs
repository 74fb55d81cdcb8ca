//! Delayed tasks (`delay_secs`, `run_at`): kept as JetStream message schedules outside every
//! queue until due, then queued like any task.

use reqwest::Method;
use serde_json::json;
use wharf_contract::{TASKS_STREAM, TaskStatus};
use wharf_testkit::Wharf;

#[tokio::test]
async fn a_delayed_task_starts_at_its_time_not_before() {
    let w = Wharf::start().await;
    let by_delay = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "later"}, "delay_secs": 2}))
        .await;
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let by_time = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "at"}, "run_at": at}))
        .await;
    for id in [by_delay, by_time] {
        let queued = w.get_task(id).await;
        let run_at = queued.run_at.expect("the view shows the start time");
        let done = w.wait_recorded(id, TaskStatus::Succeeded).await;
        let started = done.started_at.unwrap();
        assert!(started >= run_at, "started {started}, due {run_at}");
        // "About a second": generous, as the machine may be busy with other tests.
        assert!(
            started - run_at < chrono::Duration::seconds(10),
            "started {started}, due {run_at}"
        );
        // Postgres keeps microseconds; the stream had nanoseconds.
        let kept = done.run_at.expect("the history keeps the start time");
        assert!((kept - run_at).num_microseconds().unwrap().abs() <= 1);
    }
    w.shutdown().await;
}

#[tokio::test]
async fn bad_delays_are_refused_and_past_times_run_at_once() {
    let w = Wharf::start().await;
    let echo = |extra: serde_json::Value| {
        let mut body = json!({"tool": "demo.echo", "arguments": {"message": "x"}});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let far = chrono::Utc::now() + chrono::Duration::days(400);
    for (extra, pointer) in [
        (
            json!({"delay_secs": 5, "run_at": chrono::Utc::now()}),
            "/delay_secs",
        ),
        (json!({"delay_secs": 0}), "/delay_secs"),
        (json!({"delay_secs": 40_000_000}), "/delay_secs"),
        (json!({"run_at": far}), "/run_at"),
        (json!({"run_at": "tomorrow"}), "/run_at"),
    ] {
        let (status, problem) = w.submit(echo(extra.clone())).await;
        assert_eq!(status, 422, "{extra}: {problem}");
        assert_eq!(
            problem["errors"][0]["pointer"], pointer,
            "{extra}: {problem}"
        );
    }
    assert_eq!(w.stream_messages(TASKS_STREAM).await, 0, "nothing enqueued");

    let past = chrono::Utc::now() - chrono::Duration::hours(1);
    let id = w.submit_ok(echo(json!({"run_at": past}))).await;
    let done = w.wait_recorded(id, TaskStatus::Succeeded).await;
    assert_eq!(done.run_at, None, "a time already past is no delay");
    w.shutdown().await;
}

#[tokio::test]
async fn a_delayed_task_cancelled_before_its_time_ends_at_once_and_never_runs() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.sleep").await;
    let id = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 0.1}, "delay_secs": 3600}))
        .await;
    let r = w
        .client()
        .request(Method::POST, &format!("/api/v1/tasks/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let view: serde_json::Value = r.json().await.unwrap();
    assert_eq!(view["status"], "cancelled");
    let done = w.wait_recorded(id, TaskStatus::Cancelled).await;
    assert_eq!(done.started_at, None);
    assert_eq!(
        w.stream_messages(TASKS_STREAM).await,
        0,
        "its schedule is gone"
    );
    assert!(w.demo_log_for(id).is_empty(), "the tool was never called");
    w.shutdown().await;
}
