//! The page's section on the history at scale: the API's reads over millions of finished
//! tasks, and the task latency while the retention drops old days.

use std::fmt::Write;

use serde_json::Value;

use super::{int, latest, num, verdict};

/// How much the retention pass may raise the task latency's p99 and still count as not
/// raising it: the noise between two 30 s windows on this machine.
pub(super) const P99_NOISE: f64 = 1.25;

/// The newest run's load line, read lines and latency windows.
fn parts(lines: &[Value]) -> (Option<&Value>, Vec<&Value>, Vec<&Value>) {
    let rows = latest(lines, "history_scale");
    let load = rows.iter().find(|r| r["measure"] == "load").copied();
    let reads = rows
        .iter()
        .filter(|r| r["request"].is_string())
        .copied()
        .collect();
    let windows = rows
        .iter()
        .filter(|r| r["measure"] == "task latency")
        .copied()
        .collect();
    (load, reads, windows)
}

/// The targets' lines: reads within the API latency target over the loaded history, and the
/// retention pass not raising the tasks' p99.
pub(super) fn targets(w: &mut String, lines: &[Value]) {
    let (Some(load), reads, windows) = parts(lines) else {
        return;
    };
    let tasks = int(&load["tasks"]);
    for r in reads.iter().filter(|r| r["warm_up_secs"].is_null()) {
        let _ = writeln!(
            w,
            "| over {tasks} finished tasks, `{}` at {}/s: p99 <= 5 ms | {} ms | {} |",
            r["request"].as_str().unwrap_or_default(),
            int(&r["offered_per_sec"]),
            num(&r["p99_ms"], 2),
            verdict(r["p99_ms"].as_f64().map(|p| p <= 5.0 && r["errors"] == 0)),
        );
    }
    let Some(alone) = windows.iter().find(|r| r["window"] == "alone") else {
        return;
    };
    for during in windows.iter().filter(|r| !passes(r).is_empty()) {
        let (a, d) = (alone["p99_ms"].as_f64(), during["p99_ms"].as_f64());
        let _ = writeln!(
            w,
            "| {}, dropping {} while tasks flow at {}/s: p99 not raised (<= {P99_NOISE}x) | {} ms against {} ms | {} |",
            during["window"].as_str().unwrap_or_default(),
            dropped(&passes(during)),
            int(&during["offered_per_sec"]),
            num(&during["p99_ms"], 2),
            num(&alone["p99_ms"], 2),
            verdict(a.zip(d).map(|(a, d)| d <= a * P99_NOISE)),
        );
    }
}

/// A window line's retention passes (older runs' lines hold one, as `retention`).
fn passes(r: &Value) -> Vec<&Value> {
    match (&r["passes"], &r["retention"]) {
        (Value::Array(p), _) => p.iter().collect(),
        (_, one @ Value::Object(_)) => vec![one],
        _ => Vec::new(),
    }
}

/// "1 day", "14 days", "1 day in each of 3 passes".
fn dropped(passes: &[&Value]) -> String {
    let Some(first) = passes.first() else {
        return "nothing".to_owned();
    };
    let same = passes
        .iter()
        .all(|p| p["days_dropped"] == first["days_dropped"]);
    match passes.len() {
        1 => days(&first["days_dropped"]),
        n if same => format!("{} in each of {n} passes", days(&first["days_dropped"])),
        n => format!("{n} passes"),
    }
}

/// "1 day", "14 days".
fn days(n: &Value) -> String {
    match n.as_u64() {
        Some(1) => "1 day".to_owned(),
        _ => format!("{} days", int(n)),
    }
}

/// The section itself.
pub(super) fn history(w: &mut String, lines: &[Value]) {
    let (Some(load), reads, windows) = parts(lines) else {
        return;
    };
    let _ = writeln!(w, "## The history at scale\n");
    let gib = load["database_bytes"].as_f64().unwrap_or(0.0) / (1u64 << 30) as f64;
    let per_task = load["database_bytes"].as_f64().unwrap_or(0.0)
        / load["tasks"].as_f64().unwrap_or(1.0).max(1.0);
    let _ = writeln!(
        w,
        "Run {}. The database held {} finished tasks and {} events over {} days, one partition \
         per day and table ({:.1} GiB with indexes, {} B per task; loaded in {} s by Postgres \
         itself), then the platform ran over it. `GET` reads random tasks across all days (far \
         more pages than the 256 MB of Postgres' own cache under bench.sh), then today's tasks, the ones clients poll; list \
         pages are of the newest tasks matching each filter, as summaries (the list's default \
         view, without the payloads), and the cursor names a task from \
         the middle of the history. Each read is measured after a warm-up at the same rate, shown \
         on the line above it: the gateway's connections meet each day's partition for the \
         first time then (see operations.md, \"The history at scale\").\n",
        load["run"].as_str().unwrap_or("–"),
        int(&load["tasks"]),
        int(&load["events"]),
        load["days"],
        gib,
        int(&per_task.into()),
        int(&load["seconds"]),
    );
    super::requests(w, &reads);
    let _ = writeln!(
        w,
        "Task latency (WebSocket submit to `task:complete`) at a steady rate: windows alone and \
         windows with the daily retention pass (one day past the retention) started 3 s in, \
         taken in turns and each kind's samples pooled (one pair of windows differs by a quarter \
         in p99 on this machine with nothing else changed; each window's own p99 is shown); then \
         a longer window with a pass catching up on the days past a 30-day retention. Every \
         pass drops a day's indexes and tables one at a time, resting after each in proportion \
         to its size (128 MiB a second), and rests between days as long as each day's \
         transaction took:\n"
    );
    let _ = writeln!(
        w,
        "| window | tasks/s | tasks | errors | p50 ms | p99 ms | each window's p99 ms | max ms | retention passes |\n|---|---|---|---|---|---|---|---|---|"
    );
    for r in &windows {
        let pass = passes(r)
            .iter()
            .map(|p| {
                format!(
                    "{} dropped, {} tasks kept, {} deleted, in {} s",
                    days(&p["days_dropped"]),
                    int(&p["tasks_kept"]),
                    int(&p["tasks_deleted"]),
                    num(&p["seconds"], 2)
                )
            })
            .collect::<Vec<_>>();
        let each = match r["window_p99_ms"].as_array() {
            Some(v) => v.iter().map(|p| num(p, 2)).collect::<Vec<_>>().join(", "),
            None => num(&r["p99_ms"], 2),
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r["window"].as_str().unwrap_or_default(),
            int(&r["offered_per_sec"]),
            int(&r["completed"]),
            int(&r["errors"]),
            num(&r["p50_ms"], 2),
            num(&r["p99_ms"], 2),
            each,
            num(&r["max_ms"], 2),
            if pass.is_empty() {
                "–".to_owned()
            } else {
                pass.join("; ")
            },
        );
    }
    let _ = writeln!(w);
}
