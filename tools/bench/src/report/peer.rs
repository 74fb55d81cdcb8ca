//! The page's per-core section: Wharf's throughput against the three-part limit and against
//! BullMQ in the same run, and its CPU per task, part by part, against the raw parts'.

use std::fmt::Write;

use serde_json::Value;

use super::{cpu, int, num, verdict};

/// The run whose µs per task the table shows as *before*: the measurement at aa2b427, before the
/// work on CPU per task began (the code of 39992fb with the BullMQ peer added to the bench).
pub(super) const BEFORE_RUN: &str = "2026-12-04T22:24:44Z";

/// What the targets are.
const SINGLE_OF_THREE_PART: f64 = 0.65;
const BATCH_OF_THREE_PART: f64 = 0.80;
const CPU_MULTIPLE: f64 = 1.7;
const VS_BULLMQ: f64 = 1.0;

/// A run holding everything the comparison needs: the raw parts, their composed limits and
/// Wharf's throughput (single-task requests first).
struct Run<'a> {
    id: &'a Value,
    single: &'a Value,
    batch: Option<&'a Value>,
    jetstream: Option<&'a Value>,
    mcp: Option<&'a Value>,
    history: Option<&'a Value>,
    three_part: Option<f64>,
    bullmq: Vec<&'a Value>,
}

fn in_run<'a>(lines: &'a [Value], run: &Value, scenario: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["scenario"] == scenario && &l["run"] == run)
        .collect()
}

/// The newest run that measured Wharf's throughput with single-task requests, with what else
/// that same run measured.
fn newest(lines: &[Value]) -> Option<Run<'_>> {
    let single = lines
        .iter()
        .rev()
        .find(|l| l["scenario"] == "e2e_throughput" && l["batch"].as_u64().unwrap_or(1) == 1)?;
    let id = &single["run"];
    let throughput = in_run(lines, id, "e2e_throughput");
    // The raw rows that measure throughput: the windowed round trip, the many-in-flight call.
    let widest = |scenario: &str, key: &str| {
        in_run(lines, id, scenario)
            .into_iter()
            .max_by_key(|r| r[key].as_u64().unwrap_or(0))
    };
    Some(Run {
        id,
        single,
        batch: throughput
            .iter()
            .copied()
            .find(|t| t["batch"].as_u64().unwrap_or(1) > 1),
        jetstream: widest("raw_jetstream", "window"),
        mcp: widest("raw_mcp", "in_flight"),
        history: in_run(lines, id, "raw_history").first().copied(),
        three_part: in_run(lines, id, "composed_limit")
            .first()
            .and_then(|c| c["with_history_per_sec"].as_f64()),
        bullmq: in_run(lines, id, "peer_bullmq"),
    })
}

/// CPU µs per task of one process group in a result line (cores busy × seconds ÷ tasks or
/// calls), `None` when the line does not have it.
fn us(line: Option<&Value>, group: &str) -> Option<f64> {
    let l = line?;
    let count = l["tasks"].as_f64().or_else(|| l["calls"].as_f64())?;
    Some(l["cpu"][group].as_f64().unwrap_or(0.0) * l["seconds"].as_f64()? / count * 1e6)
}

fn sum(parts: &[Option<f64>]) -> Option<f64> {
    parts.iter().copied().sum()
}

impl Run<'_> {
    /// The three raw parts' CPU per task added up.
    fn raw_total(&self) -> Option<f64> {
        sum(&[
            us(self.jetstream, "total"),
            us(self.mcp, "total"),
            us(self.history, "total"),
        ])
    }
}

/// The BullMQ line the verdict is held against: Redis with its append-only file, as BullMQ
/// advises for production, else whichever there is.
fn bullmq_reference<'a>(run: &Run<'a>) -> Option<&'a Value> {
    run.bullmq
        .iter()
        .copied()
        .find(|b| b["persistence"] == "aof")
        .or_else(|| run.bullmq.first().copied())
}

/// Wharf's single-request throughput over BullMQ's.
fn vs_bullmq(run: &Run) -> Option<f64> {
    Some(run.single["per_sec"].as_f64()? / bullmq_reference(run)?["per_sec"].as_f64()?)
}

/// The header's lines: the share of the three-part limit and the multiple of BullMQ.
pub(super) fn headline(w: &mut String, lines: &[Value]) {
    let run = newest(lines);
    let ratio = run
        .as_ref()
        .and_then(|r| Some(r.single["per_sec"].as_f64()? / r.three_part?));
    let x = run.as_ref().and_then(vs_bullmq);
    let shown = |x: Option<f64>| x.map(|x| format!("{x:.2}")).unwrap_or_else(|| "–".into());
    let _ = writeln!(w, "ratio: {}\n", shown(ratio));
    let _ = writeln!(
        w,
        "(end-to-end throughput with one task per HTTP request divided by the composed limit of \
         the three raw parts, JetStream round trip, MCP call and history, measured in the same \
         run)\n"
    );
    let _ = writeln!(w, "vs BullMQ: {}\n", shown(x));
    let _ = writeln!(
        w,
        "(the same throughput divided by BullMQ's on Redis with its append-only file, in the \
         same run)\n"
    );
}

/// The part rows: a name, Wharf's process groups, the raw line and its groups.
fn parts(run: &Run) -> Vec<(&'static str, &'static [&'static str], Option<f64>)> {
    vec![
        (
            "JetStream server",
            &["nats-server"],
            us(run.jetstream, "nats-server"),
        ),
        (
            "JetStream and MCP clients",
            &["gateway", "worker"],
            sum(&[us(run.jetstream, "bench"), us(run.mcp, "bench")]),
        ),
        ("MCP server", &["mcp-demo"], us(run.mcp, "mcp-demo")),
        (
            "history database",
            &["postgres"],
            us(run.history, "postgres"),
        ),
        ("history writer", &["recorder"], us(run.history, "bench")),
        ("load generator (HTTP client)", &["bench"], None),
    ]
}

/// The targets' lines.
pub(super) fn targets(w: &mut String, lines: &[Value]) {
    let Some(run) = newest(lines) else {
        return;
    };
    let of_three = |t: Option<&Value>| Some(t?["per_sec"].as_f64()? / run.three_part?);
    for (label, t, target) in [
        (
            "single-task requests",
            Some(run.single),
            SINGLE_OF_THREE_PART,
        ),
        ("the batch route", run.batch, BATCH_OF_THREE_PART),
    ] {
        let share = of_three(t);
        let _ = writeln!(
            w,
            "| end-to-end throughput with {label} >= {:.0} % of the three-part limit | {} tasks/s = {} % of {} | {} |",
            target * 100.0,
            t.map(|t| int(&t["per_sec"])).unwrap_or_default(),
            share
                .map(|s| format!("{:.0}", s * 100.0))
                .unwrap_or_default(),
            run.three_part.map(|c| int(&c.into())).unwrap_or_default(),
            verdict(share.map(|s| s >= target)),
        );
    }
    let wharf = us(Some(run.single), "total");
    let raw = run.raw_total();
    let multiple = wharf.zip(raw).map(|(w, r)| w / r);
    let _ = writeln!(
        w,
        "| CPU per task, all processes, <= {CPU_MULTIPLE}x the three raw parts added up | {} µs against {} µs = {}x | {} |",
        wharf.map(|x| int(&x.into())).unwrap_or_default(),
        raw.map(|x| int(&x.into())).unwrap_or_default(),
        multiple.map(|m| format!("{m:.2}")).unwrap_or_default(),
        verdict(multiple.map(|m| m <= CPU_MULTIPLE)),
    );
    let x = vs_bullmq(&run);
    let _ = writeln!(
        w,
        "| end-to-end throughput, single-task requests, >= {VS_BULLMQ:.1}x BullMQ's in the same run | {} tasks/s against {} jobs/s = {}x | {} |",
        int(&run.single["per_sec"]),
        bullmq_reference(&run)
            .map(|b| int(&b["per_sec"]))
            .unwrap_or_else(|| "–".into()),
        x.map(|x| format!("{x:.2}")).unwrap_or_else(|| "–".into()),
        verdict(x.map(|x| x >= VS_BULLMQ)),
    );
}

/// The section itself.
pub(super) fn per_core(w: &mut String, lines: &[Value]) {
    let Some(run) = newest(lines) else {
        return;
    };
    // The single-task throughput line of the run before the work on CPU per task.
    let before = lines.iter().find(|l| {
        l["scenario"] == "e2e_throughput"
            && l["run"] == BEFORE_RUN
            && l["batch"].as_u64().unwrap_or(1) == 1
    });
    let _ = writeln!(
        w,
        "## Per core: Wharf against its raw parts and against BullMQ\n\nRun {}.\n",
        run.id.as_str().unwrap_or("–")
    );
    if !run.bullmq.is_empty() {
        let _ = writeln!(
            w,
            "BullMQ in the shape of the throughput scenario: one worker process (concurrency 50), \
             a no-op job with a 100-byte payload, jobs added with `Queue.add`, 64 at a time, \
             while the worker runs them; the clock stops at the worker's last completion.\n"
        );
        let _ = writeln!(
            w,
            "| peer | Redis persistence | jobs | jobs/s | add/s | add p50 ms | add p99 ms | cores busy |\n|---|---|---|---|---|---|---|---|"
        );
        for b in &run.bullmq {
            let _ = writeln!(
                w,
                "| BullMQ {} | {} | {} | {} | {} | {} | {} | {} |",
                b["bullmq"].as_str().unwrap_or_default(),
                match b["persistence"].as_str() {
                    Some("aof") => "append-only file, fsync every second",
                    _ => "none",
                },
                int(&b["tasks"]),
                int(&b["per_sec"]),
                int(&b["submit_per_sec"]),
                num(&b["submit_p50_ms"], 2),
                num(&b["submit_p99_ms"], 2),
                cpu(b),
            );
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(
        w,
        "CPU per task with one task per HTTP request, by part: Wharf's processes now, before the \
         work on CPU per task (run {BEFORE_RUN}), and the same part in the raw measurements of \
         this run (the round trip's and the MCP call's clients stand for the gateway and the \
         worker, the history writer alone for the recorder).\n"
    );
    let _ = writeln!(
        w,
        "| part | Wharf process | µs per task | before | raw µs per task |\n|---|---|---|---|---|"
    );
    let fmt = |x: Option<f64>| x.map(|x| format!("{x:.0}")).unwrap_or_else(|| "–".into());
    let group_us = |line: Option<&Value>, groups: &[&str]| {
        sum(&groups.iter().map(|g| us(line, g)).collect::<Vec<_>>())
    };
    for (part, groups, raw) in parts(&run) {
        let _ = writeln!(
            w,
            "| {part} | {} | {} | {} | {} |",
            groups.join(" + "),
            fmt(group_us(Some(run.single), groups)),
            fmt(group_us(before, groups)),
            fmt(raw),
        );
    }
    let _ = writeln!(
        w,
        "| total | all | {} | {} | {} |\n",
        fmt(us(Some(run.single), "total")),
        fmt(us(before, "total")),
        fmt(run.raw_total()),
    );
    if let Some(floor) = in_run(lines, run.id, "raw_http").first().copied() {
        let _ = writeln!(
            w,
            "The gateway's floor in this run: an axum handler that parses the task and publishes \
             it once costs {} µs per request in its own process and {} µs in nats-server; the \
             gateway spends {} µs per task.\n",
            fmt(us(Some(floor), "http-floor")),
            fmt(us(Some(floor), "nats-server")),
            fmt(us(Some(run.single), "gateway")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// One run's raw parts (each 100 µs per task in all), Wharf at 450 µs per task, BullMQ with
    /// and without its append-only file.
    const RUN: &str = r#"{"scenario":"raw_jetstream","run":"R","window":4096,"tasks":1000,"seconds":1.0,"cpu":{"bench":0.04,"nats-server":0.06,"total":0.1}}
{"scenario":"raw_jetstream","run":"R","window":1,"tasks":10,"seconds":1.0,"cpu":{"bench":0.5,"nats-server":0.5,"total":1.0}}
{"scenario":"raw_mcp","run":"R","in_flight":256,"calls":1000,"seconds":1.0,"cpu":{"bench":0.05,"mcp-demo":0.05,"total":0.1}}
{"scenario":"raw_history","run":"R","tasks":1000,"seconds":1.0,"cpu":{"bench":0.02,"postgres":0.08,"total":0.1}}
{"scenario":"composed_limit","run":"R","per_sec":5000.0,"with_history_per_sec":4000.0}
{"scenario":"raw_http","run":"R","tasks":1000,"seconds":1.0,"cpu":{"http-floor":0.02,"nats-server":0.01,"total":0.04}}
{"scenario":"e2e_throughput","run":"R","batch":1,"tasks":1000,"seconds":1.0,"per_sec":3000.0,"cpu":{"gateway":0.1,"worker":0.1,"nats-server":0.1,"postgres":0.1,"recorder":0.03,"mcp-demo":0.01,"bench":0.01,"total":0.45}}
{"scenario":"e2e_throughput","run":"R","batch":100,"tasks":1000,"seconds":1.0,"per_sec":3000.0,"cpu":{"total":0.3}}
{"scenario":"peer_bullmq","run":"R","persistence":"aof","bullmq":"6.7.6","tasks":1000,"seconds":1.0,"per_sec":2500.0,"cpu":{"total":1.0}}
{"scenario":"peer_bullmq","run":"R","persistence":"none","bullmq":"6.7.6","tasks":1000,"seconds":1.0,"per_sec":3200.0,"cpu":{"total":1.0}}"#;

    #[test]
    fn the_verdicts_come_from_one_run() {
        let lines = lines(RUN);
        let mut page = String::new();
        headline(&mut page, &lines);
        targets(&mut page, &lines);
        per_core(&mut page, &lines);
        // 3,000 over the three-part 4,000; over BullMQ with its append-only file, 2,500.
        assert!(page.contains("ratio: 0.75\n"), "{page}");
        assert!(page.contains("vs BullMQ: 1.20\n"), "{page}");
        // The single-task target is 65 %, the batch route's 80 %.
        assert!(
            page.contains(
                "requests >= 65 % of the three-part limit | 3,000 tasks/s = 75 % of 4,000 | met |"
            ),
            "{page}"
        );
        assert!(page.contains("route >= 80 % of the three-part limit | 3,000 tasks/s = 75 % of 4,000 | **missed** |"), "{page}");
        // 450 µs against 100 + 100 + 100 µs.
        assert!(
            page.contains("450 µs against 300 µs = 1.50x | met |"),
            "{page}"
        );
        assert!(
            page.contains("3,000 tasks/s against 2,500 jobs/s = 1.20x | met |"),
            "{page}"
        );
        // The clients' row adds the gateway and the worker, against both raw clients.
        assert!(
            page.contains("| JetStream and MCP clients | gateway + worker | 200 | – | 90 |"),
            "{page}"
        );
        assert!(page.contains("| total | all | 450 | – | 300 |"), "{page}");
        // The floor under the gateway: 20 µs in its process, 10 in nats-server; the gateway 100.
        assert!(
            page.contains("costs 20 µs per request in its own process and 10 µs in nats-server; the gateway spends 100 µs"),
            "{page}"
        );
    }
}
