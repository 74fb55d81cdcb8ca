//! Wharf end to end: each scenario starts a fresh platform, drives it from outside over HTTP or
//! WebSocket as a client would, and reads the outcome from the history in Postgres.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::Options;
use crate::machine::CpuTimes;
use crate::platform::{Platform, Shape};
use crate::stats::{Samples, merge};

/// HTTP connections a throughput run submits over (keep-alive, one request at a time each).
const HTTP_CONCURRENCY: usize = 64;
/// WebSocket connections a latency run spreads its submissions over.
const WS_CONNECTIONS: usize = 16;

fn echo_task(payload_bytes: usize) -> Value {
    json!({ "tool": "demo.echo", "arguments": { "message": "x".repeat(payload_bytes) } })
}

/// Submits `n` copies of `task` over `concurrency` keep-alive connections, one per request
/// (`batch` 1, `POST /api/v1/tasks`) or `batch` per request (`POST /api/v1/tasks/batch`; `n` is
/// rounded down to a multiple). Returns when the first request went out, how long submitting
/// took, the ids, and the request latencies.
async fn submit_http(
    api: &str,
    n: usize,
    concurrency: usize,
    task: &Value,
    batch: usize,
) -> anyhow::Result<(Instant, Duration, Vec<String>, Samples)> {
    // Bodies are serialised once, up front: the load generator spends its CPU sending.
    let http = wharf_client::Client::new(api)?;
    let (url, body) = if batch > 1 {
        let tasks = vec![task.clone(); batch];
        (
            "/api/v1/tasks/batch",
            Bytes::from(serde_json::to_vec(&json!({ "tasks": tasks }))?),
        )
    } else {
        ("/api/v1/tasks", Bytes::from(serde_json::to_vec(task)?))
    };
    let requests = n / batch.max(1);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..concurrency.min(requests) {
        let (http, next, body) = (http.clone(), next.clone(), body.clone());
        clients.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            let mut ids = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                let at = Instant::now();
                let response = http
                    .request(Method::POST, url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await?;
                let status = response.status();
                let text = response.text().await?;
                samples.push(at.elapsed());
                anyhow::ensure!(status.as_u16() == 202, "submit answered {status}: {text}");
                let v: Value = serde_json::from_str(&text)?;
                match v["tasks"].as_array() {
                    Some(tasks) => ids.extend(
                        tasks
                            .iter()
                            .map(|t| t["id"].as_str().unwrap_or_default().to_owned()),
                    ),
                    None => ids.push(v["id"].as_str().unwrap_or_default().to_owned()),
                }
            }
            anyhow::Ok((samples, ids))
        }));
    }
    let mut all = Samples::with_capacity(requests);
    let mut ids = Vec::with_capacity(n);
    for c in clients {
        let (s, i) = c.await??;
        all.extend(s);
        ids.extend(i);
    }
    Ok((start, start.elapsed(), ids, all))
}

/// Submits `n` echo tasks of `payload_bytes` over HTTP and measures until all are recorded
/// terminal in Postgres.
async fn run_throughput(
    opts: &Options,
    shape: &Shape,
    n: usize,
    payload_bytes: usize,
    batch: usize,
) -> anyhow::Result<Value> {
    let task = echo_task(payload_bytes);
    let mut r = run_tasks(opts, shape, n, &task, batch).await?;
    r["payload_bytes"] = json!(payload_bytes);
    Ok(r)
}

/// Submits `n` copies of `task` over HTTP and measures until all are recorded terminal in
/// Postgres.
async fn run_tasks(
    opts: &Options,
    shape: &Shape,
    n: usize,
    task: &Value,
    batch: usize,
) -> anyhow::Result<Value> {
    let platform = Platform::start(opts, shape).await?;
    let n = n / batch * batch;
    // Batches need fewer connections to keep the gateway busy.
    let connections = if batch > 1 { 8 } else { HTTP_CONCURRENCY };
    let outcome = async {
        let cpu = CpuTimes::now();
        let (start, submitting, _, submit_latency) =
            submit_http(&platform.api, n, connections, task, batch).await?;
        let within = Duration::from_secs(120).max(Duration::from_millis(n as u64 * 4));
        let (end, succeeded) = platform.wait_terminal(n as u64, within).await?;
        let seen = chrono::Utc::now();
        let wall = end.duration_since(start).as_secs_f64();
        // How far the history trailed the work: from the last task finishing to its row
        // showing it (recorder lag plus up to one 20 ms poll).
        let history_lag_ms = platform
            .last_finished()
            .await?
            .map(|f| (seen - f).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        let busy = CpuTimes::now().busy_since(&cpu, wall);
        anyhow::ensure!(
            succeeded == n as u64,
            "{} of {n} tasks did not succeed (worker log: {})",
            n as u64 - succeeded,
            platform.log("worker-0")
        );
        let submit = submit_latency.summary();
        anyhow::Ok(json!({
            "tasks": n,
            "workers": shape.workers,
            "concurrency": shape.concurrency,
            "batch": batch,
            "http_connections": connections,
            "seconds": wall,
            "per_sec": n as f64 / wall,
            "submit_per_sec": n as f64 / submitting.as_secs_f64(),
            "submit_p50_ms": submit["p50_ms"],
            "submit_p99_ms": submit["p99_ms"],
            "history_lag_ms": history_lag_ms,
            "cpu": busy,
        }))
    }
    .await;
    platform.stop(false).await;
    outcome
}

/// Scenario 2: N tasks over HTTP through one worker process, to their history in Postgres.
pub async fn throughput(opts: &Options) -> anyhow::Result<Vec<Value>> {
    let n = opts.count(50_000, 2_000);
    Ok(vec![
        run_throughput(opts, &Shape::default(), n, 100, 1).await?,
        run_throughput(opts, &Shape::default(), n, 100, 100).await?,
    ])
}

/// Scenario 4a: throughput with `workers` worker processes.
pub async fn scale_workers(opts: &Options, workers: usize) -> anyhow::Result<Value> {
    let n = opts.count(20_000, 2_000);
    let shape = Shape {
        workers,
        ..Shape::default()
    };
    run_throughput(opts, &shape, n, 100, 1).await
}

/// How long each task of the I/O-bound scaling scenario waits in its tool.
const IO_TASK_SECS: f64 = 0.1;
/// Tasks each worker of the I/O-bound scaling scenario runs at once.
const IO_CONCURRENCY: usize = 8;

/// Scenario 4c: I/O-bound tasks (`demo.sleep`, 100 ms) through `workers` worker processes, each
/// running 8 at once: the capacity each worker (a pod KEDA adds) brings while the CPU is not the
/// bound. A worker's ceiling is `concurrency / task time`, 80 tasks/s, so eight workers ask for
/// 640 tasks/s, well inside what two cores carry end to end (at 16 slots, eight workers asked
/// for 1,280/s and kept 1.6 of the 2 cores busy: the CPU became the bound).
pub async fn scale_io(opts: &Options, workers: usize) -> anyhow::Result<Value> {
    let shape = Shape {
        workers,
        concurrency: IO_CONCURRENCY,
    };
    // Enough rounds of every slot for the ramp at both ends to be small beside the run.
    let rounds = ((200.0 * opts.scale) as usize).max(20);
    let n = workers * IO_CONCURRENCY * rounds;
    let task = json!({
        "tool": "demo.sleep",
        "arguments": { "seconds": IO_TASK_SECS, "steps": 1 },
    });
    let mut r = run_tasks(opts, &shape, n, &task, 100).await?;
    r["task_secs"] = json!(IO_TASK_SECS);
    r["ceiling_per_sec"] = json!(workers as f64 * IO_CONCURRENCY as f64 / IO_TASK_SECS);
    Ok(r)
}

/// Scenario 4b: throughput with a given payload size (the echoed message).
pub async fn scale_payload(opts: &Options, bytes: usize, n: usize) -> anyhow::Result<Value> {
    let n = opts.count(n, 100);
    run_throughput(opts, &Shape::default(), n, bytes, 1).await
}

/// Runs `request(i)` at `rate` per second for `duration`, open loop: each request starts at its
/// scheduled time whether or not earlier ones finished, and its latency counts from then, so a
/// stall shows up in the figures instead of slowing the load.
async fn open_loop<F, Fut>(rate: f64, duration: Duration, request: F) -> OpenLoop
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let total = (rate * duration.as_secs_f64()) as usize;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = tokio::time::Instant::now();
    let mut lag = Samples::with_capacity(total);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        // Timed from when the scheduler woke, not from the scheduled time: tokio's timer rounds
        // every sleep up to the next millisecond, which would add up to 1 ms of harness to
        // every figure. How late the scheduler woke is reported beside (`schedule_lag`), so a
        // stall of the load generator cannot hide.
        let at = tokio::time::Instant::now();
        lag.push(at - due);
        let fut = request(i);
        let tx = tx.clone();
        tokio::spawn(async move {
            let ok = fut.await;
            let _ = tx.send((at.elapsed(), ok, tokio::time::Instant::now()));
        });
    }
    drop(tx);
    let mut samples = Samples::with_capacity(total);
    let mut errors = 0;
    let mut last = start;
    while let Some((took, ok, done)) = rx.recv().await {
        last = last.max(done);
        if ok {
            samples.push(took);
        } else {
            errors += 1;
        }
    }
    let achieved = samples.len() as f64 / (last - start).as_secs_f64().max(1e-9);
    OpenLoop {
        samples,
        errors,
        achieved,
        lag,
    }
}

/// What an open-loop run measured.
struct OpenLoop {
    samples: Samples,
    errors: usize,
    /// Successful requests per second, to the last completion.
    achieved: f64,
    /// How late the scheduler woke for each request.
    lag: Samples,
}

/// The gateway's own latency at `rate` requests per second: reading a task, and submitting one.
pub async fn api_latency(opts: &Options, rate: f64) -> anyhow::Result<Vec<Value>> {
    let platform = Platform::start(opts, &Shape::default()).await?;
    let outcome = async {
        let body = Bytes::from(serde_json::to_vec(&echo_task(100))?);
        let (_, _, ids, _) = submit_http(&platform.api, 1000, 16, &echo_task(100), 1).await?;
        platform
            .wait_terminal(1000, Duration::from_secs(60))
            .await?;
        let duration = opts.duration(Duration::from_secs(15), Duration::from_secs(3));
        let http = wharf_client::Client::new(&platform.api)?;
        let ids = Arc::new(ids);

        let get = {
            let (http, ids) = (http.clone(), ids.clone());
            open_loop(rate, duration, move |i| {
                let read = http.request(
                    Method::GET,
                    &format!("/api/v1/tasks/{}", ids[i % ids.len()]),
                );
                async move { matches!(read.send().await, Ok(r) if r.status().is_success()) }
            })
            .await
        };
        let post = {
            let http = http.clone();
            open_loop(rate, duration, move |_| {
                let submit = http
                    .request(Method::POST, "/api/v1/tasks")
                    .header("content-type", "application/json")
                    .body(body.clone());
                async move { matches!(submit.send().await, Ok(r) if r.status().as_u16() == 202) }
            })
            .await
        };
        let mut out = Vec::new();
        for (request, run) in [
            ("GET /api/v1/tasks/{id}", get),
            ("POST /api/v1/tasks", post),
        ] {
            let lag = run.lag.summary();
            out.push(merge(
                json!({
                    "request": request,
                    "offered_per_sec": rate,
                    "achieved_per_sec": run.achieved,
                    "requests": run.samples.len() + run.errors,
                    "errors": run.errors,
                    "schedule_lag_p99_ms": lag["p99_ms"],
                }),
                run.samples.summary(),
            ));
        }
        anyhow::Ok(out)
    }
    .await;
    platform.stop(false).await;
    outcome
}

/// One task of a latency run, as the client saw it.
struct Trip {
    task_id: uuid::Uuid,
    sent: Instant,
    received: Instant,
}

/// Splits each task's latency at the timestamps Wharf recorded (same machine, same clock): the
/// gateway's `created_at`, the worker's `started_at` and `finished_at`. Phases: `ingest` (client
/// send to the gateway accepting), `queue` (accepted to a worker starting it), `execution` (the
/// MCP call), `delivery` (the worker finishing to the client reading `task:complete`).
async fn phases(platform: &Platform, trips: &[Trip]) -> anyhow::Result<Value> {
    use sea_orm::{ConnectionTrait, Statement};
    let db = platform.store.connection();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT id, created_at, started_at, finished_at FROM tasks WHERE status = 'succeeded'",
        ))
        .await?;
    type Stamp = Option<chrono::DateTime<chrono::Utc>>;
    let mut stamps: HashMap<uuid::Uuid, (Stamp, Stamp, Stamp)> = HashMap::new();
    for row in rows {
        stamps.insert(
            row.try_get_by_index(0)?,
            (
                row.try_get_by_index(1)?,
                row.try_get_by_index(2)?,
                row.try_get_by_index(3)?,
            ),
        );
    }
    // Instants to wall-clock time: one reading of both clocks.
    let (now_i, now_w) = (Instant::now(), chrono::Utc::now());
    let wall = |i: Instant| now_w - chrono::Duration::from_std(now_i - i).unwrap_or_default();
    let gap = |a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>| {
        (b - a).to_std().unwrap_or_default()
    };
    let mut out = [(); 4].map(|_| Samples::with_capacity(trips.len()));
    for t in trips {
        let Some((Some(created), Some(started), Some(finished))) = stamps.get(&t.task_id) else {
            continue;
        };
        out[0].push(gap(wall(t.sent), *created));
        out[1].push(gap(*created, *started));
        out[2].push(gap(*started, *finished));
        out[3].push(gap(*finished, wall(t.received)));
    }
    let mut v = serde_json::Map::new();
    for (name, samples) in ["ingest", "queue", "execution", "delivery"].iter().zip(out) {
        let s = samples.summary();
        v.insert(format!("{name}_p50_ms"), s["p50_ms"].clone());
        v.insert(format!("{name}_p99_ms"), s["p99_ms"].clone());
    }
    Ok(Value::Object(v))
}

/// One WebSocket connection of a latency run: submits what it is handed, and times each task
/// from its scheduled submit time to `task:complete`.
struct WsLoad {
    to_send: mpsc::UnboundedSender<(usize, Instant)>,
    done: tokio::task::JoinHandle<anyhow::Result<(Samples, usize, Vec<Trip>)>>,
}

async fn ws_connection(url: &str, expected: usize, task: Value) -> anyhow::Result<WsLoad> {
    let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    let (mut sink, mut stream) = socket.split();
    let (to_send, mut rx) = mpsc::unbounded_channel::<(usize, Instant)>();
    let scheduled: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let sent = scheduled.clone();
    tokio::spawn(async move {
        while let Some((i, at)) = rx.recv().await {
            sent.lock().unwrap().insert(i, at);
            let text = json!({ "type": "task:submit", "ref": i.to_string(), "task": task });
            if sink.send(Message::text(text.to_string())).await.is_err() {
                break;
            }
        }
    });
    let done = tokio::spawn(async move {
        let mut by_task: HashMap<String, Instant> = HashMap::new();
        let mut trips = Vec::with_capacity(expected);
        let mut samples = Samples::with_capacity(expected);
        let mut errors = 0;
        while samples.len() + errors < expected {
            let Some(message) = stream.next().await else {
                anyhow::bail!("the gateway closed a WebSocket");
            };
            let Message::Text(text) = message? else {
                continue;
            };
            let v: Value = serde_json::from_str(&text)?;
            let task_id = v["task_id"].as_str().unwrap_or_default().to_owned();
            match v["type"].as_str().unwrap_or_default() {
                "task:accepted" => {
                    let i: usize = v["ref"].as_str().unwrap_or_default().parse()?;
                    if let Some(at) = scheduled.lock().unwrap().remove(&i) {
                        by_task.insert(task_id, at);
                    }
                }
                "task:complete" => {
                    if let Some(at) = by_task.remove(&task_id) {
                        samples.push(at.elapsed());
                        trips.push(Trip {
                            task_id: task_id.parse()?,
                            sent: at,
                            received: Instant::now(),
                        });
                    }
                }
                "task:error" | "task:cancelled" | "error" => {
                    if errors == 0 {
                        eprintln!("wharf bench: a WebSocket task failed: {text}");
                    }
                    errors += 1;
                }
                _ => {}
            }
        }
        Ok((samples, errors, trips))
    });
    Ok(WsLoad { to_send, done })
}

/// Scenario 3: tasks submitted over WebSocket at a fixed `rate` for 30 s; latency from each
/// task's scheduled submit time to the client receiving `task:complete` on the same socket.
pub async fn ws_latency(opts: &Options, rate: f64) -> anyhow::Result<Value> {
    let platform = Platform::start(opts, &Shape::default()).await?;
    let outcome = async {
        // Warm up connections and caches before measuring.
        submit_http(&platform.api, 2000, 16, &echo_task(100), 1).await?;
        platform
            .wait_terminal(2000, Duration::from_secs(60))
            .await?;

        let duration = opts.duration(Duration::from_secs(30), Duration::from_secs(5));
        let total = (rate * duration.as_secs_f64()) as usize;
        let mut loads = Vec::new();
        for c in 0..WS_CONNECTIONS {
            let expected = (c..total).step_by(WS_CONNECTIONS).count();
            loads.push(ws_connection(&platform.ws, expected, echo_task(100)).await?);
        }
        let cpu = CpuTimes::now();
        let start = Instant::now();
        let tick = tokio::time::Instant::from_std(start);
        let mut lag = Samples::with_capacity(total);
        for i in 0..total {
            let due = tick + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due).await;
            // From when the scheduler woke; the lag is reported (see `open_loop`).
            let at = Instant::now();
            lag.push(at - due.into_std());
            let _ = loads[i % WS_CONNECTIONS].to_send.send((i, at));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut samples = Samples::with_capacity(total);
        let mut errors = 0;
        let mut trips = Vec::with_capacity(total);
        for load in loads {
            let (s, e, t) = tokio::time::timeout_at(deadline, load.done)
                .await
                .context("tasks were still unfinished a minute after the load stopped")???;
            samples.extend(s);
            trips.extend(t);
            errors += e;
        }
        let wall = start.elapsed().as_secs_f64();
        let busy = CpuTimes::now().busy_since(&cpu, wall);
        // Let the history catch up, then see where the time went (warm-up tasks included).
        platform
            .wait_terminal(total as u64 + 2000, Duration::from_secs(60))
            .await?;
        let phases = phases(&platform, &trips).await?;
        anyhow::Ok(merge(
            merge(
                json!({
                    "offered_per_sec": rate,
                    "seconds": duration.as_secs_f64(),
                    "tasks": total,
                    "completed": samples.len(),
                    "errors": errors,
                    "ws_connections": WS_CONNECTIONS,
                    "schedule_lag_p99_ms": lag.summary()["p99_ms"],
                    "cpu": busy,
                }),
                samples.summary(),
            ),
            phases,
        ))
    }
    .await;
    platform.stop(false).await;
    outcome
}

/// Scenario 4c: resident memory per in-flight long task in a worker, and per idle WebSocket
/// subscriber in the gateway.
pub async fn memory(opts: &Options) -> anyhow::Result<Value> {
    let long = opts.count(10_000, 500);
    let subscribers = opts.count(2_000, 200);
    let shape = Shape {
        workers: 1,
        concurrency: long + 100,
    };
    let platform = Platform::start(opts, &shape).await?;
    let outcome = async {
        submit_http(&platform.api, 2000, 16, &echo_task(100), 1).await?;
        platform
            .wait_terminal(2000, Duration::from_secs(60))
            .await?;
        let (_, worker_idle, servers_idle, _) = platform.rss();

        let sleep = json!({ "tool": "demo.sleep", "arguments": { "seconds": 900, "steps": 1 } });
        let (_, _, ids, _) = submit_http(&platform.api, long, 64, &sleep, 1).await?;
        let deadline = Instant::now() + Duration::from_secs(300);
        while platform.count("running").await? < long as u64 {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the long tasks did not all start within 5 minutes"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (gateway_idle, worker_busy, servers_busy, nats_before) = platform.rss();

        // Idle subscribers: each WebSocket follows one sleeping task and has had its history.
        let mut sockets = Vec::with_capacity(subscribers);
        for id in ids.iter().take(subscribers) {
            let (mut socket, _) =
                tokio_tungstenite::connect_async_with_config(&platform.ws, None, true).await?;
            let subscribe = json!({ "type": "task:subscribe", "task_id": id });
            socket.send(Message::text(subscribe.to_string())).await?;
            sockets.push(socket);
        }
        for socket in &mut sockets {
            loop {
                let m = tokio::time::timeout(Duration::from_secs(60), socket.next())
                    .await
                    .context("a subscriber got no history within a minute")?
                    .context("the gateway closed a subscriber")??;
                if m.to_text().is_ok_and(|t| t.contains("\"task:started\"")) {
                    break;
                }
            }
        }
        let (gateway_busy, _, _, nats_after) = platform.rss();
        drop(sockets);
        let per =
            |busy: u64, idle: u64, n: usize| (busy.saturating_sub(idle) * 1024) as f64 / n as f64;
        anyhow::Ok(json!({
            "long_tasks": long,
            "worker_idle_kib": worker_idle,
            "worker_busy_kib": worker_busy,
            "worker_bytes_per_task": per(worker_busy, worker_idle, long),
            "mcp_server_bytes_per_task": per(servers_busy, servers_idle, long),
            "ws_subscribers": subscribers,
            "gateway_idle_kib": gateway_idle,
            "gateway_busy_kib": gateway_busy,
            "gateway_bytes_per_subscriber": per(gateway_busy, gateway_idle, subscribers),
            "nats_bytes_per_subscriber": per(nats_after, nats_before, subscribers),
        }))
    }
    .await;
    platform.stop(true).await;
    outcome
}
