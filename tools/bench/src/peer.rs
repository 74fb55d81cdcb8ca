//! The peer Wharf's throughput is held against: BullMQ on Redis, in the shape of Wharf's
//! throughput scenario (one worker process, a no-op job, jobs added one request each with 64 in
//! flight while the worker takes them, N of them), run on the same machine in the same run.
//!
//! Redis is Debian's `redis-server` (bench.sh unpacks it into the cache when missing); BullMQ and
//! its Redis client come from npm (`tools/bench/peer`, pinned by its lock file), driven by
//! `tools/bench/peer/bullmq.mjs`. Two Redis set-ups: append-only file with `appendfsync
//! everysec`, which is what BullMQ's production guide asks for and about what JetStream's file
//! store gives Wharf (written at once, flushed to disk on a timer), and no persistence at all,
//! the fastest BullMQ can be.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::machine::CpuTimes;
use crate::{Options, wait_for_port};

/// Jobs a BullMQ worker runs at once (BullMQ's own benchmarks use 50 to 100).
const WORKER_CONCURRENCY: usize = 50;
/// `Queue.add` calls in flight, as the Wharf scenario keeps 64 HTTP requests in flight.
const OUTSTANDING: usize = 64;
/// The job's payload, as the Wharf scenario's `demo.echo` message.
const PAYLOAD_BYTES: usize = 100;

/// Both Redis set-ups, with append-only file first.
pub async fn bullmq(opts: &Options) -> anyhow::Result<Vec<Value>> {
    let n = opts.count(100_000, 5_000);
    let mut out = Vec::new();
    for persistence in ["aof", "none"] {
        out.push(run(n, persistence).await?);
    }
    Ok(out)
}

/// Where the npm project with bullmq.mjs is: `WHARF_BENCH_PEER_DIR`, else `tools/bench/peer`
/// under the working directory (bench.sh runs from the repository root).
fn peer_dir() -> PathBuf {
    std::env::var_os("WHARF_BENCH_PEER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("tools/bench/peer"))
}

/// The redis-server to run: `WHARF_REDIS_SERVER`, else the one on the PATH.
fn redis_server() -> PathBuf {
    std::env::var_os("WHARF_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

async fn run(n: usize, persistence: &str) -> anyhow::Result<Value> {
    let dir = peer_dir();
    anyhow::ensure!(
        dir.join("node_modules/bullmq").is_dir(),
        "BullMQ is not installed in {}: run ./bench.sh, which installs it (npm ci)",
        dir.display()
    );
    let data = tempfile::tempdir()?;
    let port = wharf_local::free_port()?;
    let mut redis = Command::new(redis_server());
    redis
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--dir".as_ref(), data.path().as_os_str()])
        .args(match persistence {
            "aof" => ["--appendonly", "yes", "--appendfsync", "everysec"],
            _ => ["--appendonly", "no", "--appendfsync", "no"],
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut redis = redis.spawn().context("starting redis-server")?;
    wait_for_port(port, "redis-server").await?;

    let queue = format!("bench-{persistence}");
    let node = |mode: &str, width: usize| {
        let mut c = Command::new("node");
        c.current_dir(&dir)
            .arg("bullmq.mjs")
            .arg(mode)
            .arg(port.to_string())
            .arg(&queue)
            .arg(n.to_string())
            .arg(width.to_string())
            .arg(PAYLOAD_BYTES.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        c
    };
    let outcome = async {
        let mut worker = node("worker", WORKER_CONCURRENCY).spawn()?;
        let mut worker_out = lines(&mut worker)?;
        expect_ready(&mut worker_out, "worker").await?;
        let mut producer = node("producer", OUTSTANDING).spawn()?;
        let mut producer_out = lines(&mut producer)?;
        expect_ready(&mut producer_out, "producer").await?;

        let cpu = CpuTimes::now();
        let mut go = producer.stdin.take().context("the producer's stdin")?;
        go.write_all(b"go\n").await?;
        let deadline = Duration::from_secs(120).max(Duration::from_millis(n as u64 * 4));
        let produced = next_json(&mut producer_out, deadline, "producer").await?;
        let done = next_json(&mut worker_out, deadline, "worker").await?;
        let start_ms = produced["start_ms"].as_f64().unwrap_or(0.0);
        let wall = (done["done_ms"].as_f64().unwrap_or(0.0) - start_ms) / 1000.0;
        anyhow::ensure!(
            wall > 0.0,
            "the worker finished before the producer started"
        );
        // Both scripts wait for their stdin to close before they exit: their CPU is read first.
        let busy = CpuTimes::now().busy_since(&cpu, wall);
        drop(go);
        drop(worker.stdin.take());
        let _ = producer.wait().await;
        let _ = worker.wait().await;
        let submitting = produced["seconds"].as_f64().unwrap_or(0.0);
        anyhow::Ok(json!({
            "peer": "bullmq",
            "persistence": persistence,
            "tasks": n,
            "concurrency": WORKER_CONCURRENCY,
            "outstanding": OUTSTANDING,
            "payload_bytes": PAYLOAD_BYTES,
            "seconds": wall,
            "per_sec": n as f64 / wall,
            "submit_per_sec": n as f64 / submitting,
            "submit_p50_ms": produced["p50_ms"],
            "submit_p99_ms": produced["p99_ms"],
            "cpu": busy,
            "bullmq": bullmq_version(&dir),
            "redis": redis_version().await,
        }))
    }
    .await;
    let _ = redis.kill().await;
    outcome
}

fn lines(child: &mut Child) -> anyhow::Result<Lines<BufReader<ChildStdout>>> {
    let out = child.stdout.take().context("a child's stdout")?;
    Ok(BufReader::new(out).lines())
}

/// The next line of a script's output, as JSON, within `within`.
async fn next_json(
    out: &mut Lines<BufReader<ChildStdout>>,
    within: Duration,
    who: &str,
) -> anyhow::Result<Value> {
    let line = tokio::time::timeout(within, out.next_line())
        .await
        .with_context(|| format!("the BullMQ {who} did not answer within {within:?}"))??
        .with_context(|| format!("the BullMQ {who} exited early (its errors are above)"))?;
    serde_json::from_str(&line).with_context(|| format!("the BullMQ {who} printed {line:?}"))
}

async fn expect_ready(out: &mut Lines<BufReader<ChildStdout>>, who: &str) -> anyhow::Result<()> {
    let v = next_json(out, Duration::from_secs(30), who).await?;
    anyhow::ensure!(
        v["ready"] == true,
        "the BullMQ {who} printed {v} instead of ready"
    );
    Ok(())
}

fn bullmq_version(dir: &std::path::Path) -> Value {
    std::fs::read_to_string(dir.join("node_modules/bullmq/package.json"))
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .map(|p| p["version"].clone())
        .unwrap_or(Value::Null)
}

async fn redis_version() -> Value {
    let out = Command::new(redis_server()).arg("--version").output().await;
    match out {
        Ok(o) => json!(String::from_utf8_lossy(&o.stdout).trim()),
        Err(_) => Value::Null,
    }
}
