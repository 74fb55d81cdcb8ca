//! Prometheus metrics: what a scrape of the gateway shows after a few tasks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use wharf_contract::TaskStatus;
use wharf_testkit::{Wharf, eventually};

/// A scrape as `name{label="value",…}` (labels sorted) → value.
pub(crate) fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let mut labels: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
                labels.sort();
                (n, labels.join(","))
            }
            None => (series, String::new()),
        };
        out.insert(format!("{name}{{{labels}}}"), value.parse().unwrap());
    }
    out
}

/// The key [`parse`] gives the series `name` with `labels`.
pub(crate) fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    l.sort();
    format!("{name}{{{}}}", l.join(","))
}

async fn scrape(w: &Wharf) -> (String, BTreeMap<String, f64>) {
    let r = w.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    let parsed = parse(&text);
    (text, parsed)
}

#[tokio::test]
async fn a_scrape_counts_tasks_calls_and_requests_by_bounded_labels() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.echo").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            w.submit_ok(json!({"tool": "demo.echo", "arguments": {"message": format!("m{i}")}}))
                .await,
        );
    }
    let failing = w
        .submit_ok(json!({"tool": "demo.fail", "arguments": {}, "priority": "high"}))
        .await;
    let long = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 30, "steps": 1}}))
        .await;
    for id in &ids {
        w.wait_recorded(*id, TaskStatus::Succeeded).await;
        w.get_task(*id).await;
    }
    w.wait_recorded(failing, TaskStatus::Failed).await;
    eventually("the long task running", Duration::from_secs(10), || async {
        (w.get_task(long).await.status == TaskStatus::Running).then_some(())
    })
    .await;
    w.cancel(long).await;
    w.wait_recorded(long, TaskStatus::Cancelled).await;

    let (text, m) = scrape(&w).await;
    let get = |name: &str, labels: &[(&str, &str)]| {
        m.get(&series(name, labels))
            .copied()
            .unwrap_or_else(|| panic!("{} missing in\n{text}", series(name, labels)))
    };
    let echo = [("queue", "default"), ("tool", "demo.echo")];
    assert_eq!(
        get(
            "wharf_tasks_submitted_total",
            &[
                ("queue", "default"),
                ("tool", "demo.echo"),
                ("priority", "normal")
            ]
        ),
        3.0
    );
    assert_eq!(
        get(
            "wharf_tasks_submitted_total",
            &[
                ("queue", "default"),
                ("tool", "demo.fail"),
                ("priority", "high")
            ]
        ),
        1.0
    );
    assert_eq!(get("wharf_tasks_started_total", &echo), 3.0);
    let finished = |tool: &str, outcome: &str| {
        get(
            "wharf_tasks_finished_total",
            &[("queue", "default"), ("tool", tool), ("outcome", outcome)],
        )
    };
    assert_eq!(finished("demo.echo", "succeeded"), 3.0);
    assert_eq!(finished("demo.fail", "failed"), 1.0);
    assert_eq!(finished("demo.sleep", "cancelled"), 1.0);
    assert_eq!(
        get(
            "wharf_task_duration_seconds_count",
            &[
                ("queue", "default"),
                ("tool", "demo.echo"),
                ("outcome", "succeeded")
            ]
        ),
        3.0
    );
    assert!(
        get(
            "wharf_task_queue_wait_seconds_count",
            &[("queue", "default"), ("priority", "normal")]
        ) >= 4.0
    );
    let call = |tool: &str, outcome: &str| {
        get(
            "wharf_mcp_call_duration_seconds_count",
            &[("server", "demo"), ("tool", tool), ("outcome", outcome)],
        )
    };
    assert_eq!(call("echo", "ok"), 3.0);
    assert_eq!(call("fail", "tool_error"), 1.0);
    assert_eq!(call("sleep", "cancelled"), 1.0);
    assert_eq!(
        get(
            "wharf_mcp_call_errors_total",
            &[
                ("server", "demo"),
                ("tool", "sleep"),
                ("outcome", "cancelled")
            ]
        ),
        1.0
    );
    assert!(
        get(
            "wharf_http_request_duration_seconds_count",
            &[
                ("method", "POST"),
                ("route", "/api/v1/tasks"),
                ("status", "202")
            ]
        ) >= 5.0
    );
    assert!(
        get(
            "wharf_http_request_duration_seconds_count",
            &[
                ("method", "GET"),
                ("route", "/api/v1/tasks/{id}"),
                ("status", "200")
            ]
        ) >= 3.0
    );
    assert!(
        get(
            "wharf_http_request_duration_seconds_bucket",
            &[
                ("method", "POST"),
                ("route", "/api/v1/tasks"),
                ("status", "202"),
                ("le", "+Inf")
            ]
        ) >= 5.0
    );
    assert_eq!(
        get(
            "wharf_queue_waiting_tasks",
            &[("queue", "default"), ("priority", "normal")]
        ),
        0.0
    );
    assert_eq!(get("wharf_workers", &[]), 1.0);
    assert_eq!(
        get("wharf_worker_tasks_in_flight", &[("queue", "default")]),
        0.0
    );
    // submitted and an end for each task (a short one's start travels with its end), and
    // the long one's own started and cancel_requested: 12 at least.
    assert!(get("wharf_recorder_events_total", &[]) >= 12.0);
    assert!(get("process_resident_memory_bytes", &[]) > 1e6);
    // No label holds a task id.
    for id in ids.iter().chain([&failing, &long]) {
        assert!(!text.contains(&id.to_string()), "task id {id} in a label");
    }
    w.shutdown().await;
}
