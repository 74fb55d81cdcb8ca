//! The page's scaling sections (worker processes for CPU-bound and I/O-bound tasks, payload
//! size) and its memory section.

use std::fmt::Write;

use serde_json::Value;

use super::{cpu, int, latest, num, runs};

/// Scaling with worker processes and with payload size, and what bounds it.
pub(super) fn scaling(w: &mut String, lines: &[Value]) {
    let scaling = latest(lines, "scale_workers");
    let busiest = scaling
        .iter()
        .filter_map(|r| r["cpu"]["total"].as_f64())
        .fold(0.0, f64::max);
    let cores = latest(lines, "machine")
        .first()
        .and_then(|m| m["cores"].as_f64())
        .unwrap_or(0.0);
    let has_scaling = !scaling.is_empty();
    runs(w, lines, "Scaling: worker processes", scaling);
    if has_scaling && cores > 0.0 {
        let bound = if busiest >= 0.8 * cores {
            "the CPU: the processes kept the cores busy (kernel time not counted), so more \
             worker processes only share the same cores"
        } else {
            "not the CPU: the cores were not saturated, so the limit is a wait somewhere in the \
             pipeline"
        };
        let _ = writeln!(
            w,
            "Bound: {bound}. At most {busiest:.2} of {cores:.0} cores busy.\n"
        );
    }
    scaling_io(w, lines);
    runs(
        w,
        lines,
        "Scaling: payload size",
        latest(lines, "scale_payload"),
    );
}

/// I/O-bound tasks through 1, 2, 4 and 8 workers: the capacity each added worker brings.
fn scaling_io(w: &mut String, lines: &[Value]) {
    let rows = latest(lines, "scale_io");
    let Some(first) = rows.first() else {
        return;
    };
    let _ = writeln!(
        w,
        "## Scaling: I/O-bound tasks and worker processes
"
    );
    let _ = writeln!(
        w,
        "Run {}. Each task waits {} s in its tool (`demo.sleep`); each worker runs {} at once, \
         so a worker's ceiling is {} tasks/s. `of linear` is the rate against the one-worker \
         rate times the workers: the capacity a worker (a pod KEDA adds) brings while the CPU is \
         not the bound.\n",
        first["run"].as_str().unwrap_or("–"),
        num(&first["task_secs"], 1),
        first["concurrency"],
        int(&(first["ceiling_per_sec"].as_f64().unwrap_or(0.0)
            / first["workers"].as_f64().unwrap_or(1.0))
        .into()),
    );
    let _ = writeln!(
        w,
        "| workers | tasks | tasks/s | ceiling tasks/s | of linear | cores busy |\n|---|---|---|---|---|---|"
    );
    for r in &rows {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            r["workers"],
            int(&r["tasks"]),
            int(&r["per_sec"]),
            int(&r["ceiling_per_sec"]),
            num(&r["of_linear"], 2),
            cpu(r)
        );
    }
    let _ = writeln!(w);
}

/// Memory per in-flight task and per idle subscriber.
pub(super) fn memory(w: &mut String, lines: &[Value]) {
    let mem = latest(lines, "memory").first().copied();
    if let Some(m) = mem {
        let _ = writeln!(
            w,
            "## Memory\n\nRun {}.\n",
            m["run"].as_str().unwrap_or("–")
        );
        let _ = writeln!(w, "| | |\n|---|---|");
        for (label, key) in [
            ("long tasks in flight (`demo.sleep`)", "long_tasks"),
            ("worker resident, idle (KiB)", "worker_idle_kib"),
            ("worker resident, all in flight (KiB)", "worker_busy_kib"),
            ("worker bytes per in-flight task", "worker_bytes_per_task"),
            (
                "MCP server (demo) bytes per in-flight call",
                "mcp_server_bytes_per_task",
            ),
            ("idle WebSocket subscribers", "ws_subscribers"),
            ("gateway resident before (KiB)", "gateway_idle_kib"),
            (
                "gateway resident with subscribers (KiB)",
                "gateway_busy_kib",
            ),
            (
                "gateway bytes per subscriber",
                "gateway_bytes_per_subscriber",
            ),
            (
                "nats-server bytes per subscriber",
                "nats_bytes_per_subscriber",
            ),
        ] {
            let _ = writeln!(w, "| {label} | {} |", int(&m[key]));
        }
        let _ = writeln!(w);
    }
}
