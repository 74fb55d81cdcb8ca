//! Wharf end to end: each scenario starts a fresh platform, drives it from outside over HTTP or
//! WebSocket as a client would, and reads the outcome from the history in Postgres.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
pub(crate) fn echo_task(payload_bytes: usize) -> Value {
    json!({ "tool": "demo.echo", "arguments": { "message": "x".repeat(payload_bytes) } })
}

/// Submits `n` copies of `task` over `concurrency` keep-alive connections, one per request
/// (`batch` 1, `POST /api/v1/tasks`) or `batch` per request (`POST /api/v1/tasks/batch`; `n` is
/// rounded down to a multiple). Returns when the first request went out, how long submitting
/// took, the ids, and the request latencies.
pub(crate) async fn submit_http(
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
pub(crate) async fn open_loop<F, Fut>(rate: f64, duration: Duration, request: F) -> OpenLoop
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
pub(crate) struct OpenLoop {
    samples: Samples,
    errors: usize,
    /// Successful requests per second, to the last completion.
    achieved: f64,
    /// How late the scheduler woke for each request.
    lag: Samples,
}

impl OpenLoop {
    /// The result line of a run of `request` offered at `rate` per second.
    pub(crate) fn line(self, request: &str, rate: f64) -> Value {
        let requests = self.samples.len() + self.errors;
        merge(
            json!({
                "request": request,
                "offered_per_sec": rate,
                "achieved_per_sec": self.achieved,
                "requests": requests,
                "errors": self.errors,
                "schedule_lag_p99_ms": self.lag.summary()["p99_ms"],
            }),
            self.samples.summary(),
        )
    }
}

/// `GET /api/v1/tasks/{id}` at `rate` for `duration`, going round `ids`.
pub(crate) async fn read_tasks(
    http: &wharf_client::Client,
    ids: Vec<String>,
    rate: f64,
    duration: Duration,
) -> OpenLoop {
    let (http, ids) = (http.clone(), Arc::new(ids));
    open_loop(rate, duration, move |i| {
        let read = http.request(
            Method::GET,
            &format!("/api/v1/tasks/{}", ids[i % ids.len()]),
        );
        async move { matches!(read.send().await, Ok(r) if r.status().is_success()) }
    })
    .await
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
        let get = read_tasks(&http, ids, rate, duration).await;
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
        let out = vec![
            get.line("GET /api/v1/tasks/{id}", rate),
            post.line("POST /api/v1/tasks", rate),
        ];
        anyhow::Ok(out)
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
