//! Priorities: higher levels run first, lower ones still make progress, and tasks that reach an
//! idle worker together on several levels are each run once.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;
use wharf_bus::Topology;
use wharf_contract::{EventKind, Priority, TaskStatus};
use wharf_testkit::{Options, Wharf, eventually};

/// The stream sequence of each task's `started` events.
async fn starts(w: &Wharf, id: Uuid) -> Vec<u64> {
    w.store
        .events(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| matches!(e.kind, EventKind::Started { .. }))
        .map(|(seq, _)| seq)
        .collect()
}

/// Deliveries made so far by the default queue's consumers, over every level (a redelivery
/// counts again).
async fn deliveries(w: &Wharf) -> u64 {
    let mut total = 0;
    for p in Priority::ALL {
        let mut c = w.bus.queue_consumer("default", p).await.unwrap();
        total += c.info().await.unwrap().delivered.consumer_sequence;
    }
    total
}

async fn wait_succeeded(w: &Wharf, n: u64) {
    eventually(
        &format!("{n} tasks succeeded"),
        Duration::from_secs(90),
        || async {
            let counts = w.store.count_by_status().await.unwrap();
            (counts.get("succeeded").copied() == Some(n)).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn higher_levels_run_first_and_lower_ones_are_not_starved() {
    let mut w = Wharf::start_with(Options {
        concurrency: 1,
        ..Options::default()
    })
    .await;
    w.wait_for_tool("demo.echo").await;
    // No worker while the backlog builds; the lowest level is submitted first, so running
    // tasks in submission order would start every low task before any high one.
    w.workers.pop().unwrap().stop().await;
    const PER_LEVEL: usize = 20;
    let mut tasks: Vec<(Uuid, Priority)> = Vec::new();
    for p in [Priority::Low, Priority::Normal, Priority::High] {
        for i in 0..PER_LEVEL {
            let id = w
                .submit_ok(json!({
                    "tool": "demo.echo",
                    "arguments": {"message": format!("{p}-{i}")},
                    "priority": p,
                }))
                .await;
            tasks.push((id, p));
        }
    }
    w.add_worker();
    wait_succeeded(&w, tasks.len() as u64).await;

    let mut order = Vec::new();
    for (id, p) in &tasks {
        let started = starts(&w, *id).await;
        assert_eq!(started.len(), 1, "task {id} started {started:?}");
        order.push((started[0], *p));
        assert_eq!(w.get_task(*id).await.priority, *p);
    }
    order.sort();
    let levels: Vec<Priority> = order.iter().map(|(_, p)| *p).collect();
    assert_eq!(levels[0], Priority::High, "start order {levels:?}");
    let first_ten = &levels[..10];
    let count = |p| first_ten.iter().filter(|l| **l == p).count();
    assert!(
        count(Priority::High) >= 6,
        "high takes most of the first slots: {levels:?}"
    );
    assert!(
        count(Priority::Normal) >= 1 && count(Priority::Low) >= 1,
        "normal and low make progress while high tasks wait: {levels:?}"
    );
    let mean_rank = |p| {
        let ranks: Vec<usize> = (0..levels.len()).filter(|i| levels[*i] == p).collect();
        ranks.iter().sum::<usize>() as f64 / ranks.len() as f64
    };
    assert!(
        mean_rank(Priority::High) < mean_rank(Priority::Normal)
            && mean_rank(Priority::Normal) < mean_rank(Priority::Low),
        "start order {levels:?}"
    );

    // The list filters by level.
    let low: Value = w
        .get("/api/v1/tasks?priority=low&limit=500")
        .await
        .json()
        .await
        .unwrap();
    let low = low["tasks"].as_array().unwrap();
    assert_eq!(low.len(), PER_LEVEL);
    assert!(low.iter().all(|t| t["priority"] == "low"));
    let bad = w.get("/api/v1/tasks?priority=urgent").await;
    assert_eq!(bad.status(), 400);
    let problem: Value = bad.json().await.unwrap();
    assert_eq!(problem["errors"][0]["pointer"], "/query/priority");
    w.shutdown().await;
}

#[tokio::test]
async fn an_unknown_priority_is_refused_and_nothing_is_queued() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.echo").await;
    let before = w.stream_messages(wharf_contract::EVENTS_STREAM).await;
    let (status, problem) = w
        .submit(json!({"tool": "demo.echo", "arguments": {"message": "x"}, "priority": "urgent"}))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/priority", "{problem}");
    assert_eq!(
        w.stream_messages(wharf_contract::EVENTS_STREAM).await,
        before
    );
    w.shutdown().await;
}

#[tokio::test]
async fn a_delayed_task_reaches_its_own_level() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.echo").await;
    let id = w
        .submit_ok(json!({
            "tool": "demo.echo",
            "arguments": {"message": "later"},
            "priority": "high",
            "delay_secs": 1,
        }))
        .await;
    let view = w.wait_recorded(id, TaskStatus::Succeeded).await;
    assert_eq!(view.priority, Priority::High);
    // It was taken through the high level's consumer, not the normal one.
    let mut high = w
        .bus
        .queue_consumer("default", Priority::High)
        .await
        .unwrap();
    let mut normal = w
        .bus
        .queue_consumer("default", Priority::Normal)
        .await
        .unwrap();
    assert_eq!(high.info().await.unwrap().delivered.consumer_sequence, 1);
    assert_eq!(normal.info().await.unwrap().delivered.consumer_sequence, 0);
    w.shutdown().await;
}

/// Tasks arriving together on every level of an idle worker with one slot: the worker's waiting
/// pull requests bring more than it can start, and the extra tasks wait for the slot. They must
/// keep their leases meanwhile (the wait here is longer than a lease), and go back unstarted
/// when the worker stops.
#[tokio::test]
async fn tasks_waiting_for_a_slot_keep_their_lease_and_go_back_at_shutdown() {
    let mut w = Wharf::start_with(Options {
        concurrency: 1,
        topology: Topology {
            ack_wait: Duration::from_secs(3),
            ..Topology::default()
        },
        shutdown_grace: Duration::from_secs(10),
        ..Options::default()
    })
    .await;
    w.wait_for_tool("demo.sleep").await;
    let batch = |seconds: f64| {
        let tasks: Vec<Value> = ["low", "normal", "high"]
            .iter()
            .map(|p| {
                json!({
                    "tool": "demo.sleep",
                    "arguments": {"seconds": seconds, "steps": 1},
                    "priority": p,
                })
            })
            .collect();
        json!({ "tasks": tasks })
    };
    let submit_batch = |body: Value| {
        let w = &w;
        async move {
            let r = w
                .client()
                .request(Method::POST, "/api/v1/tasks/batch")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            let body: Value = r.json().await.unwrap();
            body["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap().parse::<Uuid>().unwrap())
                .collect::<Vec<_>>()
        }
    };
    // Three 2.5 s tasks, one slot: the last to start waits 5 s, longer than the 3 s lease.
    let first = submit_batch(batch(2.5)).await;
    wait_succeeded(&w, 3).await;
    for id in &first {
        assert_eq!(starts(&w, *id).await.len(), 1, "task {id} ran once");
        assert_eq!(w.get_task(*id).await.attempts, 1, "task {id}: one attempt");
    }
    assert_eq!(
        deliveries(&w).await,
        3,
        "no lease ran out: nothing was redelivered"
    );

    // Again, and stop the worker while one runs: the others were never started, and run once
    // on the next worker, still on their first attempt.
    let second = submit_batch(batch(1.0)).await;
    eventually("a task running", Duration::from_secs(10), || async {
        let mut running = 0;
        for id in &second {
            running += starts(&w, *id).await.len();
        }
        (running > 0).then_some(())
    })
    .await;
    w.workers.pop().unwrap().stop().await;
    w.add_worker();
    wait_succeeded(&w, 6).await;
    for id in &second {
        assert_eq!(starts(&w, *id).await.len(), 1, "task {id} ran once");
        assert_eq!(w.get_task(*id).await.attempts, 1, "task {id}: one attempt");
    }
    w.shutdown().await;
}
