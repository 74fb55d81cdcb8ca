//! Several workers on one queue, listing, and a recorder restarted mid-stream.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;
use wharf_contract::{EventKind, TaskStatus};
use wharf_testkit::{Options, Wharf, eventually};

async fn submit_echoes(w: &Wharf, n: usize, tag: &str) -> Vec<Uuid> {
    submit_echoes_in(w, n, tag, None).await
}

/// `n` echo tasks, in `session` when given.
async fn submit_echoes_in(w: &Wharf, n: usize, tag: &str, session: Option<&str>) -> Vec<Uuid> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let mut task = json!({
            "tool": "demo.echo",
            "arguments": {"message": format!("{tag}-{i}")},
        });
        if let Some(s) = session {
            task["session_id"] = json!(s);
        }
        ids.push(w.submit_ok(task).await);
    }
    ids
}

async fn wait_all_succeeded(w: &Wharf, n: u64) {
    eventually(
        &format!("{n} tasks succeeded"),
        Duration::from_secs(60),
        || async {
            let counts = w.store.count_by_status().await.unwrap();
            (counts.get("succeeded").copied() == Some(n)).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn two_workers_share_a_queue_and_run_each_task_once() {
    let w = Wharf::start_with(Options {
        workers: 2,
        concurrency: 4,
        ..Options::default()
    })
    .await;
    w.wait_for_tool("demo.echo").await;
    let ids = submit_echoes(&w, 200, "share").await;
    wait_all_succeeded(&w, 200).await;

    let mut workers_seen = HashSet::new();
    for id in &ids {
        let events = w.store.events(*id).await.unwrap();
        let started: Vec<&EventKind> = events
            .iter()
            .map(|(_, e)| &e.kind)
            .filter(|k| matches!(k, EventKind::Started { .. }))
            .collect();
        assert_eq!(
            started.len(),
            1,
            "task {id} started {} times",
            started.len()
        );
        if let EventKind::Started { worker, .. } = started[0] {
            workers_seen.insert(worker.clone());
        }
        let terminal = events
            .iter()
            .filter(|(_, e)| e.terminal_status().is_some())
            .count();
        assert_eq!(terminal, 1, "task {id} has {terminal} terminal events");
        let view = w.store.task(*id).await.unwrap().unwrap();
        assert_eq!(view.attempts, 1);
    }
    assert_eq!(
        workers_seen.len(),
        2,
        "both workers took tasks: {workers_seen:?}"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn the_recorder_restarted_mid_stream_loses_and_doubles_nothing() {
    let mut w = Wharf::start().await;
    let first = submit_echoes(&w, 60, "before").await;
    // Stop the recorder while events are still arriving, keep submitting, start a new one.
    w.recorder.take().unwrap().stop().await;
    let second = submit_echoes(&w, 60, "during").await;
    w.start_recorder();
    wait_all_succeeded(&w, 120).await;

    let mut per_task: HashMap<Uuid, Vec<String>> = HashMap::new();
    for id in first.iter().chain(&second) {
        per_task.insert(*id, w.event_kinds(*id).await);
    }
    for (id, kinds) in &per_task {
        assert_eq!(kinds, &["submitted", "started", "succeeded"], "task {id}");
    }
    let counts = w.store.count_by_status().await.unwrap();
    assert_eq!(counts.values().sum::<u64>(), 120, "{counts:?}");
    w.shutdown().await;
}

#[tokio::test]
async fn listing_filters_and_paginates_newest_first() {
    let w = Wharf::start().await;
    let a = submit_echoes(&w, 5, "list-a").await;
    let session_b = w.session("list-b").await;
    let b = submit_echoes_in(&w, 3, "list-b", Some(&session_b)).await;
    let fail = w
        .submit_ok(json!({"tool": "demo.fail", "arguments": {}, "session_id": session_b}))
        .await;
    wait_all_succeeded(&w, 8).await;
    w.wait_recorded(fail, TaskStatus::Failed).await;

    let get = |q: String| {
        let w = &w;
        async move {
            let r = w.get(&format!("/api/v1/tasks?{q}")).await;
            assert_eq!(r.status(), 200, "{q}");
            r.json::<Value>().await.unwrap()
        }
    };
    let ids = |page: &Value| -> Vec<Uuid> {
        page["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().parse().unwrap())
            .collect()
    };

    // Pages of 2 walk every task once, newest first.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("limit=2&cursor={c}"),
            None => "limit=2".to_owned(),
        };
        let page = get(q).await;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut expected: Vec<Uuid> = a.iter().chain(&b).copied().chain([fail]).collect();
    expected.reverse();
    assert_eq!(seen, expected);

    // Nine tasks in pages of three: the third page is full and is the last.
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("limit=3&cursor={c}"),
            None => "limit=3".to_owned(),
        };
        let page = get(q).await;
        pages.push(ids(&page).len());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, [3, 3, 3]);

    let in_b = get(format!("session_id={session_b}")).await;
    assert_eq!(ids(&in_b).len(), 4);
    let failed = get("status=failed".into()).await;
    assert_eq!(ids(&failed), vec![fail]);
    let other_queue = get("queue=other".into()).await;
    assert!(ids(&other_queue).is_empty());
    let by_tool = get("tool=demo.fail".into()).await;
    assert_eq!(ids(&by_tool), vec![fail]);

    // A time range is a range of ids (UUIDv7): b's first task was submitted after a's last.
    let ms = |id: &Uuid| {
        i64::try_from(id.get_timestamp().unwrap().to_unix().0).unwrap() * 1000
            + i64::from(id.get_timestamp().unwrap().to_unix().1 / 1_000_000)
    };
    let split = chrono::DateTime::from_timestamp_millis(ms(&b[0]))
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let since = ids(&get(format!("created_after={split}&limit=50")).await);
    let before = ids(&get(format!("created_before={split}&limit=50")).await);
    // Tasks of b's first millisecond are at or after it; a's may share that millisecond.
    assert!(since.ends_with(&[b[0]]), "{since:?}");
    assert!(since.iter().all(|id| ms(id) >= ms(&b[0])), "{since:?}");
    assert!(before.iter().all(|id| ms(id) < ms(&b[0])), "{before:?}");
    assert_eq!(since.len() + before.len(), 9, "{since:?} {before:?}");
    // With the range's end as a bound and a cursor, the older of the two wins.
    let paged = get(format!("created_before={split}&limit=2")).await;
    let cursor = paged["next_cursor"].as_str().unwrap_or_default().to_owned();
    if !cursor.is_empty() {
        let rest = ids(&get(format!("created_before={split}&cursor={cursor}&limit=50")).await);
        assert_eq!(rest.len() + 2, before.len());
    }
    let r = w.get("/api/v1/tasks?created_after=yesterday").await;
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.unwrap();
    assert!(
        problem.to_string().contains("created_after"),
        "the problem names the parameter: {problem}"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn a_backlog_in_one_queue_does_not_hold_up_another() {
    let w = Wharf::start_with(Options {
        concurrency: 1,
        queues: vec!["default".into(), "slow".into()],
        ..Options::default()
    })
    .await;
    w.wait_for_tool("demo.sleep").await;
    let mut slow = Vec::new();
    for _ in 0..3 {
        slow.push(
            w.submit_ok(
                json!({"tool": "demo.sleep", "arguments": {"seconds": 60}, "queue": "slow"}),
            )
            .await,
        );
    }
    w.wait_recorded(slow[0], TaskStatus::Running).await;
    let quick = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "not stuck"}}))
        .await;
    let done = w.wait_recorded(quick, TaskStatus::Succeeded).await;
    assert_eq!(done.queue, "default");
    // The slow queue is still busy with its first task, the others wait their turn.
    for id in &slow[1..] {
        assert_eq!(
            w.store.task(*id).await.unwrap().unwrap().status,
            TaskStatus::Queued
        );
    }
    for id in &slow {
        w.cancel(*id).await;
    }
    w.shutdown().await;
}
