//! Prometheus metrics: one recorder per process, installed by whichever Wharf component starts
//! first, and rendered in the text exposition format for `/metrics`.
//!
//! Components record through the `metrics` macros. Names follow Prometheus conventions (a
//! `wharf_` prefix, base units, `_total` on counters) and labels only take bounded values
//! (queues, tools, servers, outcomes, routes), never task ids. Every metric is listed, with its
//! labels, in `docs/observability.md`.

use std::sync::OnceLock;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets for durations, in seconds: from a millisecond (an API call, a queue wait on
/// an idle worker) to an hour (a long task).
const SECONDS_BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's metrics recorder if none is yet. Safe to call from every component:
/// the first call installs it, later ones do nothing.
pub fn install() {
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            .expect("the buckets are not empty")
            .install_recorder();
        match handle {
            Ok(h) => {
                describe();
                // Histograms keep their raw samples until upkeep folds them into buckets; a
                // process nobody scrapes would otherwise keep every sample.
                let upkeep = h.clone();
                let _ = std::thread::Builder::new()
                    .name("metrics-upkeep".into())
                    .spawn(move || {
                        loop {
                            std::thread::sleep(std::time::Duration::from_secs(5));
                            upkeep.run_upkeep();
                        }
                    });
                Some(h)
            }
            // Another recorder is installed (a host program's): leave it be.
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        }
    });
}

/// The process's metrics in the Prometheus text format (empty if no recorder could be
/// installed). Reads the process's CPU and memory first.
pub fn render() -> String {
    install();
    let Some(handle) = HANDLE.get().and_then(Option::as_ref) else {
        return String::new();
    };
    if let Some(seconds) = process_cpu_seconds() {
        metrics::counter!("process_cpu_seconds_total").absolute(seconds as u64);
    }
    if let Some(bytes) = process_resident_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(bytes as f64);
    }
    if let Some(bytes) = memory_limit_bytes() {
        metrics::gauge!("wharf_memory_limit_bytes").set(bytes as f64);
    }
    handle.run_upkeep();
    handle.render()
}

/// What a metric measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric a Wharf process may export.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
}

/// Every metric Wharf exports, with its help text. A test checks that a scrape holds nothing
/// else, and that the dashboard, the alert rules and `docs/observability.md` use only these.
pub const METRICS: &[Metric] = &[
    Metric {
        name: "process_cpu_seconds_total",
        kind: Kind::Counter,
        unit: Some(Unit::Seconds),
        help: "CPU time used by this process (whole seconds).",
    },
    Metric {
        name: "process_resident_memory_bytes",
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "Resident memory of this process.",
    },
    Metric {
        name: "wharf_memory_limit_bytes",
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "Memory this process may use: its cgroup's limit, else the machine's memory.",
    },
    Metric {
        name: "wharf_http_request_duration_seconds",
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time to answer an HTTP request (to the response head for streams), by method, route and status.",
    },
    Metric {
        name: "wharf_websocket_connections",
        kind: Kind::Gauge,
        unit: None,
        help: "Open WebSocket connections.",
    },
    Metric {
        name: "wharf_tasks_submitted_total",
        kind: Kind::Counter,
        unit: None,
        help: "Tasks accepted by the gateway, by queue, tool and priority.",
    },
    Metric {
        name: "wharf_tasks_started_total",
        kind: Kind::Counter,
        unit: None,
        help: "Attempts started by workers, by queue and tool.",
    },
    Metric {
        name: "wharf_tasks_finished_total",
        kind: Kind::Counter,
        unit: None,
        help: "Tasks ended by workers, by queue, tool and outcome (succeeded, failed, cancelled, dead).",
    },
    Metric {
        name: "wharf_task_attempts_failed_total",
        kind: Kind::Counter,
        unit: None,
        help: "Attempts that failed and will be retried, by queue, tool and error code.",
    },
    Metric {
        name: "wharf_task_duration_seconds",
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Run time of the attempt that ended a task, by queue, tool and outcome.",
    },
    Metric {
        name: "wharf_task_queue_wait_seconds",
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time from when a task could start (submission or run_at) to its first attempt, by queue and priority.",
    },
    Metric {
        name: "wharf_worker_tasks_in_flight",
        kind: Kind::Gauge,
        unit: None,
        help: "Tasks this worker runs now, by queue.",
    },
    Metric {
        name: "wharf_mcp_call_duration_seconds",
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "MCP tool calls, by server, tool and outcome (ok, tool_error, error, timeout, cancelled, unavailable).",
    },
    Metric {
        name: "wharf_mcp_call_errors_total",
        kind: Kind::Counter,
        unit: None,
        help: "MCP tool calls that did not return a result, by server, tool and outcome.",
    },
    Metric {
        name: "wharf_mcp_server_restarts_total",
        kind: Kind::Counter,
        unit: None,
        help: "Times a worker (re)connected to an MCP server after losing it, by server.",
    },
    Metric {
        name: "wharf_queue_waiting_tasks",
        kind: Kind::Gauge,
        unit: None,
        help: "Tasks waiting for a worker, by queue and priority (read at scrape time by the gateway).",
    },
    Metric {
        name: "wharf_queue_in_flight_tasks",
        kind: Kind::Gauge,
        unit: None,
        help: "Tasks held by workers, by queue and priority (read at scrape time by the gateway).",
    },
    Metric {
        name: "wharf_queue_oldest_task_age_seconds",
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        help: "Age of the oldest task still in a queue level, waiting or running; 0 when empty.",
    },
    Metric {
        name: "wharf_workers",
        kind: Kind::Gauge,
        unit: None,
        help: "Live workers (read at scrape time by the gateway).",
    },
    Metric {
        name: "wharf_recorder_pending_events",
        kind: Kind::Gauge,
        unit: None,
        help: "Events stored in NATS and not yet recorded in the database (read at scrape time by the gateway).",
    },
    Metric {
        name: "wharf_recorder_events_total",
        kind: Kind::Counter,
        unit: None,
        help: "Events the recorder wrote to the database.",
    },
    Metric {
        name: "wharf_recorder_callback_lookups_total",
        kind: Kind::Counter,
        unit: None,
        help: "Reads of a task's callback from the events stream, for tasks whose submitted event the recorder did not meet.",
    },
    Metric {
        name: "wharf_recorder_lag_seconds",
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        help: "Age of the newest event of the recorder's last committed batch when it committed.",
    },
    Metric {
        name: "wharf_recorder_batch_duration_seconds",
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time to write one batch of events to the database.",
    },
    Metric {
        name: "wharf_history_partitions_dropped_total",
        kind: Kind::Counter,
        unit: None,
        help: "Days of history (a partition of tasks and one of their events) the retention dropped.",
    },
    Metric {
        name: "wharf_history_tasks_deleted_total",
        kind: Kind::Counter,
        unit: None,
        help: "Finished tasks the retention deleted row by row (SQLite; on Postgres, the tasks outside the days' partitions).",
    },
];

/// Help texts, so a scrape explains itself.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    for m in METRICS {
        match (m.kind, m.unit) {
            (Kind::Counter, Some(u)) => describe_counter!(m.name, u, m.help),
            (Kind::Counter, None) => describe_counter!(m.name, m.help),
            (Kind::Gauge, Some(u)) => describe_gauge!(m.name, u, m.help),
            (Kind::Gauge, None) => describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(u)) => describe_histogram!(m.name, u, m.help),
            (Kind::Histogram, None) => describe_histogram!(m.name, m.help),
        }
    }
}

/// Kernel clock ticks per second (`getconf CLK_TCK`); 100 on every Linux we know of.
pub const CLOCK_TICKS: f64 = 100.0;

/// CPU time (user + system) of this process so far, from `/proc/self/stat`.
pub fn process_cpu_seconds() -> Option<f64> {
    proc_cpu_ticks("self").map(|t| t as f64 / CLOCK_TICKS)
}

/// Resident memory of this process, from `/proc/self/status`.
pub fn process_resident_bytes() -> Option<u64> {
    proc_rss_kib("self").map(|k| k * 1024)
}

/// The memory this process may use: its cgroup's limit (v2 `memory.max`, v1
/// `memory.limit_in_bytes`) when one is set, else the machine's `MemTotal`.
pub fn memory_limit_bytes() -> Option<u64> {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?
        * 1024;
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok());
    // "max" (v2) does not parse; v1 reports a huge number when unlimited.
    Some(cgroup.filter(|c| *c < machine).unwrap_or(machine))
}

/// User + system CPU ticks of process `pid` (or `self`), from `/proc/<pid>/stat`.
pub fn proc_cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Resident memory of process `pid` (or `self`) in KiB (`VmRSS`).
pub fn proc_rss_kib(pid: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(super::process_cpu_seconds().is_some());
        assert!(super::process_resident_bytes().unwrap() > 1024 * 1024);
        assert!(super::memory_limit_bytes().unwrap() > super::process_resident_bytes().unwrap());
    }
}
