//! Pausing a queue: it accepts tasks, no worker takes them (not even one started meanwhile),
//! other queues run on, and resuming drains it.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;
use wharf_contract::TaskStatus;
use wharf_testkit::{Client, Options, Wharf, eventually, send};

/// Queue `name` as the gateway `http` lists it.
async fn queue(http: &Client, name: &str) -> Value {
    let (_, list) = send(http.request(Method::GET, "/api/v1/queues")).await;
    list["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("queue {name} listed: {list}"))
}

/// Runs the CLI against `w`'s gateway: its output, having checked it succeeded.
async fn cli(w: &Wharf, args: &[&str]) -> String {
    let out = tokio::process::Command::new(wharf_testkit::wharf_bin())
        .args(["--api", &w.api])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn post(w: &Wharf, path: &str) -> (u16, Value) {
    let (status, body) = send(w.client().request(Method::POST, path)).await;
    (status.as_u16(), body)
}

#[tokio::test]
async fn a_paused_queue_accepts_tasks_that_wait_until_it_is_resumed() {
    let mut w = Wharf::start_with(Options {
        queues: vec!["default".into(), "other".into()],
        ..Options::default()
    })
    .await;
    w.wait_for_tool("demo.echo").await;

    let (status, paused) = post(&w, "/api/v1/queues/default/pause").await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["paused"], true, "{paused}");
    assert!(
        paused["levels"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["paused"] == true),
        "{paused}"
    );
    // Pausing twice is pausing.
    assert_eq!(post(&w, "/api/v1/queues/default/pause").await.0, 200);
    // A queue the platform does not know is not made up by a typo.
    let (status, problem) = post(&w, "/api/v1/queues/defualt/pause").await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(problem["code"], "not_found");

    let mut waiting = Vec::new();
    for i in 0..5 {
        waiting.push(
            w.submit_ok(
                json!({"tool": "demo.echo", "arguments": {"message": format!("held {i}")}}),
            )
            .await,
        );
    }
    // A worker that starts now brings the queue's consumers up to date: the pause holds.
    w.workers.pop().unwrap().stop().await;
    w.add_worker();
    // The worker runs the other queue's task; had it been free to, it would have taken the
    // paused queue's waiting tasks at once.
    let other = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "free"}, "queue": "other"}))
        .await;
    w.wait_recorded(other, TaskStatus::Succeeded).await;
    let held = queue(&w.client(), "default").await;
    assert_eq!(held["waiting"], 5, "{held}");
    assert_eq!(held["in_flight"], 0, "{held}");
    assert_eq!(held["paused"], true, "{held}");
    for id in &waiting {
        assert_eq!(w.get_task(*id).await.status, TaskStatus::Queued);
    }

    // The CLI says so.
    let table = cli(&w, &["queues"]).await;
    let line = table
        .lines()
        .find(|l| l.starts_with("default "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.ends_with("paused"), "{table}");

    // Resumed (here with the CLI), the queue drains.
    let said = cli(&w, &["queues", "resume", "default"]).await;
    assert!(said.contains("taking tasks"), "{said}");
    for id in &waiting {
        w.wait_recorded(*id, TaskStatus::Succeeded).await;
    }
    let drained = eventually(
        "the queue shown active",
        Duration::from_secs(10),
        || async {
            let q = queue(&w.client(), "default").await;
            (q["paused"] == false && q["waiting"] == 0).then_some(q)
        },
    )
    .await;
    assert_eq!(drained["in_flight"], 0, "{drained}");
}

/// A pause is kept by JetStream with the queue's consumers, not by a process: it outlives a
/// crash of the nats-server. After the restart the held tasks still wait while the other queue
/// runs, and resuming drains them.
#[tokio::test]
async fn a_pause_outlives_a_nats_server_crash() {
    use wharf_testkit::rig::{Rig, Setup};
    let mut rig = Rig::start_with(Setup {
        workers: 1,
        env: vec![("WHARF_WORKER__QUEUES".into(), "[default,other]".into())],
        ..Setup::default()
    })
    .await;
    let http = rig.http.clone();
    let echo =
        |queue: &str| json!({"tool": "demo.echo", "arguments": {"message": "hi"}, "queue": queue});
    // The other queue's worker is up.
    let first = rig.submit(1, &echo("other")).await;
    wait_status(&http, first[0], TaskStatus::Succeeded).await;

    let (status, paused) = send(http.request(Method::POST, "/api/v1/queues/default/pause")).await;
    assert_eq!(status, 200, "{paused}");
    let held = rig.submit(3, &echo("default")).await;
    assert_eq!(held.len(), 3, "every submission accepted");
    for id in &held {
        wait_status(&http, *id, TaskStatus::Queued).await;
    }

    rig.crash_nats(Duration::from_millis(500)).await;
    // The worker is back on the server: a task on the other queue runs.
    let after = rig.submit(1, &echo("other")).await;
    assert_eq!(after.len(), 1, "the submission after the restart accepted");
    wait_status(&http, after[0], TaskStatus::Succeeded).await;
    for id in &held {
        let task = http.task(*id).await.unwrap();
        assert_eq!(task.status, TaskStatus::Queued, "task {id} still held");
    }
    let default = queue(&http, "default").await;
    assert_eq!(default["paused"], true, "{default}");
    assert_eq!(default["waiting"], 3, "{default}");

    let (status, resumed) = send(http.request(Method::POST, "/api/v1/queues/default/resume")).await;
    assert_eq!(status, 200, "{resumed}");
    for id in &held {
        wait_status(&http, *id, TaskStatus::Succeeded).await;
    }
}

/// Waits until the gateway `http` shows task `id` in `status`.
async fn wait_status(http: &Client, id: Uuid, status: TaskStatus) {
    eventually(
        &format!("task {id} {status:?}"),
        Duration::from_secs(60),
        || async {
            http.task(id)
                .await
                .is_ok_and(|t| t.status == status)
                .then_some(())
        },
    )
    .await;
}
