//! The history at scale (docs/operations.md): day partitions on Postgres made ahead and dropped
//! whole by the retention, the tasks that must stay moved aside, the history from before
//! partitioning kept as a partition of its own, and batch deletes on SQLite.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use serde_json::json;
use uuid::Uuid;
use wharf_contract::{EventKind, Priority, Task, TaskEvent, TaskStatus};
use wharf_migration::partitions::{day_start, day_suffix};
use wharf_store::{HistoryPolicy, Store};
use wharf_testkit::{empty_database, fresh_database};

const POLICY: HistoryPolicy = HistoryPolicy {
    retention_days: 30,
    days_ahead: 2,
};
/// The same with the retention off: partitions made, nothing removed.
const KEEP_ALL: HistoryPolicy = HistoryPolicy {
    retention_days: 0,
    ..POLICY
};

/// Events of one task submitted at `at` and, when `ended` is given, succeeded then.
fn task_events(at: DateTime<Utc>, ended: Option<DateTime<Utc>>) -> (Uuid, Vec<TaskEvent>) {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        at.timestamp() as u64,
        at.timestamp_subsec_nanos(),
    );
    let id = Uuid::new_v7(ts);
    let task = Task {
        trace_id: None,
        v: wharf_contract::task::TASK_VERSION,
        id,
        tool: "demo.echo".into(),
        arguments: serde_json::Map::new(),
        queue: "default".into(),
        timeout_secs: None,
        max_attempts: 1,
        idempotency_key: None,
        session_id: None,
        metadata: serde_json::Map::new(),
        submitted_at: at,
        run_at: None,
        retry: None,
        priority: Priority::Normal,
        tenant: "default".into(),
        agent: None,
        callback: None,
    };
    let event = |attempt, kind, when| TaskEvent {
        at: when,
        ..TaskEvent::new(id, attempt, kind)
    };
    let mut events = vec![
        event(
            0,
            EventKind::Submitted {
                task: Box::new(task),
            },
            at,
        ),
        event(
            1,
            EventKind::Started {
                worker: "w".into(),
                tool: "demo.echo".into(),
                queue: "default".into(),
            },
            at,
        ),
    ];
    if let Some(ended) = ended {
        events.push(event(
            1,
            EventKind::Succeeded {
                result: json!({"ok": true}),
            },
            ended,
        ));
    }
    (id, events)
}

/// Records each history under its own sequences, starting after `next`.
async fn record(store: &Store, next: &mut u64, histories: &[&[TaskEvent]]) {
    let mut batch = Vec::new();
    for events in histories {
        for e in *events {
            *next += 1;
            batch.push((*next, e.clone()));
        }
    }
    store.record(&batch).await.unwrap();
}

/// The partition of `table` that holds the row with this key, from Postgres itself.
async fn partition_of(store: &Store, table: &str, column: &str, id: Uuid) -> Option<String> {
    let row = store
        .connection()
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT tableoid::regclass::text AS p FROM {table} WHERE {column} = '{id}' LIMIT 1"
            ),
        ))
        .await
        .unwrap()?;
    Some(row.try_get::<String>("", "p").unwrap())
}

async fn partitions(store: &Store, table: &str) -> Vec<String> {
    let rows = store
        .connection()
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT c.relname::text AS p FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = '{table}'::regclass ORDER BY 1"
            ),
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.try_get::<String>("", "p").unwrap())
        .collect()
}

/// The names of the relations (tables, indexes) matching a `LIKE` pattern.
async fn relations(store: &Store, pattern: &str) -> Vec<String> {
    let rows = store
        .connection()
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT relname::text FROM pg_class WHERE relname LIKE '{pattern}' ORDER BY 1"),
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect()
}

async fn events_of(store: &Store, id: Uuid) -> usize {
    store.events(id).await.unwrap().len()
}

#[tokio::test]
async fn old_days_are_dropped_whole_and_what_must_stay_stays() {
    let store = Store::connect(&fresh_database().await).await.unwrap();
    let now = Utc::now();
    let past = now - Duration::days(40);
    // The recorder of 40 days ago made that day's partitions and two days ahead.
    let then = store.maintain_history(&POLICY, past).await.unwrap();
    let past_day = format!("tasks_{}", day_suffix(day_start(past.timestamp_millis())));
    assert_eq!(then.created.len(), 3, "{then:?}");
    assert_eq!(then.created[0], past_day);

    let mut seq = 0;
    let hour = Duration::hours(1);
    let (expired, a) = task_events(past, Some(past + hour));
    let (running, b) = task_events(past, None);
    let (recent, c) = task_events(past, Some(now - Duration::days(1)));
    let (expired_default, d) =
        task_events(past + Duration::days(5), Some(past + Duration::days(5)));
    let (today, e) = task_events(now, Some(now));
    record(&store, &mut seq, &[&a, &b, &c, &d, &e]).await;
    assert_eq!(
        partition_of(&store, "tasks", "id", expired)
            .await
            .as_deref(),
        Some(past_day.as_str())
    );
    // No partition covers five days later or today yet: the default holds them.
    for id in [expired_default, today] {
        assert_eq!(
            partition_of(&store, "tasks", "id", id).await.as_deref(),
            Some("tasks_default")
        );
    }

    let done = store.maintain_history(&POLICY, now).await.unwrap();
    let today_day = format!("tasks_{}", day_suffix(day_start(now.timestamp_millis())));
    assert!(done.ran);
    assert_eq!(done.created.len(), 3, "{done:?}");
    assert_eq!(done.created[0], today_day);
    assert_eq!(done.dropped.len(), 3, "the three old days: {done:?}");
    assert_eq!(
        done.kept, 2,
        "the running task and the recently finished one"
    );
    assert_eq!(done.deleted, 1, "the expired task in the default partition");

    // Gone: the expired tasks and their events.
    for id in [expired, expired_default] {
        assert!(store.task(id).await.unwrap().is_none());
        assert_eq!(events_of(&store, id).await, 0);
    }
    // Kept, with all their events, in the default partitions now.
    for (id, n) in [(running, 2), (recent, 3)] {
        assert!(store.task(id).await.unwrap().is_some());
        assert_eq!(events_of(&store, id).await, n);
        assert_eq!(
            partition_of(&store, "task_events", "task_id", id)
                .await
                .as_deref(),
            Some("task_events_default")
        );
    }
    // Today's task moved into today's new partition, events and all.
    assert_eq!(
        partition_of(&store, "tasks", "id", today).await.as_deref(),
        Some(today_day.as_str())
    );
    assert_eq!(events_of(&store, today).await, 3);
    assert!(!partitions(&store, "tasks").await.contains(&past_day));
    let left = relations(&store, &format!("%{}%", &past_day[6..])).await;
    assert!(
        left.is_empty(),
        "the dropped days' tables and indexes are gone, detached or not: {left:?}"
    );
    assert_eq!(
        partitions(&store, "tasks").await.len(),
        partitions(&store, "task_events").await.len(),
        "each day has a partition of both tables"
    );

    // The running task ends long ago as well (its clock says so): the next pass removes it;
    // the recently finished one stays until its own time comes.
    let late = [TaskEvent {
        at: now - Duration::days(31),
        ..TaskEvent::new(running, 1, EventKind::Succeeded { result: json!(1) })
    }];
    record(&store, &mut seq, &[&late]).await;
    assert_eq!(
        store.task(running).await.unwrap().unwrap().status,
        TaskStatus::Succeeded
    );
    let again = store.maintain_history(&POLICY, now).await.unwrap();
    assert_eq!(
        (again.created.len(), again.dropped.len(), again.deleted),
        (0, 0, 1)
    );
    assert!(store.task(running).await.unwrap().is_none());
    assert!(store.task(recent).await.unwrap().is_some());
    let later = store
        .maintain_history(&POLICY, now + Duration::days(30))
        .await
        .unwrap();
    assert!(store.task(recent).await.unwrap().is_none(), "{later:?}");
}

/// A process that died after a day's detach and before its drop left the day's tables under
/// their `wharf_dropping_` names: the next pass with a retention drops them, indexes and all.
/// A table an operator detached by hand is not the upkeep's to drop.
#[tokio::test]
async fn tables_left_detached_by_a_dead_pass_are_dropped_by_the_next() {
    let store = Store::connect(&fresh_database().await).await.unwrap();
    let now = Utc::now();
    let past = now - Duration::days(10);
    store.maintain_history(&KEEP_ALL, past).await.unwrap();
    let (old, events) = task_events(past, Some(past));
    record(&store, &mut 0, &[&events]).await;
    let suffix = day_suffix(day_start(past.timestamp_millis()));
    let (tasks, task_events) = (format!("tasks_{suffix}"), format!("task_events_{suffix}"));
    let db = store.connection();
    for sql in [
        format!("ALTER TABLE task_events DETACH PARTITION {task_events}"),
        format!("ALTER TABLE tasks DETACH PARTITION {tasks}"),
        format!("ALTER TABLE {tasks} RENAME TO wharf_dropping_{tasks}"),
        format!("CREATE INDEX wharf_dropping_extra_{suffix} ON wharf_dropping_{tasks} (tool)"),
    ] {
        db.execute_unprepared(&sql).await.unwrap();
    }
    let before = relations(&store, &format!("%{suffix}%")).await;
    assert!(
        before.len() > 4,
        "the detached tables and their indexes: {before:?}"
    );
    assert!(store.task(old).await.unwrap().is_none(), "detached");

    let ahead_only = store.maintain_history(&KEEP_ALL, now).await.unwrap();
    assert!(ahead_only.ran, "{ahead_only:?}");
    assert_eq!(
        relations(&store, &format!("%{suffix}%")).await,
        before,
        "with the retention off (the recorder's pass before it records) nothing is dropped"
    );
    let done = store.maintain_history(&POLICY, now).await.unwrap();
    assert!(done.ran && done.dropped.is_empty(), "{done:?}");
    let after = relations(&store, &format!("%{suffix}%")).await;
    assert!(
        after.contains(&task_events),
        "the table detached by hand stays: {after:?}"
    );
    assert!(
        after.iter().all(|r| r.starts_with(&task_events)),
        "the left-over day's table is gone, indexes and all (only the hand-detached table \
         and its own indexes remain): {after:?}"
    );
}

#[tokio::test]
async fn retention_zero_keeps_everything() {
    let store = Store::connect(&fresh_database().await).await.unwrap();
    let now = Utc::now();
    store
        .maintain_history(&KEEP_ALL, now - Duration::days(400))
        .await
        .unwrap();
    let (old, events) = task_events(now - Duration::days(400), Some(now - Duration::days(399)));
    record(&store, &mut 0, &[&events]).await;
    let done = store.maintain_history(&KEEP_ALL, now).await.unwrap();
    assert!(done.dropped.is_empty() && done.deleted == 0, "{done:?}");
    assert!(store.task(old).await.unwrap().is_some());
}

#[tokio::test]
async fn the_history_from_before_partitioning_becomes_a_partition() {
    use sea_orm_migration::MigratorTrait;
    let url = empty_database().await;
    let now = Utc::now();
    // The schema as it was, with a history in it.
    let (old, before) = task_events(now - Duration::hours(1), Some(now));
    let (unfinished, running) = task_events(now - Duration::hours(2), None);
    // A gateway's clock days ahead: past the end of the day the migration covers.
    let (ahead, skewed) = task_events(now + Duration::days(3), Some(now + Duration::days(3)));
    {
        let db = Database::connect(&url).await.unwrap();
        wharf_migration::Migrator::up(&db, Some(8)).await.unwrap();
        // Today's store writes events with ON CONFLICT (task_id, seq), which needs a unique
        // index the old schema lacks, and rows with columns added since (m0011's `trace_id`):
        // they are lent for the writing, then taken away.
        db.execute_unprepared("CREATE UNIQUE INDEX lent ON task_events (task_id, seq)")
            .await
            .unwrap();
        db.execute_unprepared("ALTER TABLE tasks ADD COLUMN trace_id text")
            .await
            .unwrap();
        let unpartitioned = Store::from_connection(db.clone());
        record(&unpartitioned, &mut 0, &[&before, &running, &skewed]).await;
        db.execute_unprepared("DROP INDEX lent").await.unwrap();
        db.execute_unprepared("ALTER TABLE tasks DROP COLUMN trace_id")
            .await
            .unwrap();
        db.close().await.unwrap();
    }
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(
        partitions(&store, "tasks").await,
        ["tasks_default", "tasks_unpartitioned"]
    );
    for (id, n, table) in [
        (old, 3, "tasks_unpartitioned"),
        (unfinished, 2, "tasks_unpartitioned"),
        (ahead, 3, "tasks_default"),
    ] {
        let view = store
            .task(id)
            .await
            .unwrap()
            .expect("kept through the migration");
        assert_eq!(view.id, id);
        assert_eq!(events_of(&store, id).await, n);
        assert_eq!(
            partition_of(&store, "tasks", "id", id).await.as_deref(),
            Some(table)
        );
    }
    // The projection goes on over the old rows: a redelivered event changes nothing, a new
    // one merges into the old row.
    record(&store, &mut 2, &[&before[2..]]).await;
    assert_eq!(events_of(&store, old).await, 3);
    let end = TaskEvent::new(unfinished, 1, EventKind::Succeeded { result: json!(2) });
    record(&store, &mut 100, &[&[end]]).await;
    assert_eq!(
        store.task(unfinished).await.unwrap().unwrap().status,
        TaskStatus::Succeeded
    );
    let list = store
        .tasks(&wharf_store::TaskFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    // The task days ahead is past the clock skew a first page allows (`CLOCK_SKEW_MS`): it
    // is read by id (above), and listed once the clock is within the skew of it.
    assert_eq!(
        list.iter().map(|t| t.id).collect::<Vec<_>>(),
        [old, unfinished],
        "newest first across the partitions"
    );
    // Once its last day is past the retention, the old partition goes whole, except what
    // must stay; the skewed task, finished and expired, goes from the default by batch.
    let (still, queued) = task_events(now - Duration::hours(3), None);
    record(&store, &mut 200, &[&queued[..1]]).await;
    let done = store
        .maintain_history(&POLICY, now + Duration::days(40))
        .await
        .unwrap();
    assert!(
        done.dropped.contains(&"tasks_unpartitioned".to_owned()),
        "{done:?}"
    );
    assert_eq!((done.kept, done.deleted), (1, 1));
    assert!(store.task(ahead).await.unwrap().is_none());
    assert!(store.task(old).await.unwrap().is_none());
    assert!(store.task(still).await.unwrap().is_some());
}

#[tokio::test]
async fn sqlite_deletes_expired_tasks_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/wharf.db?mode=rwc", dir.path().display());
    let store = Store::connect(&url).await.unwrap();
    let now = Utc::now();
    let mut histories = Vec::new();
    let mut expired = Vec::new();
    // More than one batch of expired tasks.
    for i in 0..2100 {
        let at = now - Duration::days(40) + Duration::seconds(i);
        let (id, events) = task_events(at, Some(at));
        expired.push(id);
        histories.push(events);
    }
    let (running, r) = task_events(now - Duration::days(40), None);
    let (recent, c) = task_events(now - Duration::days(40), Some(now - Duration::days(2)));
    histories.push(r);
    histories.push(c);
    let refs: Vec<&[TaskEvent]> = histories.iter().map(Vec::as_slice).collect();
    record(&store, &mut 0, &refs).await;

    let done = store.maintain_history(&POLICY, now).await.unwrap();
    assert_eq!(done.deleted, 2100, "{done:?}");
    assert!(done.created.is_empty() && done.dropped.is_empty());
    for id in [expired[0], expired[2099]] {
        assert!(store.task(id).await.unwrap().is_none());
        assert_eq!(events_of(&store, id).await, 0);
    }
    for id in [running, recent] {
        assert!(store.task(id).await.unwrap().is_some());
        assert!(events_of(&store, id).await >= 2);
    }
    let counts = store.count_by_status().await.unwrap();
    assert_eq!(counts.values().sum::<u64>(), 2);
}

#[tokio::test]
async fn a_running_recorder_makes_the_days_ahead_and_tasks_land_in_them() {
    let w = wharf_testkit::Wharf::start().await;
    let today = day_start(Utc::now().timestamp_millis());
    let expected: Vec<String> = (0..=3)
        .map(|d| {
            format!(
                "tasks_{}",
                day_suffix(today + d * wharf_migration::partitions::DAY_MS)
            )
        })
        .collect();
    wharf_testkit::eventually(
        "the recorder's upkeep to make today's partitions and three days ahead",
        std::time::Duration::from_secs(20),
        || async {
            let made = partitions(&w.store, "tasks").await;
            expected.iter().all(|p| made.contains(p)).then_some(())
        },
    )
    .await;
    let id = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "hi"}}))
        .await;
    w.wait_recorded(id, TaskStatus::Succeeded).await;
    assert_eq!(
        partition_of(&w.store, "tasks", "id", id).await.as_deref(),
        Some(expected[0].as_str())
    );
    assert_eq!(
        partition_of(&w.store, "task_events", "task_id", id).await,
        Some(expected[0].replace("tasks_", "task_events_"))
    );
    w.shutdown().await;
}

#[tokio::test]
async fn pages_run_newest_first_across_days_partitions_and_the_default() {
    let store = Store::connect(&fresh_database().await).await.unwrap();
    let now = Utc::now();
    store
        .maintain_history(&POLICY, now - Duration::days(3))
        .await
        .unwrap();
    store.maintain_history(&POLICY, now).await.unwrap();
    // Days with a partition, days without (the default), and a clock ahead by less than the
    // skew a first page allows (`CLOCK_SKEW_MS`).
    let mut expected = Vec::new();
    let mut seq = 0;
    let ahead = now + Duration::minutes(50);
    let ago = |days| now - Duration::days(days) - Duration::minutes(1);
    for at in [
        ahead,
        ago(0),
        ago(1),
        ago(3),
        ago(10),
        ago(50),
        ago(200),
        ago(400),
    ] {
        let (id, events) = task_events(at, Some(at));
        record(&store, &mut seq, &[&events]).await;
        expected.push(id);
    }
    let list = |before: Option<Uuid>, limit: u64| {
        let store = store.clone();
        async move {
            store
                .tasks(&wharf_store::TaskFilter {
                    limit,
                    before,
                    tenant: Some("default".into()),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(None, 20).await, expected, "one page holds them all");
    let mut paged: Vec<Uuid> = Vec::new();
    let mut before = None;
    loop {
        let page = list(before, 3).await;
        paged.extend(&page);
        if page.len() < 3 {
            break;
        }
        before = page.last().copied();
    }
    assert_eq!(paged, expected, "pages of three, each from the cursor on");
}
