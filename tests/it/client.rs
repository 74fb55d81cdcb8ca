//! The Rust SDK (`wharf-client`) against a running gateway: each typed call reaches its route
//! and reads its answer, and a refusal comes back as the gateway's problem.

use std::time::Duration;

use uuid::Uuid;
use wharf_client::{Page, TaskQuery};
use wharf_contract::{
    AgentSpec, CallTool, CreateKey, CreateSession, ErrorCode, SubmitTask, TaskStatus, UpdateConfig,
};
use wharf_testkit::Wharf;

fn echo(message: &str) -> SubmitTask {
    SubmitTask::new("demo.echo").argument("message", message)
}

#[tokio::test]
async fn tasks_through_the_sdk() {
    let w = Wharf::start().await;
    let c = w.client();
    let accepted = c.submit(&echo("hi")).await.unwrap();
    assert!(!accepted.existing);
    let done = c.wait(accepted.task.id).await.unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded, "{done:?}");

    // Its history, from the start, ending with its terminal event.
    let mut events = c.follow(done.id).await.unwrap();
    let mut kinds = Vec::new();
    while let Some(m) = futures::StreamExt::next(&mut events).await {
        kinds.push(m.unwrap().type_name());
    }
    assert_eq!(kinds.first(), Some(&"task:accepted"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"task:complete"), "{kinds:?}");

    // A repeat of an idempotency key is the task it names.
    let mut keyed = echo("once");
    keyed.idempotency_key = Some("sdk-1".into());
    let first = c.submit(&keyed).await.unwrap();
    let again = c.submit(&keyed).await.unwrap();
    assert!(again.existing);
    assert_eq!(again.task.id, first.task.id);

    let batch = c.submit_batch(vec![echo("a"), echo("b")]).await.unwrap();
    assert_eq!(batch.len(), 2);
    // Lists read the recorded history: page through two tasks once both are in it.
    w.wait_recorded(done.id, TaskStatus::Succeeded).await;
    w.wait_recorded(first.task.id, TaskStatus::Succeeded).await;
    let one = TaskQuery {
        limit: Some(1),
        status: Some("succeeded".into()),
        ..TaskQuery::default()
    };
    let page = c.tasks(&one).await.unwrap();
    assert_eq!(page.tasks.len(), 1);
    // A page holds summaries; `view=full` adds what the task was called with and returned.
    let summary = &page.tasks[0];
    assert!(
        summary.arguments.is_empty() && summary.result.is_none(),
        "{summary:?}"
    );
    let full = TaskQuery {
        view: Some("full".into()),
        ..one.clone()
    };
    let full = c.tasks(&full).await.unwrap();
    assert_eq!(full.tasks[0].id, summary.id);
    assert_eq!(full.tasks[0].status, summary.status);
    assert!(!full.tasks[0].arguments.is_empty(), "{:?}", full.tasks[0]);
    assert!(full.tasks[0].result.is_some(), "{:?}", full.tasks[0]);
    let next = TaskQuery {
        cursor: Some(page.next_cursor.expect("a second page")),
        ..one
    };
    let second = c.tasks(&next).await.unwrap();
    assert_eq!(second.tasks.len(), 1);
    assert_ne!(second.tasks[0].id, page.tasks[0].id);

    let sleeping = c
        .submit(&SubmitTask::new("demo.sleep").argument("seconds", 30))
        .await
        .unwrap();
    c.cancel(sleeping.task.id).await.unwrap();
    let cancelled = c.wait(sleeping.task.id).await.unwrap();
    assert_eq!(cancelled.status, TaskStatus::Cancelled);

    let call = CallTool {
        arguments: echo("called").arguments,
        ..CallTool::default()
    };
    let called = c
        .call_tool("demo.echo", &call, Some(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(called.finished, "{:?}", called.task);
    assert_eq!(called.task.status, TaskStatus::Succeeded);
    assert!(
        c.tools()
            .await
            .unwrap()
            .tools
            .iter()
            .any(|t| t.name == "demo.echo")
    );
    assert!(
        c.dead_letters(&Page::default())
            .await
            .unwrap()
            .dead_letters
            .is_empty()
    );

    // Refusals are the gateway's problems.
    let e = c.task(Uuid::now_v7()).await.unwrap_err();
    assert_eq!(
        (e.code(), e.status()),
        (Some(ErrorCode::TaskNotFound), Some(404))
    );
    let e = c.submit(&SubmitTask::new("demo.nope")).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UnknownTool), "{e}");
    assert_eq!(e.problem().unwrap().errors[0].pointer, "/tool");
    w.shutdown().await;
}

#[tokio::test]
async fn resources_and_operations_through_the_sdk() {
    let w = Wharf::start().await;
    let c = w.client();

    let session = c
        .create_session(&CreateSession {
            name: Some("sdk".into()),
            ..CreateSession::default()
        })
        .await
        .unwrap();
    assert_eq!(
        c.session(session.id).await.unwrap().name.as_deref(),
        Some("sdk")
    );
    let live = c.sessions(&Page::default()).await.unwrap();
    assert!(live.sessions.iter().any(|s| s.id == session.id));
    let deleted = c.delete_session(session.id).await.unwrap();
    assert!(deleted.session.deleted_at.is_some());

    let spec = AgentSpec {
        name: Some("sdk-agent".into()),
        allowed_tools: vec!["demo.*".into()],
        ..AgentSpec::default()
    };
    let agent = c.create_agent(&spec).await.unwrap();
    assert_eq!(agent.revision, 1);
    let spec = AgentSpec {
        description: Some("changed".into()),
        ..spec
    };
    let updated = c.update_agent("sdk-agent", &spec).await.unwrap();
    assert_eq!(updated.revision, 2);
    assert_eq!(
        c.agent("sdk-agent").await.unwrap().description.as_deref(),
        Some("changed")
    );
    assert_eq!(c.agents().await.unwrap().agents.len(), 1);

    let created = c
        .create_key(&CreateKey {
            name: "sdk-key".into(),
            role: "reader".into(),
            tenant: None,
            expires_in_secs: None,
        })
        .await
        .unwrap();
    let id = created.key.id;
    assert_eq!(c.key(id).await.unwrap().name, "sdk-key");
    assert!(c.keys(None).await.unwrap().keys.iter().any(|k| k.id == id));
    // The new key is a client of its own: a reader may read, not submit.
    let reader = c.with_credential(&created.secret).unwrap();
    assert_eq!(reader.whoami().await.unwrap().roles, ["reader"]);
    let e = reader.submit(&echo("no")).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Forbidden), "{e}");
    assert!(c.revoke_key(id).await.unwrap().revoked_at.is_some());
    let e = reader.whoami().await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");

    let config = c.config().await.unwrap();
    let changed = c
        .update_config(&UpdateConfig {
            revision: config.revision,
            config: wharf_contract::RuntimeConfig {
                session_ttl_secs: 3600,
                ..config.config
            },
        })
        .await
        .unwrap();
    assert_eq!(changed.revision, config.revision + 1);
    assert_eq!(
        c.config_revisions(Some(1)).await.unwrap().revisions.len(),
        1
    );

    assert!(c.ready().await.unwrap());
    assert!(!c.workers().await.unwrap().workers.is_empty());
    assert!(
        c.queues()
            .await
            .unwrap()
            .queues
            .iter()
            .any(|q| q.name == "default")
    );
    assert!(c.metrics().await.unwrap().contains("wharf_"));
    assert!(
        !c.audit(&Default::default())
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    w.shutdown().await;
}
