//! The operations API: live workers and the state of each queue.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use wharf_bus::Topology;
use wharf_testkit::{Options, Wharf, eventually};

async fn get(w: &Wharf, path: &str) -> Value {
    let r = w.get(path).await;
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

async fn workers(w: &Wharf) -> Vec<Value> {
    get(w, "/api/v1/workers").await["workers"]
        .as_array()
        .unwrap()
        .clone()
}

async fn queue(w: &Wharf, name: &str) -> Option<Value> {
    get(w, "/api/v1/queues").await["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .cloned()
}

fn waiting_by_level(q: &Value) -> Vec<(String, u64)> {
    q["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["priority"].as_str().unwrap().to_owned(),
                l["waiting"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn workers_are_listed_while_alive_and_drop_out_when_they_stop_or_die() {
    let mut w = Wharf::start_with(Options {
        workers: 2,
        concurrency: 4,
        topology: Topology {
            ack_wait: Duration::from_secs(10),
            worker_ttl: Duration::from_secs(3),
            ..Topology::default()
        },
        ..Options::default()
    })
    .await;
    w.wait_for_tool("demo.sleep").await;
    let listed = eventually("both workers listed", Duration::from_secs(10), || async {
        let list = workers(&w).await;
        let ready = list.len() == 2
            && list.iter().all(|x| {
                x["tools"]
                    .as_array()
                    .is_some_and(|t| t.contains(&json!("demo.sleep")))
            });
        ready.then_some(list)
    })
    .await;
    for x in &listed {
        assert_eq!(x["queues"], json!(["default"]));
        assert_eq!(x["concurrency"], 4);
        assert!(!x["host"].as_str().unwrap().is_empty());
        assert!(!x["version"].as_str().unwrap().is_empty());
    }

    let id = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 30, "steps": 1}}))
        .await;
    eventually(
        "the task counted in flight",
        Duration::from_secs(10),
        || async {
            let in_flight: u64 = workers(&w)
                .await
                .iter()
                .map(|x| x["in_flight"].as_u64().unwrap())
                .sum();
            (in_flight == 1).then_some(())
        },
    )
    .await;
    w.cancel(id).await;

    // A worker that stops withdraws itself before it exits.
    w.workers.pop().unwrap().stop().await;
    assert_eq!(
        workers(&w).await.len(),
        1,
        "a stopped worker is gone at once"
    );
    // One that dies is gone once its announcement lapses.
    w.workers.pop().unwrap().abort().await;
    eventually("the dead worker gone", Duration::from_secs(15), || async {
        workers(&w).await.is_empty().then_some(())
    })
    .await;
    w.shutdown().await;
}

#[tokio::test]
async fn queues_show_waiting_running_and_finished_tasks_per_level() {
    let mut w = Wharf::start().await;
    w.wait_for_tool("demo.echo").await;
    w.workers.pop().unwrap().stop().await;
    let echo = |priority: &str, queue: &str| {
        json!({
            "tool": "demo.echo",
            "arguments": {"message": "x"},
            "priority": priority,
            "queue": queue,
        })
    };
    for (priority, n) in [("high", 3), ("normal", 2), ("low", 1)] {
        for _ in 0..n {
            w.submit_ok(echo(priority, "default")).await;
        }
    }
    // A queue no worker ever served: it has no consumer, only tasks.
    let stranded = w.submit_ok(echo("low", "nobody")).await;

    let default = queue(&w, "default").await.expect("default listed");
    assert_eq!(default["waiting"], 6, "{default}");
    assert_eq!(
        waiting_by_level(&default),
        [("high".into(), 3), ("normal".into(), 2), ("low".into(), 1)]
    );
    assert_eq!(default["in_flight"], 0);
    assert_eq!(default["workers"], 0, "{default}");
    assert!(default["oldest_age_secs"].as_f64().unwrap() >= 0.0);
    let nobody = queue(&w, "nobody").await.expect("a queue with tasks only");
    assert_eq!(
        waiting_by_level(&nobody),
        [("high".into(), 0), ("normal".into(), 0), ("low".into(), 1)]
    );

    w.add_worker();
    let default = eventually("the queue drained", Duration::from_secs(30), || async {
        let q = queue(&w, "default").await?;
        (q["waiting"] == 0 && q["finished_last_minute"] == 6 && q["workers"] == 1).then_some(q)
    })
    .await;
    assert_eq!(default["in_flight"], 0);
    assert_eq!(default["failed_last_minute"], 0, "{default}");
    assert!(default.get("oldest_age_secs").is_none(), "{default}");
    assert_eq!(queue(&w, "nobody").await.unwrap()["waiting"], 1);
    // A task that fails counts among the finished and the failed.
    w.submit_ok(json!({"tool": "demo.fail", "arguments": {}, "max_attempts": 1}))
        .await;
    eventually("the failure counted", Duration::from_secs(30), || async {
        let q = queue(&w, "default").await?;
        (q["finished_last_minute"] == 7 && q["failed_last_minute"] == 1).then_some(())
    })
    .await;
    w.cancel(stranded).await;

    // The CLI prints the same.
    let out = tokio::process::Command::new(wharf_testkit::wharf_bin())
        .args(["--api", &w.api, "queues"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("nobody "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("(0/0/1)"), "{text}");
    w.shutdown().await;
}

#[tokio::test]
async fn a_websocket_follows_the_system_status() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.echo").await;
    let mut ws = wharf_testkit::WsClient::connect(&w).await;
    ws.send(json!({"type": "system:subscribe"})).await;
    let first = ws.next().await;
    assert_eq!(first["type"], "system:status", "{first}");
    assert_eq!(first["workers"].as_array().unwrap().len(), 1, "{first}");
    assert!(
        first["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == "default" && q["workers"] == 1),
        "{first}"
    );
    // Later ones come by themselves, and show what happened meanwhile.
    let id = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "x"}}))
        .await;
    w.wait_recorded(id, wharf_contract::TaskStatus::Succeeded)
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a system:status showing the task");
        assert_eq!(m["type"], "system:status", "{m}");
        let ended = m["queues"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["name"] == "default")
            .map(|q| q["finished_last_minute"].as_u64().unwrap());
        if ended == Some(1) {
            break;
        }
    }
    // Unsubscribing is accepted (no error comes back), and subscribing again is answered.
    ws.send(json!({"type": "system:unsubscribe"})).await;
    ws.send(json!({"type": "system:subscribe"})).await;
    assert_eq!(ws.next().await["type"], "system:status");
    w.shutdown().await;
}

#[tokio::test]
async fn every_answer_names_its_request() {
    let w = Wharf::start().await;
    let given = w
        .client()
        .request(Method::GET, "/api/v1/queues")
        .header("x-request-id", "order-7/retry-2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        given.headers()["x-request-id"],
        "order-7/retry-2",
        "the caller's id is kept"
    );
    let made = w.get("/api/v1/nothing").await;
    assert_eq!(made.status(), 404);
    let id = made.headers()["x-request-id"].to_str().unwrap();
    assert!(id.parse::<uuid::Uuid>().is_ok(), "a new id: {id}");
    let unusable = w
        .client()
        .request(Method::GET, "/api/v1/queues")
        .header("x-request-id", "x".repeat(200))
        .send()
        .await
        .unwrap();
    let id = unusable.headers()["x-request-id"].to_str().unwrap();
    assert!(
        id.parse::<uuid::Uuid>().is_ok(),
        "an over-long id is replaced: {id}"
    );
    w.shutdown().await;
}
