//! End-to-end latency over WebSocket: tasks submitted at a fixed rate, each timed from its
//! scheduled submit to the client reading `task:complete`, and split into phases at the
//! timestamps Wharf records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::Options;
use crate::machine::CpuTimes;
use crate::platform::{Platform, Shape};
use crate::scenarios::{echo_task, submit_http};
use crate::stats::{Samples, merge};

/// WebSocket connections a latency run spreads its submissions over.
const WS_CONNECTIONS: usize = 16;

/// One task of a latency run, as the client saw it.
pub(crate) struct Trip {
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
        let WsWindow {
            samples,
            errors,
            trips,
            lag,
            busy,
        } = ws_window(&platform, rate, duration).await?;
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

/// What [`ws_window`] measured.
pub(crate) struct WsWindow {
    pub samples: Samples,
    pub errors: usize,
    pub trips: Vec<Trip>,
    /// How late the scheduler woke for each submit.
    pub lag: Samples,
    pub busy: Value,
}

/// Submits tasks over WebSocket at `rate` for `duration` and waits for every `task:complete`.
pub(crate) async fn ws_window(
    platform: &Platform,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<WsWindow> {
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
    Ok(WsWindow {
        samples,
        errors,
        trips,
        lag,
        busy,
    })
}
