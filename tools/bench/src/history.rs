//! The history at scale: the platform over a database that already holds millions of
//! finished tasks (45 days of them, each day in its partition, two events per task), then
//! the API's reads against it and the task latency while the retention drops the oldest days.
//!
//! The history is loaded by Postgres itself (`generate_series`, one statement per day and
//! table) rather than through NATS: ten million tasks through the platform would take an
//! hour on this machine and measure nothing new. The past days' partitions are made by the
//! store's own upkeep, called with each day's date, as a recorder running then would have.

use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::Method;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use wharf_contract::{TaskError, TaskErrorCode};
use wharf_migration::partitions::{DAY_MS, day_start};
use wharf_store::{HistoryPolicy, Store};

use crate::Options;
use crate::latency::{WsWindow, ws_window};
use crate::platform::{Platform, Shape};
use crate::scenarios::{OpenLoop, echo_task, open_loop, read_tasks, submit_http};
use crate::stats::{Samples, merge};

/// Days of history loaded; the retention pass keeps [`RETENTION_DAYS`] of them.
const DAYS: i64 = 45;
const RETENTION_DAYS: u32 = 30;
/// Rate of `GET /api/v1/tasks/{id}` (the API latency target's) and of each list query.
const GET_RATE: f64 = 2000.0;
const LIST_RATE: f64 = 200.0;
/// Tasks per second submitted while the retention runs (the latency target's rate).
const TASK_RATE: f64 = 500.0;
/// Tasks sampled for `GET` by id: a quarter for the warm-up, the rest for the measure.
const SAMPLE: usize = 40_000;

/// The scenario: one result line per measurement.
pub async fn history_scale(opts: &Options) -> anyhow::Result<Vec<Value>> {
    let platform = Platform::start(opts, &Shape::default()).await?;
    let outcome = measure(opts, &platform).await;
    platform.stop(false).await;
    outcome
}

async fn measure(opts: &Options, platform: &Platform) -> anyhow::Result<Vec<Value>> {
    let n = opts.count(10_000_000, 90_000);
    let loading = Instant::now();
    let loaded = load(&platform.store, n).await?;
    let load_secs = loading.elapsed().as_secs_f64();
    let size = database_size(&platform.store).await?;
    eprintln!("wharf bench: {loaded} finished tasks loaded in {load_secs:.0} s ({size} bytes)");
    let mut out = vec![json!({
        "measure": "load",
        "tasks": loaded,
        "events": loaded * 2,
        "days": DAYS,
        "seconds": load_secs,
        "database_bytes": size,
    })];
    // Warm-up: connections, and today's partition has rows.
    submit_http(&platform.api, 2000, 16, &echo_task(100), 1).await?;
    wait_recorded_today(&platform.store, 2000).await?;
    out.extend(reads(opts, platform, loaded).await?);
    out.extend(retention_under_load(opts, platform).await?);
    Ok(out)
}

/// Fills the database with `n` finished tasks spread evenly over the [`DAYS`] before today.
/// Returns how many were loaded.
async fn load(store: &Store, n: usize) -> anyhow::Result<usize> {
    let now = Utc::now();
    let keep_all = HistoryPolicy {
        retention_days: 0,
        days_ahead: 0,
    };
    for d in (1..=DAYS).rev() {
        // The recorder's own pass at start may hold the upkeep lock a moment.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !store
            .maintain_history(&keep_all, now - chrono::Duration::days(d))
            .await?
            .ran
        {
            anyhow::ensure!(Instant::now() < deadline, "the upkeep lock stayed taken");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let per_day = n / DAYS as usize;
    let today = day_start(now.timestamp_millis());
    let result = json!({"content": [{"type": "text", "text": "x".repeat(100)}]}).to_string();
    let error = serde_json::to_string(&TaskError::new(TaskErrorCode::ToolError, "failed"))?;
    // Two days at a time: one statement keeps one core of Postgres busy.
    let mut days: Vec<i64> = (1..=DAYS).collect();
    while !days.is_empty() {
        let batch: Vec<i64> = days.drain(..days.len().min(2)).collect();
        let loads = batch.iter().map(|d| {
            let day_ms = today - d * DAY_MS;
            // Far above the live stream's sequences, which the platform's own tasks get.
            let first_seq = 1_000_000_000_000 + (DAYS - d) * per_day as i64 * 2;
            load_day(store, day_ms, per_day, first_seq, &result, &error)
        });
        for r in futures::future::join_all(loads).await {
            r?;
        }
    }
    // As a history that has been in use a while: vacuumed, its statistics gathered, and the
    // load's writes flushed by a checkpoint (else that flush lands in the measurements).
    for sql in [
        "VACUUM (ANALYZE) tasks",
        "VACUUM (ANALYZE) task_events",
        "CHECKPOINT",
    ] {
        store.connection().execute_unprepared(sql).await?;
    }
    Ok(per_day * DAYS as usize)
}

/// One day's tasks and their events (`submitted` and the outcome). One in fifty failed; four
/// queues; one in seven in one of a thousand sessions; one tenant.
async fn load_day(
    store: &Store,
    day_ms: i64,
    per_day: usize,
    first_seq: i64,
    result: &str,
    error: &str,
) -> anyhow::Result<()> {
    let step = DAY_MS / per_day as i64;
    let rows = format!(
        "SELECT i, {first_seq} + 2 * i AS seq, \
           to_timestamp(({day_ms} + i * {step}) / 1000.0) AS t, \
           (lpad(to_hex({day_ms} + i * {step}), 12, '0') || '7' || \
            substr(md5(i::text || '{day_ms}'), 1, 3) || '8' || \
            substr(md5(i::text || '{day_ms}'), 4, 15))::uuid AS id, \
           i % 50 = 0 AS failed \
         FROM generate_series(0, {per_day} - 1) i"
    );
    let tasks = format!(
        "INSERT INTO tasks (id, status, status_rank, tool, queue, arguments, metadata, attempts, \
           max_attempts, session_id, progress_seq, result, error, terminal_seq, created_at, \
           started_at, finished_at, updated_at, last_seq, priority, tenant) \
         SELECT g.id, CASE WHEN g.failed THEN 'failed' ELSE 'succeeded' END, 2, 'demo.echo', \
           (ARRAY['default', 'bulk', 'mail', 'reports'])[1 + g.i % 4], \
           jsonb_build_object('message', repeat('x', 100)), '{{}}'::jsonb, 1, 3, \
           CASE WHEN g.i % 7 = 0 THEN 'session-' || (g.i % 1000) END, 0, \
           CASE WHEN g.failed THEN NULL ELSE $1::jsonb END, \
           CASE WHEN g.failed THEN $2::jsonb END, \
           g.seq + 1, g.t, g.t, g.t + interval '5 ms', g.t + interval '5 ms', g.seq + 1, \
           'normal', 'default' \
         FROM ({rows}) g"
    );
    let events = format!(
        "INSERT INTO task_events (seq, task_id, kind, attempt, at, body) \
         SELECT g.seq + k.k, g.id, \
           CASE WHEN k.k = 0 THEN 'submitted' WHEN g.failed THEN 'failed' ELSE 'succeeded' END, \
           k.k, g.t, \
           jsonb_build_object('v', 1, 'task_id', g.id, 'at', g.t, 'attempt', k.k, 'type', \
             CASE WHEN k.k = 0 THEN 'submitted' WHEN g.failed THEN 'failed' ELSE 'succeeded' END, \
             'arguments', jsonb_build_object('message', repeat('x', 100))) \
         FROM ({rows}) g, (VALUES (0), (1)) AS k(k)"
    );
    let db = store.connection();
    db.execute_raw(Statement::from_sql_and_values(
        db.get_database_backend(),
        tasks,
        [result.into(), error.into()],
    ))
    .await?;
    db.execute_unprepared(&events).await?;
    Ok(())
}

/// Waits until `n` tasks of today are recorded finished (today's partitions only: a count
/// over the whole history would take seconds).
async fn wait_recorded_today(store: &Store, n: i64) -> anyhow::Result<()> {
    let today = wharf_migration::partitions::uuid_at(day_start(Utc::now().timestamp_millis()));
    let db = store.connection();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                format!("SELECT count(*) FROM tasks WHERE id >= '{today}' AND status_rank = 2"),
            ))
            .await?
            .ok_or_else(|| anyhow::anyhow!("count() returns a row"))?;
        if row.try_get_by_index::<i64>(0)? >= n {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the warm-up tasks were not recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn database_size(store: &Store) -> anyhow::Result<i64> {
    let db = store.connection();
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT pg_database_size(current_database())",
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no size"))?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// Ids of loaded tasks, sampled row by row over every day in a random order, and one id from
/// the middle of the history (a deep page's cursor).
async fn sample_ids(store: &Store, tasks: usize) -> anyhow::Result<(Vec<String>, String)> {
    let percent = (100.0 * SAMPLE as f64 / tasks.max(1) as f64).min(100.0);
    let db = store.connection();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            format!(
                "SELECT id::text FROM tasks TABLESAMPLE BERNOULLI ({percent}) \
                 ORDER BY random() LIMIT {SAMPLE}"
            ),
        ))
        .await?;
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r.try_get_by_index::<String>(0))
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(!ids.is_empty(), "no task to read");
    let mut sorted = ids.clone();
    sorted.sort();
    let middle = sorted[sorted.len() / 2].clone();
    Ok((ids, middle))
}

/// Ids of tasks submitted today (the warm-up's).
async fn todays_ids(store: &Store) -> anyhow::Result<Vec<String>> {
    let today = wharf_migration::partitions::uuid_at(day_start(Utc::now().timestamp_millis()));
    let db = store.connection();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT id::text FROM tasks WHERE id >= '{today}' LIMIT 5000"),
        ))
        .await?;
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r.try_get_by_index::<String>(0))
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(!ids.is_empty(), "no task of today to read");
    Ok(ids)
}

/// `GET /api/v1/tasks/{id}` over the whole history and over today's tasks, then filtered
/// list pages. Each is measured after a warm-up at the same rate, reported on its own line:
/// the gateway's pooled connections meet each day's partition for the first time then, and
/// Postgres loads its metadata into that connection and plans each statement afresh (see
/// docs/operations.md, "The history at scale").
async fn reads(opts: &Options, platform: &Platform, tasks: usize) -> anyhow::Result<Vec<Value>> {
    let (mut ids, middle) = sample_ids(&platform.store, tasks).await?;
    let http = wharf_client::Client::new(&platform.api)?;
    let times = (
        opts.duration(Duration::from_secs(5), Duration::from_secs(2)),
        opts.duration(Duration::from_secs(15), Duration::from_secs(3)),
    );
    // Distinct tasks for the warm-up and the measure: a task read twice is in memory.
    let warm_ids = ids.split_off(ids.len() / 4 * 3);
    let mut out = Vec::new();
    let mut samples = [warm_ids, ids].into_iter();
    let run = |time| {
        read_tasks(
            &http,
            samples.next().expect("one sample per run"),
            GET_RATE,
            time,
        )
    };
    warmed(&mut out, "GET /api/v1/tasks/{id}", GET_RATE, times, run).await;
    // The tasks clients mostly read: today's, whose pages are in memory.
    let recent = todays_ids(&platform.store).await?;
    let name = "GET /api/v1/tasks/{id} (today's tasks)";
    let run = |time| read_tasks(&http, recent.clone(), GET_RATE, time);
    warmed(&mut out, name, GET_RATE, times, run).await;
    let lists = [
        "/api/v1/tasks?limit=50".to_owned(),
        "/api/v1/tasks?status=failed&limit=50".to_owned(),
        "/api/v1/tasks?queue=mail&status=failed&limit=50".to_owned(),
        "/api/v1/tasks?session_id=session-7&limit=50".to_owned(),
        format!("/api/v1/tasks?status=failed&limit=50&cursor={middle}"),
    ];
    let list_times = (
        opts.duration(Duration::from_secs(3), Duration::from_secs(1)),
        opts.duration(Duration::from_secs(10), Duration::from_secs(3)),
    );
    for path in lists {
        let name = format!("GET {}", path.replace(&middle, "<a task from 22 days ago>"));
        let run = |time| list_pages(&http, &path, time);
        warmed(&mut out, &name, LIST_RATE, list_times, run).await;
    }
    Ok(out)
}

/// `run` for the warm-up's time, then for the measure's, each a line of `out`; the warm-up's
/// is marked (`warm_up_secs`): shown, not held against the target.
async fn warmed<F, Fut>(
    out: &mut Vec<Value>,
    name: &str,
    rate: f64,
    (warm, measure): (Duration, Duration),
    mut run: F,
) where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = OpenLoop>,
{
    let mut line = run(warm).await.line(name, rate);
    line["warm_up_secs"] = json!(warm.as_secs_f64());
    out.push(line);
    out.push(run(measure).await.line(name, rate));
}

/// `path` (a list of tasks) at [`LIST_RATE`]; a request counts when its page is not empty.
async fn list_pages(http: &wharf_client::Client, path: &str, duration: Duration) -> OpenLoop {
    let (http, path) = (http.clone(), path.to_owned());
    open_loop(LIST_RATE, duration, move |_| {
        let read = http.request(Method::GET, &path);
        async move {
            match read.send().await {
                Ok(r) if r.status().is_success() => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["tasks"].as_array().is_some_and(|t| !t.is_empty())),
                _ => false,
            }
        }
    })
    .await
}

/// Rounds of the daily pass's comparison: a window alone, then one with the pass. One pair of
/// 30 s windows differs by a quarter in p99 on this machine with nothing else changed; the
/// rounds' samples are pooled, alone against during.
const ROUNDS: u32 = 3;

/// The task latency at [`TASK_RATE`]: [`ROUNDS`] times a window alone and one with the daily
/// pass started a few seconds in (the oldest day past the retention, what every day of
/// production brings), the samples of each kind pooled; then a window with a pass catching up
/// on the days past [`RETENTION_DAYS`] (a retention shortened, a recorder back after days
/// away), long enough to hold the whole paced pass.
async fn retention_under_load(opts: &Options, platform: &Platform) -> anyhow::Result<Vec<Value>> {
    let duration = opts.duration(Duration::from_secs(30), Duration::from_secs(10));
    let mut alone = Pooled::default();
    let mut daily = Pooled::default();
    for round in 0..ROUNDS {
        alone.add(ws_window(platform, TASK_RATE, duration).await?, None);
        let retention = DAYS as u32 - 1 - round;
        let (w, pass) = window_with_pass(platform, retention, duration).await?;
        daily.add(w, Some(pass));
    }
    let mut lines = vec![
        alone.line("alone", duration),
        daily.line("daily retention pass", duration),
    ];
    let long = opts.duration(Duration::from_secs(60), Duration::from_secs(20));
    let (w, pass) = window_with_pass(platform, RETENTION_DAYS, long).await?;
    let mut catching = Pooled::default();
    catching.add(w, Some(pass));
    lines.push(catching.line("catching up", long));
    Ok(lines)
}

/// A window of tasks with a retention pass keeping `retention_days` started 3 s in; what the
/// pass did, as the page shows it.
async fn window_with_pass(
    platform: &Platform,
    retention_days: u32,
    duration: Duration,
) -> anyhow::Result<(WsWindow, Value)> {
    let store = platform.store.clone();
    let pass = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let policy = HistoryPolicy {
            retention_days,
            days_ahead: 3,
        };
        let started = Instant::now();
        let done = store.maintain_history(&policy, Utc::now()).await;
        (done, started.elapsed())
    });
    let during = ws_window(platform, TASK_RATE, duration).await?;
    let (done, took) = pass.await?;
    let done = done?;
    anyhow::ensure!(done.ran, "the retention pass did not run");
    anyhow::ensure!(
        took + Duration::from_secs(3) <= duration,
        "the retention pass ({took:?}) outlasted its window"
    );
    Ok((
        during,
        json!({
            "seconds": took.as_secs_f64(),
            "days_dropped": done.dropped.len(),
            "tasks_kept": done.kept,
            "tasks_deleted": done.deleted,
            "retention_days": retention_days,
        }),
    ))
}

/// The windows of one kind, their samples pooled.
#[derive(Default)]
struct Pooled {
    samples: Samples,
    errors: usize,
    lag: Samples,
    /// Each window's own p99, to show the spread the pooling evens out.
    p99s: Vec<Value>,
    passes: Vec<Value>,
}

impl Pooled {
    fn add(&mut self, w: WsWindow, pass: Option<Value>) {
        self.p99s
            .push(w.samples.clone().summary()["p99_ms"].clone());
        self.samples.extend(w.samples);
        self.lag.extend(w.lag);
        self.errors += w.errors;
        self.passes.extend(pass);
    }

    /// The result line of these windows.
    fn line(self, window: &str, duration: Duration) -> Value {
        let mut line = merge(
            json!({
                "measure": "task latency",
                "window": window,
                "windows": self.p99s.len(),
                "window_p99_ms": self.p99s,
                "offered_per_sec": TASK_RATE,
                "seconds": duration.as_secs_f64(),
                "completed": self.samples.len(),
                "errors": self.errors,
                "schedule_lag_p99_ms": self.lag.summary()["p99_ms"],
            }),
            self.samples.summary(),
        );
        if !self.passes.is_empty() {
            line["passes"] = Value::Array(self.passes);
        }
        line
    }
}
