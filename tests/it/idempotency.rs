//! Idempotency keys: a submission repeated with the same key gets the first task back, never a
//! second task, whichever gateway it reaches, until the key's window ends.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;
use wharf_contract::{TASKS_STREAM, TaskStatus};
use wharf_testkit::{Options, Wharf, WsClient, eventually};

fn echo(message: &str, key: &str) -> Value {
    json!({"tool": "demo.echo", "arguments": {"message": message}, "idempotency_key": key})
}

fn id_of(answer: &Value) -> Uuid {
    answer["id"].as_str().unwrap().parse().unwrap()
}

/// How many tasks the history holds, once the recorder caught up with `expected`.
async fn tasks_in_history(w: &Wharf, expected: u64) -> u64 {
    eventually(
        "the history to hold the tasks",
        Duration::from_secs(20),
        || async {
            let n: u64 = w.store.count_by_status().await.unwrap().values().sum();
            (n >= expected).then_some(n)
        },
    )
    .await
}

#[tokio::test]
async fn a_repeated_key_returns_the_first_task_and_it_runs_once() {
    let w = Wharf::start().await;
    let (status, first) = w.submit(echo("hello", "order-17")).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = w.submit(echo("hello", "order-17")).await;
    assert_eq!(
        status, 200,
        "the repeat is answered with the existing task: {again}"
    );
    assert_eq!(id_of(&again), id_of(&first));
    assert_eq!(again["idempotency_key"], "order-17");

    // The same through the Idempotency-Key header.
    let post = |body: Value| {
        w.client()
            .request(Method::POST, "/api/v1/tasks")
            .header("Idempotency-Key", "order-18")
            .json(&body)
            .send()
    };
    let body = json!({"tool": "demo.echo", "arguments": {"message": "hi"}});
    let r = post(body.clone()).await.unwrap();
    assert_eq!(r.status(), 202);
    let second: Value = r.json().await.unwrap();
    assert_eq!(second["idempotency_key"], "order-18");
    let r = post(body).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["location"],
        format!("/api/v1/tasks/{}", id_of(&second))
    );
    assert_eq!(id_of(&r.json().await.unwrap()), id_of(&second));

    for id in [id_of(&first), id_of(&second)] {
        w.wait_recorded(id, TaskStatus::Succeeded).await;
        assert_eq!(
            w.event_kinds(id).await,
            ["submitted", "started", "succeeded"]
        );
    }
    // Once finished, the key still answers with the task, now with its result.
    let (status, later) = w.submit(echo("hello", "order-17")).await;
    assert_eq!(status, 200);
    assert_eq!(later["status"], "succeeded");
    assert_eq!(tasks_in_history(&w, 2).await, 2, "two tasks, not four");
    eventually(
        "both tasks acknowledged",
        Duration::from_secs(20),
        || async { (w.stream_messages(TASKS_STREAM).await == 0).then_some(()) },
    )
    .await;
    w.shutdown().await;
}

#[tokio::test]
async fn a_key_reused_for_a_different_task_is_refused_and_changes_nothing() {
    let w = Wharf::start().await;
    let first = w.submit_ok(echo("one", "k")).await;
    let (status, problem) = w.submit(echo("two", "k")).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "idempotency_key_reused");
    assert_eq!(problem["errors"][0]["pointer"], "/idempotency_key");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&first.to_string()),
        "the problem names the task that holds the key: {problem}"
    );

    // A header key of visible ASCII only (HTTP lets a tab through; the API does not).
    let r = w
        .client()
        .request(Method::POST, "/api/v1/tasks")
        .header("Idempotency-Key", "a\tb")
        .json(&json!({"tool": "demo.echo", "arguments": {"message": "tab"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["errors"][0]["pointer"], "/idempotency_key");

    // Header and body must agree.
    let r = w
        .client()
        .request(Method::POST, "/api/v1/tasks")
        .header("Idempotency-Key", "other")
        .json(&echo("one", "k"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["errors"][0]["pointer"], "/idempotency_key");

    w.wait_recorded(first, TaskStatus::Succeeded).await;
    assert_eq!(tasks_in_history(&w, 1).await, 1);
    w.shutdown().await;
}

#[tokio::test]
async fn two_gateways_racing_on_one_key_create_one_task() {
    let w = Wharf::start().await;
    let (other, other_gateway) = w.another_gateway().await;
    let apis = [w.api.clone(), other];
    let answers = futures::future::join_all((0..20).map(|i| {
        let (http, api) = (w.client().clone(), apis[i % 2].clone());
        async move {
            let r = http
                .at(&api)
                .unwrap()
                .request(Method::POST, "/api/v1/tasks")
                .json(&echo("race", "the-key"))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    }))
    .await;
    let created = answers.iter().filter(|(s, _)| *s == 202).count();
    assert_eq!(
        created, 1,
        "exactly one request created the task: {answers:?}"
    );
    let id = id_of(&answers[0].1);
    for (status, answer) in &answers {
        assert!([200, 202].contains(status), "{status}: {answer}");
        assert_eq!(id_of(answer), id, "every answer names the same task");
    }
    w.wait_recorded(id, TaskStatus::Succeeded).await;
    assert_eq!(tasks_in_history(&w, 1).await, 1);
    other_gateway.stop().await;
    w.shutdown().await;
}

#[tokio::test]
async fn a_key_names_a_new_task_once_its_window_has_passed() {
    let w = Wharf::start_with(Options {
        topology: wharf_bus::Topology {
            idempotency_window: Duration::from_secs(2),
            ack_wait: Duration::from_secs(10),
            ..wharf_bus::Topology::default()
        },
        ..Options::default()
    })
    .await;
    w.wait_for_tool("demo.echo").await;
    let first = w.submit_ok(echo("one", "short-lived")).await;
    // Within the window the key answers with the first task; after it, a new task is made.
    let second = eventually("the key to expire", Duration::from_secs(20), || async {
        let (status, answer) = w.submit(echo("one", "short-lived")).await;
        match status.as_u16() {
            200 => {
                assert_eq!(id_of(&answer), first);
                None
            }
            202 => Some(id_of(&answer)),
            other => panic!("{other}: {answer}"),
        }
    })
    .await;
    assert_ne!(second, first);
    w.shutdown().await;
}

#[tokio::test]
async fn batches_and_websocket_submissions_honour_keys() {
    let w = Wharf::start().await;
    let batch = json!({"tasks": [echo("a", "b-1"), echo("b", "b-2")]});
    let client = w.client();
    let post = |body: Value| {
        let req = client
            .request(Method::POST, "/api/v1/tasks/batch")
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, first) = post(batch.clone()).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = post(batch).await;
    assert_eq!(status, 202, "{again}");
    let ids =
        |v: &Value| -> Vec<Uuid> { v["tasks"].as_array().unwrap().iter().map(id_of).collect() };
    assert_eq!(
        ids(&again),
        ids(&first),
        "the repeat names the same tasks, in order"
    );

    let (status, problem) = post(json!({"tasks": [echo("a", "dup"), echo("b", "dup")]})).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/tasks/1/idempotency_key");

    // Over WebSocket: the repeat is accepted as the same task and its events follow.
    let mut ws = WsClient::connect(&w).await;
    ws.send(json!({"type": "task:submit", "task": echo("ws", "ws-1")}))
        .await;
    let accepted = ws.next().await;
    assert_eq!(accepted["type"], "task:accepted", "{accepted}");
    let id: Uuid = accepted["task_id"].as_str().unwrap().parse().unwrap();
    ws.until_terminal(id).await;
    ws.send(json!({"type": "task:submit", "task": echo("ws", "ws-1")}))
        .await;
    let again = ws.next().await;
    assert_eq!(again["type"], "task:accepted", "{again}");
    assert_eq!(again["task_id"], id.to_string());
    let events = ws.until_terminal(id).await;
    assert_eq!(events.last().unwrap()["type"], "task:complete");

    assert_eq!(tasks_in_history(&w, 3).await, 3);
    w.shutdown().await;
}

#[tokio::test]
async fn a_key_claimed_by_a_request_that_never_stored_its_task_is_taken_over() {
    let w = Wharf::start().await;
    // As if a gateway had claimed the key and died before publishing its task. Gateways claim
    // keys per tenant, as `<tenant>/<key>`.
    let phantom = Uuid::now_v7();
    w.bus
        .claim_idempotency_key("default/orphan", phantom)
        .await
        .unwrap();
    let (status, problem) = w.submit(echo("x", "orphan")).await;
    assert_eq!(
        status, 409,
        "a fresh claim counts as a request in flight: {problem}"
    );
    assert_eq!(problem["code"], "idempotency_key_in_use");
    // Once the claim is old enough to be a failed request's, a submission takes the key over.
    let id = eventually(
        "the key to be taken over",
        Duration::from_secs(30),
        || async {
            let (status, answer) = w.submit(echo("x", "orphan")).await;
            (status == 202).then(|| id_of(&answer))
        },
    )
    .await;
    // Taken over under the same id: had the first request's publish still landed, JetStream
    // would have merged the two.
    assert_eq!(id, phantom);
    let (status, again) = w.submit(echo("x", "orphan")).await;
    assert_eq!(status, 200);
    assert_eq!(id_of(&again), id);
    w.wait_recorded(id, TaskStatus::Succeeded).await;
    w.shutdown().await;
}

#[tokio::test]
async fn a_refused_batch_gives_its_keys_back() {
    let w = Wharf::start().await;
    w.submit_ok(echo("original", "held")).await;
    let post = |body: Value| {
        let req = w
            .client()
            .request(Method::POST, "/api/v1/tasks/batch")
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // The second task reuses a key for another task: the whole batch is refused...
    let (status, problem) =
        post(json!({"tasks": [echo("a", "fresh-1"), echo("changed", "held")]})).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "idempotency_key_reused");
    assert_eq!(problem["errors"][0]["pointer"], "/tasks/1/idempotency_key");
    // ...and the key its first task claimed is free again at once.
    let (status, answer) = post(json!({"tasks": [echo("a", "fresh-1")]})).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(tasks_in_history(&w, 2).await, 2);
    w.shutdown().await;
}
