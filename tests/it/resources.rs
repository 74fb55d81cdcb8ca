//! Sessions, agents, and calling a tool and waiting for it.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use wharf_contract::TaskStatus;
use wharf_testkit::{Options, Wharf, eventually, send};

#[tokio::test]
async fn a_session_groups_tasks_and_deleting_it_cancels_the_unfinished_ones() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.sleep").await;
    let (status, session) = send(
        w.client()
            .request(Method::POST, "/api/v1/sessions")
            .json(&json!({"name": "chat-1", "metadata": {"user": "ada"}})),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let id = session["id"].as_str().unwrap().to_owned();
    let created: chrono::DateTime<chrono::Utc> =
        session["created_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> =
        session["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        (expires - created).num_hours(),
        24,
        "the default life is a day"
    );
    assert_eq!(session["metadata"]["user"], "ada");

    // Two tasks in it (one finishes, one runs on), one outside it.
    let quick = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "hi"}, "session_id": id}))
        .await;
    let long = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 30, "steps": 30}, "session_id": id}))
        .await;
    let outside = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 30, "steps": 30}}))
        .await;
    w.wait_recorded(quick, TaskStatus::Succeeded).await;
    eventually(
        "the long task recorded running",
        Duration::from_secs(10),
        || async {
            let t = w.store.task(long).await.unwrap()?;
            (t.status == TaskStatus::Running).then_some(())
        },
    )
    .await;
    let (_, list) = send(w.client().request(Method::GET, "/api/v1/sessions")).await;
    assert_eq!(list["sessions"][0]["id"], id.as_str());

    let (status, deleted) = send(
        w.client()
            .request(Method::DELETE, &format!("/api/v1/sessions/{id}")),
    )
    .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(
        deleted["cancelled"],
        json!([long]),
        "only the unfinished task of the session"
    );
    assert!(deleted["session"]["deleted_at"].is_string());
    w.wait_recorded(long, TaskStatus::Cancelled).await;
    // Other tasks run on (recorded running, once the recorder has seen them start).
    w.wait_recorded(outside, TaskStatus::Running).await;
    w.cancel(outside).await;

    // A deleted, unknown or malformed session takes no tasks; nothing is queued for them.
    let stored_before = w.stream_last_sequence(wharf_contract::TASKS_STREAM).await;
    for sid in [
        id.clone(),
        uuid::Uuid::now_v7().to_string(),
        "not-a-session".into(),
    ] {
        let (status, problem) = w
            .submit(json!({"tool": "demo.echo", "arguments": {"message": "x"}, "session_id": sid}))
            .await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["errors"][0]["pointer"], "/session_id");
    }
    assert_eq!(
        w.stream_last_sequence(wharf_contract::TASKS_STREAM).await,
        stored_before
    );
    let (_, list) = send(w.client().request(Method::GET, "/api/v1/sessions")).await;
    assert_eq!(
        list["sessions"],
        json!([]),
        "a deleted session is not listed"
    );
    let (status, _) = send(
        w.client()
            .request(Method::GET, &format!("/api/v1/sessions/{id}")),
    )
    .await;
    assert_eq!(status, 200, "but can still be read");

    // Nor does an expired one.
    let now = chrono::Utc::now();
    let expired = wharf_contract::Session {
        id: uuid::Uuid::now_v7(),
        tenant: "default".into(),
        name: None,
        created_at: now - chrono::Duration::hours(25),
        expires_at: now - chrono::Duration::hours(1),
        created_by: "test".into(),
        metadata: Default::default(),
        deleted_at: None,
    };
    w.store.create_session(&expired).await.unwrap();
    let (status, problem) = w
        .submit(
            json!({"tool": "demo.echo", "arguments": {"message": "x"}, "session_id": expired.id}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, problem) = send(
        w.client()
            .request(Method::POST, "/api/v1/sessions")
            .json(&json!({"ttl_secs": 5})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["pointer"], "/ttl_secs");
}

#[tokio::test]
async fn sessions_and_agents_are_the_tenants_own() {
    let w = Wharf::start_with(Options::closed()).await;
    let acme = w.client_for("acme", "tenant-admin").await;
    let globex = w.client_for("globex", "tenant-admin").await;
    wharf_testkit::wait_for_tool_at(&acme, "demo.echo").await;
    let (_, session) = send(
        acme.request(Method::POST, "/api/v1/sessions")
            .json(&json!({})),
    )
    .await;
    let sid = session["id"].as_str().unwrap();
    let (status, _) = send(
        acme.request(Method::POST, "/api/v1/agents")
            .json(&json!({"name": "helper", "allowed_tools": ["demo.*"]})),
    )
    .await;
    assert_eq!(status, 201);
    for (method, path) in [
        (reqwest::Method::GET, format!("/api/v1/sessions/{sid}")),
        (reqwest::Method::DELETE, format!("/api/v1/sessions/{sid}")),
        (reqwest::Method::GET, "/api/v1/agents/helper".to_owned()),
    ] {
        let (status, _) = send(globex.request(method.clone(), &path)).await;
        assert_eq!(status, 404, "globex {method} {path}");
    }
    let (_, list) = send(globex.request(Method::GET, "/api/v1/sessions")).await;
    assert_eq!(list["sessions"], json!([]));
    let (_, list) = send(globex.request(Method::GET, "/api/v1/agents")).await;
    assert_eq!(list["agents"], json!([]));
    // Nor can globex submit into acme's session or with acme's agent.
    for (field, task) in [
        (
            "/session_id",
            json!({"tool": "demo.echo", "arguments": {"message": "x"}, "session_id": sid}),
        ),
        (
            "/agent",
            json!({"tool": "demo.echo", "arguments": {"message": "x"}, "agent": "helper"}),
        ),
    ] {
        let (status, problem) =
            send(globex.request(Method::POST, "/api/v1/tasks").json(&task)).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["errors"][0]["pointer"], field);
    }
    // A globex agent of the same name is globex's own.
    let (status, _) = send(
        globex
            .request(Method::POST, "/api/v1/agents")
            .json(&json!({"name": "helper", "allowed_tools": ["*"]})),
    )
    .await;
    assert_eq!(status, 201);
    let (_, mine) = send(acme.request(Method::GET, "/api/v1/agents/helper")).await;
    assert_eq!(mine["allowed_tools"], json!(["demo.*"]));
}

#[tokio::test]
async fn an_agent_limits_the_tools_and_gives_its_defaults() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.sleep").await;
    let spec = json!({
        "name": "summariser",
        "description": "echoes only",
        "allowed_tools": ["demo.echo", "demo.hash"],
        "default_queue": "default",
        "priority": "high",
        "max_attempts": 7,
        "timeout_secs": 12,
    });
    let (status, agent) = send(
        w.client()
            .request(Method::POST, "/api/v1/agents")
            .json(&spec),
    )
    .await;
    assert_eq!(status, 201, "{agent}");
    assert_eq!(agent["revision"], 1);
    let (status, problem) = send(
        w.client()
            .request(Method::POST, "/api/v1/agents")
            .json(&spec),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(problem["code"], "agent_exists");

    // Its defaults, unless the task says otherwise.
    let task = w
        .submit_ok(
            json!({"tool": "demo.echo", "arguments": {"message": "a"}, "agent": "summariser"}),
        )
        .await;
    let view = w.get_task(task).await;
    assert_eq!(view.agent.as_deref(), Some("summariser"));
    assert_eq!(view.max_attempts, 7);
    assert_eq!(view.timeout_secs, Some(12));
    assert_eq!(view.priority, wharf_contract::Priority::High);
    let own = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "b"}, "agent": "summariser", "max_attempts": 2}))
        .await;
    assert_eq!(w.get_task(own).await.max_attempts, 2);
    // The list reads the database: both tasks must be recorded first.
    w.wait_recorded(task, TaskStatus::Succeeded).await;
    w.wait_recorded(own, TaskStatus::Succeeded).await;
    let (_, listed) = send(
        w.client()
            .request(Method::GET, "/api/v1/tasks?agent=summariser"),
    )
    .await;
    assert_eq!(listed["tasks"].as_array().unwrap().len(), 2);

    // Only its tools: refused before anything is queued.
    let before = w.stream_last_sequence(wharf_contract::TASKS_STREAM).await;
    let (status, problem) = w
        .submit(json!({"tool": "demo.sleep", "arguments": {"seconds": 1}, "agent": "summariser"}))
        .await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(problem["code"], "tool_not_allowed");
    assert_eq!(problem["errors"][0]["pointer"], "/tool");
    assert_eq!(
        w.stream_last_sequence(wharf_contract::TASKS_STREAM).await,
        before
    );

    // An update is a new revision, and applies to the next task.
    let (status, updated) = send(
        w.client()
            .request(Method::PUT, "/api/v1/agents/summariser")
            .json(&json!({"allowed_tools": ["demo.*"]})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["revision"], 2);
    assert!(
        updated.get("max_attempts").is_none(),
        "a PUT replaces the whole spec"
    );
    w.submit_ok(
        json!({"tool": "demo.sleep", "arguments": {"seconds": 0.1}, "agent": "summariser"}),
    )
    .await;
    let (status, problem) = send(
        w.client()
            .request(Method::PUT, "/api/v1/agents/nobody")
            .json(&json!({"allowed_tools": ["*"]})),
    )
    .await;
    assert_eq!(status, 404, "{problem}");
    let (status, problem) = send(
        w.client()
            .request(Method::POST, "/api/v1/agents")
            .json(&json!({"name": "bad", "allowed_tools": ["demo"]})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["pointer"], "/allowed_tools/0");
    // Patterns other than `server.*` and `*` are refused, not kept as names that match nothing.
    for pattern in [
        "demo.>",
        "demo.**",
        "demo.ec*",
        "demo.e?ho",
        "demo.[a]",
        "demo.a b",
    ] {
        let (status, problem) = send(
            w.client()
                .request(Method::POST, "/api/v1/agents")
                .json(&json!({"name": "bad", "allowed_tools": ["demo.echo", pattern]})),
        )
        .await;
        assert_eq!(status, 422, "{pattern}: {problem}");
        assert_eq!(
            problem["errors"][0]["pointer"], "/allowed_tools/1",
            "{pattern}"
        );
    }
    let (status, _) = send(w.client().request(Method::GET, "/api/v1/agents/bad")).await;
    assert_eq!(status, 404, "nothing was stored");
}

#[tokio::test]
async fn calling_a_tool_waits_for_its_result_or_answers_202() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.sleep").await;
    let (status, done) = send(
        w.client()
            .request(Method::POST, "/api/v1/tools/demo.echo/call")
            .json(&json!({"arguments": {"message": "waited"}})),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["result"]["content"][0]["text"], "waited");

    // A failing tool: 200 with the error, the task ended.
    let (status, failed) = send(
        w.client()
            .request(Method::POST, "/api/v1/tools/demo.fail/call")
            .json(&json!({"arguments": {}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(failed["status"], "failed");

    // Longer than the wait: 202 with the task, which runs on to its end.
    let started = std::time::Instant::now();
    let r = w
        .client()
        .request(Method::POST, "/api/v1/tools/demo.sleep/call?wait=500ms")
        .json(&json!({"arguments": {"seconds": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(2),
        "answered after the wait, before the task's end: {took:?}"
    );
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let running: Value = r.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/tasks/{}", running["id"].as_str().unwrap())
    );
    let id = running["id"].as_str().unwrap().parse().unwrap();
    w.wait_recorded(id, TaskStatus::Succeeded).await;

    for (path, pointer) in [
        ("/api/v1/tools/demo.nope/call", "/tool"),
        ("/api/v1/tools/demo.sleep/call?wait=2h", "/query/wait"),
    ] {
        let (status, problem) = send(
            w.client()
                .request(Method::POST, path)
                .json(&json!({"arguments": {"seconds": 1}})),
        )
        .await;
        assert!(status == 422 || status == 400, "{path}: {problem}");
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{path}");
    }

    // The catalog, filtered.
    let (_, demo) = send(
        w.client()
            .request(Method::GET, "/api/v1/tools?server=demo&q=SLEEP"),
    )
    .await;
    let names: Vec<&str> = demo["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["demo.sleep"]);
    let (_, none) = send(
        w.client()
            .request(Method::GET, "/api/v1/tools?server=elsewhere"),
    )
    .await;
    assert_eq!(none["tools"], json!([]));
}
