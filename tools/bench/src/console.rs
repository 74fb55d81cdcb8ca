//! The web console in headless Chromium (Debian's, driven by `tests/node/console.mjs`, the
//! browser tests' own script) against a real platform: the first load with a cold cache, from
//! navigation to the overview showing the queues, and the JavaScript it downloads (gzipped);
//! then a scroll, one step per animation frame, through a list of 10,000 tasks (the queue
//! paused so that they stay listed), with the frames' times and the rows the page held.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

use crate::Options;
use crate::platform::{Platform, Shape};

/// Cold loads measured; the median and the slowest are reported.
const LOADS: usize = 5;

/// Where console.mjs is: `WHARF_BENCH_BROWSER_DIR`, else `tests/node` under the working
/// directory (bench.sh runs from the repository root).
fn script_dir() -> PathBuf {
    std::env::var_os("WHARF_BENCH_BROWSER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("tests/node"))
}

/// Runs one scenario of console.mjs; what the browser saw.
async fn browse(api: &str, scenario: &str, params: Value) -> anyhow::Result<Value> {
    let dir = script_dir();
    anyhow::ensure!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed in {}: run ./bench.sh, which installs it (npm ci)",
        dir.display()
    );
    let out = tokio::process::Command::new("node")
        .arg("console.mjs")
        .arg(scenario)
        .arg(api)
        .arg(params.to_string())
        .current_dir(&dir)
        .output()
        .await
        .context("run node")?;
    anyhow::ensure!(
        out.status.success(),
        "console.mjs {scenario} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

pub async fn console(opts: &Options) -> anyhow::Result<Vec<Value>> {
    let platform = Platform::start(opts, &Shape::default()).await?;
    let result = measure(opts, &platform).await;
    platform.stop(false).await;
    result
}

async fn measure(opts: &Options, platform: &Platform) -> anyhow::Result<Vec<Value>> {
    let http = reqwest::Client::new();
    let api = platform.api.as_str();
    // Cold loads: each in a browser profile of its own.
    let mut times = Vec::with_capacity(LOADS);
    let mut javascript = 0;
    for _ in 0..LOADS {
        let seen = browse(api, "pwa", json!({"ready": "tr[data-queue]", "visit": []})).await?;
        times.push(seen["loadMs"].as_f64().unwrap_or(f64::NAN));
        javascript = seen["javascript"].as_u64().unwrap_or(0);
    }
    times.sort_by(f64::total_cmp);
    let load = json!({
        "measure": "first_load",
        "loads": LOADS,
        "p50_ms": times[LOADS / 2],
        "max_ms": times[LOADS - 1],
        "javascript_gzip_bytes": javascript,
    });

    // A long list: the queue paused, tasks submitted in batches of 1,000.
    let n = opts.count(10_000, 1_000) / 1000 * 1000;
    let paused = http
        .post(format!("{api}/api/v1/queues/default/pause"))
        .send()
        .await?;
    anyhow::ensure!(paused.status().is_success(), "pause: {}", paused.status());
    for chunk in 0..n / 1000 {
        let tasks: Vec<Value> = (0..1000)
            .map(|i| json!({"tool": "demo.echo", "arguments": {"message": format!("{chunk}-{i}")}}))
            .collect();
        let r = http
            .post(format!("{api}/api/v1/tasks/batch"))
            .json(&json!({"tasks": tasks}))
            .send()
            .await?;
        anyhow::ensure!(r.status().as_u16() == 202, "batch: {}", r.status());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while platform.count("queued").await? < n as u64 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the history did not list {n} queued tasks within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = browse(api, "scroll", json!({"count": n, "step": 2000})).await?;
    let scroll = json!({
        "measure": "scroll",
        "tasks": n,
        "loaded": seen["loaded"],
        "frames": seen["frames"],
        "p50_ms": seen["p50"],
        "p95_ms": seen["p95"],
        "max_ms": seen["max"],
        "frames_over_50ms": seen["long"],
        "max_rows_in_page": seen["maxRows"],
    });
    Ok(vec![load, scroll])
}
