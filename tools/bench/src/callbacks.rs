//! Task callbacks' cost: the same batch of `demo.echo` tasks run twice on a fresh platform each,
//! once plain and once with every task asking for its terminal event to be POSTed to a receiver
//! in this process. It measures how fast the deliveries arrive end to end, and the CPU they add
//! per task (every process but this one, with callbacks minus without).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::Options;
use crate::machine::CpuTimes;
use crate::platform::{Platform, Shape};
use crate::scenarios::{echo_task, submit_http};

/// The signing secret the `default` tenant's callbacks are signed with.
const SECRET: &str = "whsec_LNUhPuNf4DD96excS18OjjIKB2NLvcaKaptaiKut2IA=";
/// Tasks per submission request, and the connections submitting.
const BATCH: usize = 100;
const CONNECTIONS: usize = 8;
/// Longer than the recorder's 5 s between two readings of the tenants' secrets.
const SECRETS_SETTLE: Duration = Duration::from_secs(6);
/// How often the history is polled for the tasks' ends: each poll is Postgres CPU counted in
/// both runs, so seldom.
const POLL: Duration = Duration::from_millis(250);
/// Every process may call the loopback receiver (the default policy refuses it).
const ENV: [(&str, &str); 1] = [("WHARF_CALLBACKS__ALLOW_PRIVATE", "true")];
/// What CPU is not Wharf's: this process (the load generator and the receiver).
const NOT_WHARF: [&str; 1] = ["bench"];

/// The scenario: a line for the run without callbacks and one for the run with them, which
/// also carries the difference.
pub async fn callbacks(opts: &Options) -> anyhow::Result<Vec<Value>> {
    let n = opts.count(20_000, 1_000) / BATCH * BATCH;
    let without = run(opts, n, false).await?;
    let mut with = run(opts, n, true).await?;
    let us = |line: &Value| line["cpu_us_per_task"].as_f64().unwrap_or(0.0);
    with["added_cpu_us_per_task"] = json!(round1(us(&with) - us(&without)));
    Ok(vec![without, with])
}

/// One run on a platform of its own, with or without a callback on every task.
async fn run(opts: &Options, n: usize, callbacks: bool) -> anyhow::Result<Value> {
    let receiver = Receiver::start(n).await?;
    let platform = Platform::start_with_env(opts, &Shape::default(), &ENV).await?;
    let outcome = measure(&platform, n, callbacks.then_some(&receiver)).await;
    platform.stop(false).await;
    outcome
}

async fn measure(
    platform: &Platform,
    n: usize,
    receiver: Option<&Receiver>,
) -> anyhow::Result<Value> {
    // Both runs set the secret and wait alike, so that they differ only by the callbacks.
    set_secret(&platform.api).await?;
    tokio::time::sleep(SECRETS_SETTLE).await;
    let mut task = echo_task(100);
    if let Some(r) = receiver {
        task["callback"] = json!({ "url": r.url });
    }
    let within = Duration::from_secs(120).max(Duration::from_millis(n as u64 * 20));
    let (cpu, cpu_from) = (CpuTimes::now(), Instant::now());
    let (start, _, _, _) = submit_http(&platform.api, n, CONNECTIONS, &task, BATCH).await?;
    let (terminal, succeeded) = platform.wait_terminal_every(n as u64, within, POLL).await?;
    let delivered = match receiver {
        Some(r) => Some(r.wait_all(start + within).await?),
        None => None,
    };
    let (cpu_now, cpu_wall) = (CpuTimes::now(), cpu_from.elapsed().as_secs_f64());
    anyhow::ensure!(
        succeeded == n as u64,
        "{} of {n} tasks did not succeed (worker log: {})",
        n as u64 - succeeded,
        platform.log("worker-0")
    );
    let seconds = terminal.duration_since(start).as_secs_f64();
    let mut line = json!({
        "callbacks": receiver.is_some(),
        "tasks": n,
        "batch": BATCH,
        "http_connections": CONNECTIONS,
        "seconds": seconds,
        "per_sec": n as f64 / seconds,
        "cpu": cpu_now.busy_since(&cpu, cpu_wall),
    });
    cpu_per_task(&mut line, &cpu, &cpu_now, n);
    if let (Some(r), Some(at)) = (receiver, delivered) {
        let secs = at.duration_since(start).as_secs_f64();
        let requests = r.tally.requests.load(Ordering::Relaxed);
        line["deliveries"] = json!(n);
        line["delivery_seconds"] = json!(secs);
        line["deliveries_per_sec"] = json!(n as f64 / secs);
        line["requests"] = json!(requests);
        line["repeats"] = json!(requests.saturating_sub(n));
    }
    Ok(line)
}

/// The CPU every process but the bench's used from `before` to `after`, per task: in all
/// (`cpu_seconds`, `cpu_us_per_task`) and by process.
fn cpu_per_task(line: &mut Value, before: &CpuTimes, after: &CpuTimes, n: usize) {
    let mut used = after.used_since(before);
    used.retain(|group, _| !NOT_WHARF.contains(&group.as_str()));
    let total: f64 = used.values().sum();
    let by_process: serde_json::Map<String, Value> = used
        .into_iter()
        .map(|(group, secs)| (group, json!(round1(secs / n as f64 * 1e6))))
        .collect();
    line["cpu_seconds"] = json!((total * 1000.0).round() / 1000.0);
    line["cpu_us_per_task"] = json!(round1(total / n as f64 * 1e6));
    line["cpu_us_per_task_by_process"] = Value::Object(by_process);
}

/// `x` to one decimal: short enough to read back as the same number whatever float parsing
/// serde_json was built with, so the page renders alike everywhere.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Gives the `default` tenant its signing secret (`PUT /api/v1/config`).
async fn set_secret(api: &str) -> anyhow::Result<()> {
    let http = wharf_client::Client::new(api)?;
    let current: Value = http
        .request(Method::GET, "/api/v1/config")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let change = json!({
        "revision": current["revision"].as_u64().unwrap_or(0),
        "config": {
            "session_ttl_secs": 86400,
            "callbacks": { "default": { "secrets": [SECRET] } },
        },
    });
    let response = http
        .request(Method::PUT, "/api/v1/config")
        .json(&change)
        .send()
        .await?;
    let status = response.status();
    anyhow::ensure!(
        status.as_u16() == 200,
        "PUT /api/v1/config answered {status}: {}",
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

/// What the receiver has seen.
struct Tally {
    /// Distinct `webhook-id`s.
    ids: Mutex<HashSet<String>>,
    /// Every request, repeats included.
    requests: AtomicUsize,
    /// How many distinct ids make the run complete, and when that was reached.
    target: usize,
    all_at: OnceLock<Instant>,
    all: Notify,
}

/// An HTTP/1.1 server on loopback answering 204 to every POST to `/hook`.
struct Receiver {
    url: String,
    tally: Arc<Tally>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(target: usize) -> anyhow::Result<Receiver> {
        let tally = Arc::new(Tally {
            ids: Mutex::new(HashSet::with_capacity(target)),
            requests: AtomicUsize::new(0),
            target,
            all_at: OnceLock::new(),
            all: Notify::new(),
        });
        let app = Router::new()
            .route("/hook", post(hook))
            .with_state(tally.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver { url, tally, server })
    }

    /// When the last of the distinct ids arrived; an error at `deadline`.
    async fn wait_all(&self, deadline: Instant) -> anyhow::Result<Instant> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(wait, self.tally.all.notified()).await;
        self.tally.all_at.get().copied().ok_or_else(|| {
            let got = self.tally.ids.lock().map(|ids| ids.len()).unwrap_or(0);
            anyhow::anyhow!(
                "the receiver got {got} of {} callbacks in time",
                self.tally.target
            )
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn hook(State(tally): State<Arc<Tally>>, headers: HeaderMap, _body: Bytes) -> StatusCode {
    tally.requests.fetch_add(1, Ordering::Relaxed);
    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
        let mut ids = tally.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.insert(id.to_owned()) && ids.len() == tally.target {
            let _ = tally.all_at.set(Instant::now());
            tally.all.notify_one();
        }
    }
    StatusCode::NO_CONTENT
}
