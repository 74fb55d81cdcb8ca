//! The recorder's SQL merge gives the same rows as folding the events in order, whatever the
//! order and batching it receives them in (invariant 6), on Postgres and on SQLite.

use chrono::SubsecRound;
use rand::seq::{IndexedRandom, SliceRandom};
use serde_json::json;
use uuid::Uuid;
use wharf_contract::{
    EventKind, Priority, Progress, Task, TaskError, TaskErrorCode, TaskEvent, TaskState, TaskStatus,
};
use wharf_store::Store;
use wharf_testkit::{Wharf, eventually, fresh_database};

#[tokio::test]
async fn any_order_and_batching_of_events_gives_the_same_rows() {
    let w = Wharf::start().await;
    // A few real histories: progress, a failure, a cancellation with its request.
    let session = w.session("s").await;
    let sleep = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 0.4, "steps": 4}, "session_id": session}))
        .await;
    let fail = w
        .submit_ok(json!({"tool": "demo.fail", "arguments": {}}))
        .await;
    let cancelled = w
        .submit_ok(
            json!({"tool": "demo.sleep", "arguments": {"seconds": 60}, "metadata": {"m": 1}}),
        )
        .await;
    w.wait_recorded(cancelled, TaskStatus::Running).await;
    w.cancel(cancelled).await;
    w.wait_recorded(sleep, TaskStatus::Succeeded).await;
    w.wait_recorded(fail, TaskStatus::Failed).await;
    w.wait_recorded(cancelled, TaskStatus::Cancelled).await;
    // The cancel request's own event can land after the terminal one.
    eventually(
        "the cancel request recorded",
        std::time::Duration::from_secs(20),
        || async {
            w.store
                .task(cancelled)
                .await
                .unwrap()?
                .cancel_requested_at
                .map(|_| ())
        },
    )
    .await;

    let mut events = Vec::new();
    for id in [sleep, fail, cancelled] {
        events.extend(w.store.events(id).await.unwrap());
    }
    // A duplicate of a late event, as a redelivery would bring.
    events.push(events[3].clone());

    // Postgres keeps microseconds (SQLite the nanoseconds): compared at microseconds.
    let micros = |mut v: wharf_contract::TaskView| {
        for t in [
            &mut v.created_at,
            &mut v.started_at,
            &mut v.finished_at,
            &mut v.cancel_requested_at,
            &mut v.updated_at,
        ] {
            *t = t.map(|t| t.trunc_subsecs(6));
        }
        v
    };
    let expected =
        |id| micros(TaskState::fold(id, events.iter().filter(|(_, e)| e.task_id == id)).view);

    // The same rule on both databases the store speaks: Postgres (its `unnest` upsert) and
    // SQLite (`wharf dev`, multi-row inserts).
    let sqlite = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    for round in 0..8 {
        let url = if round % 2 == 0 {
            fresh_database().await
        } else {
            format!("sqlite://{}/r{round}.db?mode=rwc", sqlite.path().display())
        };
        let store = Store::connect(&url).await.unwrap();
        let round = round / 2;
        let mut shuffled = events.clone();
        match round {
            0 => shuffled.reverse(),
            _ => shuffled.shuffle(&mut rng),
        }
        // Batches of 1, 2, 3, 4 events.
        for batch in shuffled.chunks(round + 1) {
            store.record(batch).await.unwrap();
        }
        for id in [sleep, fail, cancelled] {
            let got = micros(store.task(id).await.unwrap().unwrap());
            assert_eq!(got, expected(id), "round {round}, task {id}, {url}");
            assert_eq!(
                got,
                w.store.task(id).await.unwrap().unwrap(),
                "round {round}, {url}"
            );
        }
    }
    w.shutdown().await;
}

/// The store's SQL merge against `TaskState::fold` on generated histories, without a platform:
/// every shape of history the workers write (retries, progress, cancel requests, a second
/// terminal event from a fenced-off worker), interleaved into one stream,
/// then recorded in random orders and batch sizes, with redeliveries, into Postgres and SQLite.
#[tokio::test]
async fn generated_histories_merge_in_sql_as_in_memory() {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    let seed: u64 = rand::rng().random();
    let mut rng = StdRng::seed_from_u64(seed);
    let histories: Vec<Vec<TaskEvent>> = (0..60).map(|_| history(&mut rng)).collect();
    // One stream: the next sequence goes to a random task's next event.
    let mut cursors = vec![0usize; histories.len()];
    let mut stream: Vec<(u64, TaskEvent)> = Vec::new();
    let mut base = chrono::Utc::now().trunc_subsecs(6);
    while let Some(i) = {
        let left: Vec<usize> = (0..histories.len())
            .filter(|&i| cursors[i] < histories[i].len())
            .collect();
        left.get(rng.random_range(0..left.len().max(1))).copied()
    } {
        let mut event = histories[i][cursors[i]].clone();
        cursors[i] += 1;
        // Times a microsecond apart: what Postgres keeps, so both databases compare exactly.
        base += chrono::Duration::microseconds(rng.random_range(1..5_000));
        event.at = base;
        if let EventKind::Submitted { task } = &mut event.kind {
            task.submitted_at = base;
        }
        stream.push((stream.len() as u64 + 1, event));
    }
    let ids: Vec<Uuid> = histories.iter().map(|h| h[0].task_id).collect();
    let expected = |id: Uuid| TaskState::fold(id, stream.iter().filter(|(_, e)| e.task_id == id));

    let sqlite = tempfile::tempdir().unwrap();
    for round in 0..6 {
        let url = if round % 2 == 0 {
            fresh_database().await
        } else {
            format!("sqlite://{}/g{round}.db?mode=rwc", sqlite.path().display())
        };
        let store = Store::connect(&url).await.unwrap();
        let mut shuffled = stream.clone();
        shuffled.shuffle(&mut rng);
        // Redeliveries: a tenth of the events again, later.
        let again: Vec<_> = shuffled
            .choose_multiple(&mut rng, stream.len() / 10)
            .cloned()
            .collect();
        shuffled.extend(again);
        let mut rest = &shuffled[..];
        while !rest.is_empty() {
            let n = rng.random_range(1..=rest.len().min(300));
            store.record(&rest[..n]).await.unwrap();
            rest = &rest[n..];
        }
        for &id in &ids {
            let got = store.task(id).await.unwrap().unwrap();
            let want = expected(id).view;
            assert_eq!(got, want, "seed {seed}, round {round}, task {id}, {url}");
        }
    }
}

/// One task's events in the order a platform writes them (times and sequences come later).
fn history(rng: &mut impl rand::Rng) -> Vec<TaskEvent> {
    let id = Uuid::now_v7();
    let mut metadata = serde_json::Map::new();
    metadata.insert("n".into(), json!(rng.random::<u32>()));
    metadata.insert("k".into(), json!("v"));
    let task = Task {
        trace_id: None,
        v: wharf_contract::task::TASK_VERSION,
        id,
        tool: "demo.sleep".into(),
        arguments: json!({"seconds": rng.random_range(0..10)})
            .as_object()
            .unwrap()
            .clone(),
        queue: ["default", "gpu", "bulk"][rng.random_range(0..3)].to_owned(),
        timeout_secs: rng.random_bool(0.5).then_some(30),
        max_attempts: rng.random_range(1..=4),
        idempotency_key: rng.random_bool(0.3).then(|| format!("key-{id}")),
        session_id: rng.random_bool(0.3).then(|| "session-1".to_owned()),
        metadata,
        submitted_at: chrono::Utc::now(),
        run_at: None,
        retry: None,
        priority: [Priority::High, Priority::Normal, Priority::Low][rng.random_range(0..3)],
        tenant: ["default", "acme"][rng.random_range(0..2)].to_owned(),
        agent: rng.random_bool(0.3).then(|| "agent-1".to_owned()),
        callback: None,
    };
    let started = |attempt: u32| {
        TaskEvent::new(
            id,
            attempt,
            EventKind::Started {
                worker: format!("w{attempt}"),
                tool: "demo.sleep".into(),
                queue: task.queue.clone(),
            },
        )
    };
    let mut events = vec![TaskEvent::new(
        id,
        0,
        EventKind::Submitted {
            task: Box::new(task.clone()),
        },
    )];
    if rng.random_bool(0.15) {
        // Cancelled while queued.
        events.push(TaskEvent::new(id, 0, cancel_requested()));
        events.push(TaskEvent::new(id, 0, cancelled()));
        return events;
    }
    let attempts = rng.random_range(1..=task.max_attempts);
    for attempt in 1..=attempts {
        events.push(started(attempt));
        for step in 0..rng.random_range(0..4) {
            let progress = Progress {
                progress: f64::from(step),
                total: Some(4.0),
                message: rng.random_bool(0.5).then(|| format!("step {step}")),
            };
            events.push(TaskEvent::new(id, attempt, EventKind::Progress(progress)));
        }
        if attempt < attempts {
            let error = TaskError::new(TaskErrorCode::McpUnavailable, "connection reset");
            events.push(TaskEvent::new(
                id,
                attempt,
                EventKind::AttemptFailed {
                    error,
                    retry_in_ms: 1000,
                },
            ));
        }
    }
    if rng.random_bool(0.3) {
        events.push(TaskEvent::new(id, attempts, cancel_requested()));
    }
    let outcomes = [
        EventKind::Succeeded {
            result: json!({"slept": true}),
        },
        EventKind::Failed {
            error: TaskError::new(TaskErrorCode::ToolError, "failed"),
        },
        cancelled(),
    ];
    events.push(TaskEvent::new(
        id,
        attempts,
        outcomes[rng.random_range(0..3)].clone(),
    ));
    if rng.random_bool(0.1) {
        // A worker fenced off too late publishes another outcome: the first one must stay.
        events.push(TaskEvent::new(id, attempts, outcomes[0].clone()));
    }
    events
}

fn cancel_requested() -> EventKind {
    EventKind::CancelRequested {
        reason: Some("asked".into()),
    }
}

fn cancelled() -> EventKind {
    EventKind::Cancelled { reason: None }
}

/// The callback deliveries a batch records with its events, on both databases: written once
/// however often the batch is applied (a redelivered batch), and a NUL in a body, which
/// Postgres cannot store, kept as U+FFFD (as the events are) instead of failing the batch and
/// with it the events' projection.
#[tokio::test]
async fn a_batch_records_its_callback_deliveries_once_on_both_databases() {
    use rand::SeedableRng;
    use wharf_contract::DeliveryStatus;
    use wharf_contract::callbacks::delivery_id;
    use wharf_store::NewDelivery;

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let sqlite = tempfile::tempdir().unwrap();
    let urls = [
        fresh_database().await,
        format!("sqlite://{}/d.db?mode=rwc", sqlite.path().display()),
    ];
    for url in urls {
        let store = Store::connect(&url).await.unwrap();
        let events: Vec<(u64, TaskEvent)> = history(&mut rng)
            .into_iter()
            .enumerate()
            .map(|(i, e)| (i as u64 + 1, e))
            .collect();
        let (seq, last) = events.last().unwrap();
        let id = last.task_id;
        let delivery = NewDelivery {
            id: delivery_id(id, *seq),
            task_id: id,
            tenant: "default".into(),
            seq: *seq,
            event: last.kind_name().into(),
            url: "https://hooks.example.com/wharf".into(),
            cloudevents: false,
            body: json!({"type": "task.end", "data": {"text": "a\u{0}b"}}),
            retry_until: chrono::Utc::now() + chrono::Duration::hours(1),
        };
        for _ in 0..2 {
            store
                .record_batch(&events, std::slice::from_ref(&delivery))
                .await
                .unwrap();
        }
        let logged = store.task_deliveries(id).await.unwrap();
        assert_eq!(logged.len(), 1, "{url}");
        assert_eq!(logged[0].status, DeliveryStatus::Pending, "{url}");
        let due = store
            .due_deliveries(chrono::Utc::now() + chrono::Duration::seconds(1), 10)
            .await
            .unwrap();
        assert_eq!(due.len(), 1, "{url}");
        assert_eq!(due[0].0.body["data"]["text"], "a\u{FFFD}b", "{url}");
        let want = TaskState::fold(id, events.iter()).view.status;
        assert_eq!(store.task(id).await.unwrap().unwrap().status, want, "{url}");
    }
}
