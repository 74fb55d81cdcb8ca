//! What the benchmark ran on, and where the CPU went while it ran (read from `/proc`).

use std::collections::BTreeMap;
use wharf_telemetry::metrics::{CLOCK_TICKS, proc_cpu_ticks, proc_rss_kib};

use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

/// Cores, CPU model, memory, kernel, and the versions of the servers the run used.
pub async fn describe(database_url: &str) -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let nats = match wharf_local::find_or_install().await {
        Ok(bin) => command_output(bin.as_os_str(), &["--version"]),
        Err(e) => e.to_string(),
    };
    let postgres = match Database::connect(database_url).await {
        Ok(db) => db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT version()",
            ))
            .await
            .ok()
            .flatten()
            .and_then(|row| row.try_get_by_index::<String>(0).ok())
            .unwrap_or_default(),
        Err(e) => e.to_string(),
    };
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0).round(),
        "kernel": kernel,
        "nats_server": nats,
        "postgres": postgres.split(" on ").next().unwrap_or_default(),
        "wharf": env!("CARGO_PKG_VERSION"),
        "commit": commit(),
    })
}

/// The commit measured, with `-dirty` when the working tree's code differs from it (prose, such
/// as the results page the bench itself writes, aside): figures of uncommitted code must not
/// pass for a commit's.
fn commit() -> String {
    let head = command_output("git".as_ref(), &["rev-parse", "--short", "HEAD"]);
    let changed = command_output(
        "git".as_ref(),
        &[
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":!docs/benchmarks.jsonl",
            ":!*.md",
        ],
    );
    if changed.is_empty() {
        head
    } else {
        format!("{head}-dirty")
    }
}

fn command_output(bin: &std::ffi::OsStr, args: &[&str]) -> String {
    std::process::Command::new(bin)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// CPU time used so far by every process on the machine, grouped by what it is: `gateway`,
/// `recorder`, `worker`, `mcp-demo` (the `wharf` subcommands), `nats-server`, `postgres`,
/// `bench` (this process: the load generator), and the peer's `redis-server`, `bullmq-worker`
/// and `bullmq-producer`.
#[derive(Debug, Clone, Default)]
pub struct CpuTimes(BTreeMap<String, f64>);

impl CpuTimes {
    pub fn now() -> CpuTimes {
        let me = std::process::id();
        let mut groups = BTreeMap::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return CpuTimes(groups);
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Some(group) = group_of(pid, me) else {
                continue;
            };
            let ticks = proc_cpu_ticks(&pid.to_string()).unwrap_or(0);
            *groups.entry(group).or_insert(0.0) += ticks as f64 / CLOCK_TICKS;
        }
        CpuTimes(groups)
    }

    /// Seconds of CPU each group used between `earlier` and now (groups that used none left
    /// out).
    pub fn used_since(&self, earlier: &CpuTimes) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .map(|(group, secs)| {
                let used = secs - earlier.0.get(group).copied().unwrap_or(0.0);
                (group.clone(), used)
            })
            .filter(|(_, used)| *used > 0.0)
            .collect()
    }

    /// Seconds of CPU per group between `earlier` and now, over `wall` seconds: the cores each
    /// group kept busy, and in all (`total`).
    pub fn busy_since(&self, earlier: &CpuTimes, wall: f64) -> Value {
        let mut out = serde_json::Map::new();
        let mut total = 0.0;
        for (group, secs) in &self.0 {
            let used = secs - earlier.0.get(group).copied().unwrap_or(0.0);
            if used <= 0.0 {
                continue;
            }
            total += used;
            out.insert(group.clone(), json!(round2(used / wall)));
        }
        out.insert("total".into(), json!(round2(total / wall)));
        Value::Object(out)
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn group_of(pid: u32, me: u32) -> Option<String> {
    if pid == me {
        return Some("bench".into());
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let program = args.first()?.rsplit('/').next()?.to_owned();
    if program == "wharf" {
        return args.get(1).cloned();
    }
    if program == "nats-server" {
        return Some(program);
    }
    if program == "node" && args.get(1).is_some_and(|a| a.ends_with("bullmq.mjs")) {
        return args.get(2).map(|mode| format!("bullmq-{mode}"));
    }
    // Postgres backends rename themselves ("postgres: user db ..."): read the executable name.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if comm.trim() == "postgres" || program.starts_with("postgres") {
        return Some("postgres".into());
    }
    // So does Redis ("redis-server 127.0.0.1:port").
    if comm.trim() == "redis-server" {
        return Some("redis-server".into());
    }
    None
}

/// Resident memory of a process in KiB (`VmRSS`), 0 when it cannot be read.
pub fn rss_kib(pid: u32) -> u64 {
    proc_rss_kib(&pid.to_string()).unwrap_or(0)
}

/// The children of `pid` (e.g. a worker's MCP server processes).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}
