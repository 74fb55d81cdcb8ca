//! The benchmark harness behind `wharf bench` (and `just bench`).
//!
//! It measures, in one run on one machine:
//! - the two hops every task must make, raw: a JetStream round trip (task in, result out) and an
//!   MCP `tools/call` over stdio, and the *composed limit* of the two;
//! - the durable history alone: the recorder's Postgres writes for finished tasks, with nothing
//!   else running, and the composed limit of all three;
//! - the floor under the gateway: an axum handler that parses a task and publishes it once
//!   ([`floor`]);
//! - Wharf end to end, started as real processes (`wharf gateway`, `wharf recorder`,
//!   `wharf worker` with the demo MCP server) on a nats-server and a Postgres database of their
//!   own: throughput, latency at a fixed offered load, the gateway's own API latency, the MCP
//!   facade (`/mcp`) against the REST call of the same tool, what task callbacks cost, scaling
//!   with workers and payload size, and memory per in-flight task and per WebSocket subscriber;
//! - a peer in the same shape as the throughput scenario: BullMQ on Redis ([`peer`]);
//! - the web console in headless Chromium: first load, JavaScript size, a long scroll
//!   ([`console`]).
//!
//! Every scenario appends one JSON object per line to the results file; `docs/benchmarks.md` is
//! rendered from that file by [`report::render`], never edited by hand.

pub mod callbacks;
pub mod console;
pub mod floor;
pub mod history;
pub mod latency;
pub mod machine;
pub mod mcp;
pub mod peer;
pub mod platform;
pub mod raw;
pub mod report;
pub mod scenarios;
pub mod stats;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

/// What to run and against what.
#[derive(Debug, Clone)]
pub struct Options {
    /// A Postgres server URL whose user may create databases (each platform run gets a fresh
    /// database, dropped afterwards).
    pub database_url: String,
    /// The `wharf` binary that runs the platform's processes and the demo MCP server.
    pub wharf_bin: PathBuf,
    /// Results file (JSON Lines); appended to.
    pub out: PathBuf,
    /// Scenarios to run (all when empty); see [`SCENARIOS`].
    pub only: Vec<String>,
    /// Multiplies task counts and durations: 1.0 is the full run, 0.1 a quick look.
    pub scale: f64,
}

/// Every scenario, in the order a full run takes them.
pub const SCENARIOS: [&str; 16] = [
    "raw_jetstream",
    "raw_mcp",
    "raw_history",
    "raw_http",
    "e2e_throughput",
    "peer_bullmq",
    "e2e_latency",
    "api_latency",
    "mcp_facade",
    "callbacks",
    "scale_workers",
    "scale_io",
    "scale_payload",
    "memory",
    "history_scale",
    "console",
];

impl Options {
    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == scenario)
    }

    /// `n` scaled, at least `min`.
    pub fn count(&self, n: usize, min: usize) -> usize {
        ((n as f64 * self.scale) as usize).max(min)
    }

    /// `d` scaled, at least `min`.
    pub fn duration(&self, d: Duration, min: Duration) -> Duration {
        d.mul_f64(self.scale).max(min)
    }
}

/// Writes result lines as they are measured, so a run cut short keeps what it measured.
pub struct Results {
    file: std::fs::File,
    run: String,
}

impl Results {
    fn open(opts: &Options) -> anyhow::Result<Results> {
        if let Some(dir) = opts.out.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&opts.out)?;
        Ok(Results {
            file,
            run: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        })
    }

    /// Appends one line (`scenario` plus the measured fields) and prints it.
    pub fn record(&mut self, scenario: &str, mut fields: Value) -> anyhow::Result<Value> {
        let obj = fields.as_object_mut().expect("a result is a JSON object");
        obj.insert("scenario".into(), json!(scenario));
        obj.insert("run".into(), json!(self.run));
        let line = serde_json::to_string(&fields)?;
        writeln!(self.file, "{line}")?;
        self.file.flush()?;
        println!("{line}");
        Ok(fields)
    }
}

/// Waits until something listens on loopback port `port` (a server the bench started), for at
/// most 10 s; `what` names it in the error.
pub(crate) async fn wait_for_port(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{what} did not listen on port {port} within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The raw hops and the history alone, when asked for or needed by the end-to-end
/// throughput's ratio; returns the two hops' composed limit when both were measured.
async fn raw_hops(opts: &Options, results: &mut Results) -> anyhow::Result<Option<f64>> {
    let mut raw_js = None;
    let mut raw_mcp = None;
    if opts.wants("raw_jetstream") || opts.wants("e2e_throughput") {
        let r = raw::jetstream_round_trip(opts, 4096).await?;
        raw_js = Some(results.record("raw_jetstream", r)?);
        let r = raw::jetstream_round_trip(opts, 1).await?;
        results.record("raw_jetstream", r)?;
    }
    if opts.wants("raw_mcp") || opts.wants("e2e_throughput") {
        let r = raw::mcp_hop(opts, 256).await?;
        raw_mcp = Some(results.record("raw_mcp", r)?);
        // One call at a time: the hop's latency floor, for reading the end-to-end latency.
        let r = raw::mcp_hop(opts, 1).await?;
        results.record("raw_mcp", r)?;
    }
    let mut raw_history = None;
    if opts.wants("raw_history") || opts.wants("e2e_throughput") {
        let r = raw::history_floor(opts).await?;
        raw_history = Some(results.record("raw_history", r)?);
    }
    // Not a part of the composed limits: the floor under the gateway, for the per-core table.
    if opts.wants("raw_http") || opts.wants("e2e_throughput") {
        let r = floor::http_floor(opts).await?;
        results.record("raw_http", r)?;
    }
    let mut composed = None;
    if let (Some(a), Some(b)) = (&raw_js, &raw_mcp) {
        let a = a["per_sec"].as_f64().unwrap_or(0.0);
        let b = b["per_sec"].as_f64().unwrap_or(0.0);
        let limit = 1.0 / (1.0 / a + 1.0 / b);
        composed = Some(limit);
        let mut line = json!({ "per_sec": limit });
        // The same with the third thing every task needs, its history in Postgres.
        if let Some(c) = raw_history.as_ref().and_then(|c| c["per_sec"].as_f64()) {
            line["with_history_per_sec"] = json!(1.0 / (1.0 / a + 1.0 / b + 1.0 / c));
        }
        results.record("composed_limit", line)?;
    }
    Ok(composed)
}

/// Runs the chosen scenarios, appending results to `opts.out`.
pub async fn run(opts: &Options) -> anyhow::Result<()> {
    for name in &opts.only {
        anyhow::ensure!(
            SCENARIOS.contains(&name.as_str()),
            "unknown scenario {name:?}; the scenarios are {}",
            SCENARIOS.join(", ")
        );
    }
    let mut results = Results::open(opts)?;
    let mut machine = machine::describe(&opts.database_url).await;
    machine["scale"] = json!(opts.scale);
    results.record("machine", machine)?;

    let composed = raw_hops(opts, &mut results).await?;
    if opts.wants("e2e_throughput") {
        for r in scenarios::throughput(opts).await? {
            let mut r = r;
            if let Some(limit) = composed {
                let per_sec = r["per_sec"].as_f64().unwrap_or(0.0);
                r["ratio"] = json!(per_sec / limit);
            }
            results.record("e2e_throughput", r)?;
        }
    }
    if opts.wants("peer_bullmq") {
        for r in peer::bullmq(opts).await? {
            results.record("peer_bullmq", r)?;
        }
    }
    if opts.wants("e2e_latency") {
        for rate in [500.0, 2000.0] {
            let r = latency::ws_latency(opts, rate).await?;
            results.record("e2e_latency", r)?;
        }
    }
    if opts.wants("api_latency") {
        for r in scenarios::api_latency(opts, 2000.0).await? {
            results.record("api_latency", r)?;
        }
    }
    if opts.wants("mcp_facade") {
        for r in mcp::mcp_facade(opts).await? {
            results.record("mcp_facade", r)?;
        }
    }
    if opts.wants("callbacks") {
        for r in callbacks::callbacks(opts).await? {
            results.record("callbacks", r)?;
        }
    }
    if opts.wants("scale_workers") {
        for workers in [1, 2, 4] {
            let r = scenarios::scale_workers(opts, workers).await?;
            results.record("scale_workers", r)?;
        }
    }
    if opts.wants("scale_io") {
        let mut one = None;
        for workers in [1, 2, 4, 8] {
            let mut r = scenarios::scale_io(opts, workers).await?;
            let per_sec = r["per_sec"].as_f64().unwrap_or(0.0);
            // Against linear: the one-worker rate times the workers.
            let base = *one.get_or_insert(per_sec);
            r["of_linear"] = json!(per_sec / (base * workers as f64));
            results.record("scale_io", r)?;
        }
    }
    if opts.wants("scale_payload") {
        for (bytes, n) in [(200, 20_000), (10 * 1024, 10_000), (500 * 1024, 400)] {
            let r = scenarios::scale_payload(opts, bytes, n).await?;
            results.record("scale_payload", r)?;
        }
    }
    if opts.wants("memory") {
        let r = scenarios::memory(opts).await?;
        results.record("memory", r)?;
    }
    if opts.wants("history_scale") {
        for r in history::history_scale(opts).await? {
            results.record("history_scale", r)?;
        }
    }
    if opts.wants("console") {
        for r in console::console(opts).await? {
            results.record("console", r)?;
        }
    }
    Ok(())
}
