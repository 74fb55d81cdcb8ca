//! The web console, in a real Chromium (tests/node/console.mjs) against a real platform: what
//! the browser shows is checked against what the API then says.

use serde_json::{Value, json};
use wharf_contract::{TASKS_STREAM, TaskStatus};
use wharf_testkit::{Options, Wharf};

/// Runs one scenario of console.mjs against `w`; what the browser saw.
async fn browse(w: &Wharf, scenario: &str, params: Value) -> Value {
    let out = tokio::process::Command::new("node")
        .arg("console.mjs")
        .arg(scenario)
        .arg(&w.api)
        .arg(params.to_string())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/node"))
        .output()
        .await
        .expect("node runs");
    assert!(
        out.status.success(),
        "the browser scenario {scenario} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    });
    assert_eq!(seen["errors"], json!([]), "no script errors: {seen}");
    seen
}

#[tokio::test]
async fn the_console_is_served_with_its_security_and_cache_headers() {
    let w = Wharf::start().await;
    let page = w.get("/").await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(page.headers()["cache-control"], "no-cache");
    let html = page.text().await.unwrap();
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page loads its script");
    assert!(script.starts_with("/assets/"), "{script}");

    // Hashed assets are cached for good, and gzipped for those who take it.
    let asset = w
        .client()
        .request(reqwest::Method::GET, script)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status(), 200);
    assert_eq!(
        asset.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(asset.headers()["content-encoding"], "gzip");
    assert!(
        asset.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );

    // A screen's address gets the page when a browser navigates to it …
    let deep = w
        .client()
        .request(
            reqwest::Method::GET,
            "/tasks/0190d2a0-0000-7000-8000-000000000000",
        )
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(deep.status(), 200);
    assert_eq!(deep.text().await.unwrap(), html);
    // … but the API keeps its 404 problem, for browsers too, and so do unknown files.
    for path in ["/api/v1/nothing", "/assets/nothing.js", "/nothing"] {
        let r = w
            .client()
            .request(reqwest::Method::GET, path)
            .header(
                "accept",
                if path == "/nothing" {
                    "*/*"
                } else {
                    "text/html"
                },
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    // The service worker and the manifest are revalidated, never cached for long.
    for path in ["/sw.js", "/manifest.webmanifest"] {
        let r = w.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["cache-control"], "no-cache", "{path}");
    }
}

#[tokio::test]
async fn a_task_submitted_from_the_form_shows_its_progress_and_result() {
    let w = Wharf::start().await;
    let seen = browse(
        &w,
        "submit",
        json!({"tool": "demo.sleep", "fields": {"/arguments/seconds": 1.5, "/arguments/steps": 3}}),
    )
    .await;
    assert_eq!(seen["status"], "succeeded", "{seen}");
    assert!(seen["result"].as_str().unwrap().contains("slept"), "{seen}");
    let progress: Vec<f64> = serde_json::from_value(seen["progress"].clone()).unwrap();
    assert!(
        progress.iter().any(|p| *p > 0.0 && *p < 100.0),
        "the bar moved before the end: {progress:?}"
    );
    assert_eq!(progress.last(), Some(&100.0), "{progress:?}");
    let events: Vec<String> = serde_json::from_value(seen["events"].clone()).unwrap();
    assert_eq!(events.first().map(String::as_str), Some("task:accepted"));
    assert!(events.iter().any(|e| e == "task:progress"), "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("task:complete"));

    // The task is what the form said.
    let id = seen["id"].as_str().unwrap().parse().unwrap();
    let task = w.get_task(id).await;
    assert_eq!(task.status, TaskStatus::Succeeded);
    // Edit and run: the form again, filled with the task's tool and arguments.
    assert_eq!(
        seen["edited"],
        json!({"tool": "demo.sleep", "/arguments/seconds": "1.5"}),
        "{seen}"
    );
    // The page names the task's trace.
    assert_eq!(seen["trace"].as_str(), task.trace_id.as_deref(), "{seen}");
    assert_eq!(seen["trace"].as_str().map(str::len), Some(32), "{seen}");
    assert_eq!(
        Value::Object(task.arguments.into_iter().collect()),
        json!({"seconds": 1.5, "steps": 3})
    );
}

#[tokio::test]
async fn a_bad_argument_shows_the_field_error_and_enqueues_nothing() {
    let w = Wharf::start().await;
    let seen = browse(
        &w,
        "bad",
        json!({"tool": "demo.sleep", "fields": {"/arguments/seconds": -5}, "expect": "/arguments/seconds"}),
    )
    .await;
    assert!(!seen["error"].as_str().unwrap().is_empty(), "{seen}");
    assert_eq!(seen["invalid"], "true");
    assert!(seen["url"].as_str().unwrap().ends_with("/submit"), "{seen}");
    assert_eq!(w.stream_messages(TASKS_STREAM).await, 0);
    let list: Value = w.get("/api/v1/tasks").await.json().await.unwrap();
    assert_eq!(list["tasks"], json!([]));
}

#[tokio::test]
async fn a_running_task_is_cancelled_from_its_page() {
    let w = Wharf::start().await;
    let id = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 60}}))
        .await;
    let seen = browse(&w, "cancel", json!({"id": id})).await;
    let events: Vec<String> = serde_json::from_value(seen["events"].clone()).unwrap();
    assert!(
        events.iter().any(|e| e == "task:cancel_requested"),
        "{events:?}"
    );
    assert_eq!(events.last().map(String::as_str), Some("task:cancelled"));
    // The tool call itself was cancelled, and the history says so.
    w.wait_demo_cancelled(id).await;
    w.wait_recorded(id, TaskStatus::Cancelled).await;
}

#[tokio::test]
async fn failed_tasks_filtered_and_selected_run_again() {
    let w = Wharf::start().await;
    let mut failed = Vec::new();
    for i in 0..3 {
        failed.push(
            w.submit_ok(json!({"tool": "demo.fail", "arguments": {"message": format!("no {i}")}, "max_attempts": 1}))
                .await,
        );
    }
    // One that succeeds, which the filter must leave out.
    let ok = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "fine"}}))
        .await;
    for id in &failed {
        w.wait_recorded(*id, TaskStatus::Failed).await;
    }
    w.wait_recorded(ok, TaskStatus::Succeeded).await;

    let seen = browse(&w, "retry", json!({"count": 3})).await;
    assert_eq!(seen["statuses"], json!(["failed", "failed", "failed"]));
    assert_eq!(seen["notice"], "Ran again: 3 of 3.", "{seen}");
    // Each ran again as a new task that names it.
    let list: Value = w.get("/api/v1/tasks?view=full").await.json().await.unwrap();
    for id in &failed {
        let copies: Vec<&Value> = list["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["metadata"]["retry_of"] == id.to_string().as_str())
            .collect();
        assert_eq!(copies.len(), 1, "one new task for {id}: {list}");
        assert_eq!(copies[0]["idempotency_key"], format!("retry:{id}"));
        assert_eq!(copies[0]["tool"], "demo.fail");
    }
}

#[tokio::test]
async fn a_reader_sees_no_write_buttons_and_a_tenant_sees_only_its_own_tasks() {
    let w = Wharf::start_with(Options::closed()).await;
    let admin = w.client_for("acme", "admin").await;
    wharf_testkit::wait_for_tool_at(&admin, "demo.echo").await;
    let (status, body) = wharf_testkit::send(
        admin
            .request(reqwest::Method::POST, "/api/v1/tasks")
            .json(&json!({"tool": "demo.echo", "arguments": {"message": "acme's"}})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    w.wait_recorded(id.parse().unwrap(), TaskStatus::Succeeded)
        .await;

    let reader = w.key("acme", "reader").await;
    let seen = browse(&w, "signin", json!({"key": reader, "task": id})).await;
    assert_eq!(
        seen["nav"],
        json!(["Tasks", "Tools", "Agents", "Sessions"]),
        "a reader's screens only: {seen}"
    );
    assert_eq!(seen["rows"], json!([id]), "{seen}");
    let buttons: Vec<String> = serde_json::from_value(seen["buttons"].clone()).unwrap();
    assert!(
        !buttons
            .iter()
            .any(|b| b.contains("Cancel") || b.contains("Retry")),
        "{buttons:?}"
    );
    assert_eq!(seen["task"]["alert"], Value::Null, "{seen}");
    assert_eq!(seen["task"]["buttons"], json!([]), "{seen}");

    // Another tenant's admin: none of acme's tasks, and acme's task is not found.
    let other = w.key("globex", "admin").await;
    let seen = browse(&w, "signin", json!({"key": other, "task": id})).await;
    assert_eq!(seen["rows"], json!([]), "{seen}");
    assert!(
        seen["task"]["alert"].as_str().unwrap().contains("no task"),
        "{seen}"
    );
}

/// Where the screen tests leave their screenshots (`WHARF_SCREENSHOTS`, else `target/`).
fn screenshot_dir() -> String {
    std::env::var("WHARF_SCREENSHOTS").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/console-screenshots").to_owned()
    })
}

#[tokio::test]
async fn every_screen_fits_a_phone_and_passes_axe() {
    let w = Wharf::start().await;
    let id = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 0.2, "steps": 2}}))
        .await;
    w.wait_recorded(id, TaskStatus::Succeeded).await;
    let dead = dead_letter(&w).await;
    // A configuration revision, for the history and its diff.
    let (status, body) = wharf_testkit::send(
        w.client()
            .request(reqwest::Method::PUT, "/api/v1/config")
            .json(&json!({"revision": 0, "config": {"session_ttl_secs": 7200}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let screens = json!([
        {"name": "overview", "path": "/", "ready": "tr[data-queue]"},
        {"name": "tasks", "path": "/tasks", "ready": "tr[data-task]"},
        {"name": "task", "path": format!("/tasks/{id}"), "ready": ".timeline li[data-type='task:complete']"},
        {"name": "submit", "path": "/submit?tool=demo.sleep", "ready": "#f_47arguments_47seconds"},
        {"name": "queues", "path": "/queues", "ready": "tr[data-queue]"},
        {"name": "dlq", "path": "/dlq", "ready": "tr[data-letter]"},
        {"name": "dead-letter", "path": format!("/dlq/{dead}"), "ready": "pre.json"},
        {"name": "tools", "path": "/tools", "ready": "li[data-tool]"},
        {"name": "agents", "path": "/agents", "ready": "table[data-loaded]"},
        {"name": "sessions", "path": "/sessions", "ready": "table[data-loaded]"},
        {"name": "keys", "path": "/keys", "ready": "table[data-loaded]"},
        {"name": "config", "path": "/config", "ready": "ol.revisions[data-loaded] li"},
        {"name": "audit", "path": "/audit", "ready": "table[data-loaded] tbody tr"},
    ]);
    let seen = browse(
        &w,
        "screens",
        json!({"screens": screens, "dir": screenshot_dir()}),
    )
    .await;
    let report = seen["report"].as_array().unwrap();
    // 1280x800, 390x844 and 360x740.
    assert_eq!(report.len(), 3 * screens.as_array().unwrap().len());
    let failing: Vec<&Value> = report
        .iter()
        .filter(|r| r["overflow"] != json!([]) || r["violations"] != json!([]))
        .collect();
    assert!(
        failing.is_empty(),
        "screens that scroll sideways (overflow) or fail axe (violations): {failing:#?}"
    );
}

#[tokio::test]
async fn the_console_installs_starts_offline_and_never_caches_the_api() {
    let w = Wharf::start().await;
    let id = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "hi"}}))
        .await;
    w.wait_recorded(id, TaskStatus::Succeeded).await;
    let seen = browse(
        &w,
        "pwa",
        json!({"ready": "tr[data-queue]", "visit": ["/tasks", format!("/tasks/{id}"), "/submit"]}),
    )
    .await;
    assert_eq!(seen["installabilityErrors"], json!([]), "{seen}");
    assert_eq!(seen["manifestErrors"], json!([]), "{seen}");
    let cached: Vec<String> = serde_json::from_value(seen["cached"].clone()).unwrap();
    assert!(
        cached.contains(&"/".to_owned()),
        "the shell is cached: {cached:?}"
    );
    assert!(
        cached
            .iter()
            .all(|p| !p.starts_with("/api/") && !p.starts_with("/ws/")),
        "no API answer is cached: {cached:?}"
    );
    assert!(
        seen["offline"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{seen}"
    );
    // The figures the issue asks for; speed is judged from them in docs/benchmarks.md, not
    // asserted here. The bundle size is not a timing: it is held.
    let javascript = seen["javascript"].as_u64().unwrap();
    println!(
        "console first load: {:.0} ms to the overview with data, {javascript} bytes of JavaScript (gzipped)",
        seen["loadMs"].as_f64().unwrap()
    );
    assert!(
        javascript > 0 && javascript <= 150 * 1024,
        "{javascript} bytes"
    );
}

/// A task dead-lettered by a timeout on its only attempt: its id.
async fn dead_letter(w: &Wharf) -> uuid::Uuid {
    let id = w
        .submit_ok(json!({
            "tool": "demo.sleep",
            "arguments": {"seconds": 30},
            "timeout_secs": 1,
            "max_attempts": 1,
        }))
        .await;
    let task = w.wait_recorded(id, TaskStatus::Failed).await;
    assert!(
        task.error.as_ref().is_some_and(|e| e.dead_letter),
        "{task:?}"
    );
    id
}

#[tokio::test]
async fn a_dead_letter_is_replayed_from_the_list() {
    let w = Wharf::start().await;
    let dead = dead_letter(&w).await;
    let seen = browse(&w, "dlq", json!({})).await;
    assert_eq!(seen["letters"], json!([dead]), "{seen}");
    assert_eq!(seen["notice"], "Replayed 1 of 1.", "{seen}");
    // The replay is a new task, and the letter is gone.
    let list: Value = w.get("/api/v1/tasks?view=full").await.json().await.unwrap();
    assert!(
        list["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["idempotency_key"] == format!("replay:{dead}")),
        "{list}"
    );
    let letters: Value = w.get("/api/v1/dlq").await.json().await.unwrap();
    assert_eq!(letters["dead_letters"], json!([]), "{letters}");
}

#[tokio::test]
async fn a_paused_queue_grows_in_the_console_and_drains_when_resumed() {
    let w = Wharf::start().await;
    let task = json!({"tool": "demo.echo", "arguments": {"message": "held"}});
    let seen = browse(
        &w,
        "pause",
        json!({"queue": "default", "count": 5, "task": task}),
    )
    .await;
    assert_eq!(seen["statuses"], json!([202, 202, 202, 202, 202]), "{seen}");
    assert_eq!(seen["grown"], 5, "{seen}");
    // Every held task ran once the queue was resumed.
    wharf_testkit::eventually(
        "five tasks recorded succeeded",
        std::time::Duration::from_secs(15),
        || async {
            let counts = w.store.count_by_status().await.ok()?;
            (counts.get("succeeded").copied() == Some(5)).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn ten_thousand_tasks_scroll_with_only_the_visible_rows_in_the_page() {
    // The queue paused: the tasks stay queued, and listed.
    let w = Wharf::start().await;
    let (status, body) = wharf_testkit::send(
        w.client()
            .request(reqwest::Method::POST, "/api/v1/queues/default/pause"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    const N: usize = 10_000;
    for chunk in 0..N / 1000 {
        let tasks: Vec<Value> = (0..1000)
            .map(|i| json!({"tool": "demo.echo", "arguments": {"message": format!("{chunk}-{i}")}}))
            .collect();
        let (status, body) = wharf_testkit::send(
            w.client()
                .request(reqwest::Method::POST, "/api/v1/tasks/batch")
                .json(&json!({"tasks": tasks})),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    wharf_testkit::eventually(
        "every task recorded",
        std::time::Duration::from_secs(60),
        || async {
            let counts = w.store.count_by_status().await.ok()?;
            (counts.get("queued").copied() == Some(N as u64)).then_some(())
        },
    )
    .await;
    let seen = browse(&w, "scroll", json!({"count": N, "step": 2000})).await;
    assert_eq!(seen["loaded"], format!("{N} tasks"), "{seen}");
    // Virtualized: the page holds the rows on screen and a margin, never the list.
    let rows = seen["maxRows"].as_u64().unwrap();
    assert!(
        rows > 0 && rows <= 60,
        "{rows} rows in the document: {seen}"
    );
    // The frame times are figures for docs/benchmarks.md, not a verdict of this test.
    println!(
        "console scroll through {N} tasks: {} frames, p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms, {} over 50 ms; at most {rows} rows in the document",
        seen["frames"],
        seen["p50"].as_f64().unwrap(),
        seen["p95"].as_f64().unwrap(),
        seen["max"].as_f64().unwrap(),
        seen["long"]
    );
}

#[tokio::test]
async fn the_main_flows_work_at_phone_size() {
    let w = Wharf::start().await;
    // Submit from the form and watch it end.
    let seen = browse(
        &w,
        "submit",
        json!({"viewport": "phone", "tool": "demo.sleep", "fields": {"/arguments/seconds": 1, "/arguments/steps": 2}}),
    )
    .await;
    assert_eq!(seen["status"], "succeeded", "{seen}");
    // A bad argument's error, next to its field.
    let seen = browse(
        &w,
        "bad",
        json!({"viewport": "phone", "tool": "demo.sleep", "fields": {"/arguments/seconds": -1}, "expect": "/arguments/seconds"}),
    )
    .await;
    assert_eq!(seen["invalid"], "true", "{seen}");
    // Cancel a running task.
    let id = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 60}}))
        .await;
    browse(&w, "cancel", json!({"viewport": "phone", "id": id})).await;
    w.wait_recorded(id, TaskStatus::Cancelled).await;
    // Pause, watch the backlog, resume.
    let seen = browse(
        &w,
        "pause",
        json!({"viewport": "phone", "queue": "default", "count": 3,
               "task": {"tool": "demo.echo", "arguments": {"message": "held"}}}),
    )
    .await;
    assert_eq!(seen["grown"], 3, "{seen}");
    // Only the submitted one and the three held ones ran; the cancelled one did not.
    wharf_testkit::eventually(
        "four tasks recorded succeeded",
        std::time::Duration::from_secs(15),
        || async {
            let counts = w.store.count_by_status().await.ok()?;
            (counts.get("succeeded").copied() == Some(4)).then_some(())
        },
    )
    .await;
}
