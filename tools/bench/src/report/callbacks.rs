//! The page's section on task callbacks: how fast they reach a receiver, and the CPU they add
//! per task.

use std::fmt::Write;

use serde_json::Value;

use super::{cpu, int, latest, num};

/// The run without callbacks and the run with them, of the newest run.
fn pair(lines: &[Value]) -> Option<(&Value, &Value)> {
    let rows = latest(lines, "callbacks");
    let without = rows.iter().find(|r| r["callbacks"] == false)?;
    let with = rows.iter().find(|r| r["callbacks"] == true)?;
    Some((without, with))
}

/// The section itself.
pub(super) fn callbacks(w: &mut String, lines: &[Value]) {
    let Some((without, with)) = pair(lines) else {
        return;
    };
    let _ = writeln!(
        w,
        "## Task callbacks\n\nRun {}. The same {} `demo.echo` tasks (batches of {} over {} \
         connections), each time on a fresh platform: once plain, once with every task asking \
         for its terminal event to be POSTed, signed, to a receiver on loopback in the bench \
         process that answers 204. The recorder delivers them with its defaults (at most 4 \
         attempts in flight per host). Deliveries per second run from the first submission to \
         the receiver holding every task's callback. CPU counts every process but the bench \
         (gateway, recorder, worker, MCP server, nats-server, Postgres), from the first \
         submission until every task is recorded and, with callbacks, every callback \
         received.\n",
        with["run"].as_str().unwrap_or("–"),
        int(&with["tasks"]),
        int(&with["batch"]),
        int(&with["http_connections"]),
    );
    let _ = writeln!(
        w,
        "| run | s to all recorded | tasks/s | s to the last callback | deliveries/s | \
         requests (repeats) | CPU µs per task | cores busy |\n\
         |---|---|---|---|---|---|---|---|"
    );
    for (label, r) in [("without callbacks", without), ("with callbacks", with)] {
        let requests = match r["requests"].as_f64() {
            Some(_) => format!("{} ({})", int(&r["requests"]), int(&r["repeats"])),
            None => "–".into(),
        };
        let _ = writeln!(
            w,
            "| {label} | {} | {} | {} | {} | {requests} | {} | {} |",
            num(&r["seconds"], 1),
            int(&r["per_sec"]),
            num(&r["delivery_seconds"], 1),
            int(&r["deliveries_per_sec"]),
            int(&r["cpu_us_per_task"]),
            cpu(r),
        );
    }
    let _ = writeln!(
        w,
        "| added by a callback | | | | | | **{}** | |\n",
        signed(&with["added_cpu_us_per_task"]),
    );
    by_process(w, without, with);
}

/// Where the added CPU goes: µs per task of each process, in each run.
fn by_process(w: &mut String, without: &Value, with: &Value) {
    let (Some(a), Some(b)) = (
        without["cpu_us_per_task_by_process"].as_object(),
        with["cpu_us_per_task_by_process"].as_object(),
    ) else {
        return;
    };
    let mut rows: Vec<(&String, f64, f64)> = b
        .keys()
        .chain(a.keys().filter(|k| !b.contains_key(*k)))
        .map(|k| {
            let of = |m: &serde_json::Map<String, Value>| {
                m.get(k).and_then(Value::as_f64).unwrap_or(0.0)
            };
            (k, of(a), of(b))
        })
        .collect();
    rows.sort_by(|x, y| (y.2 - y.1).total_cmp(&(x.2 - x.1)));
    let _ = writeln!(
        w,
        "CPU µs per task by process:\n\n| process | without | with | added |\n|---|---|---|---|"
    );
    for (k, x, y) in rows {
        let (x, y) = (Value::from(x), Value::from(y));
        let added = Value::from(y.as_f64().unwrap_or(0.0) - x.as_f64().unwrap_or(0.0));
        let _ = writeln!(
            w,
            "| {k} | {} | {} | {} |",
            int(&x),
            int(&y),
            signed(&added)
        );
    }
    let _ = writeln!(w);
}

/// A whole number with its sign.
fn signed(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.round() > 0.0 => format!("+{}", int(v)),
        _ => int(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_runs_and_their_difference_are_shown() {
        let lines: Vec<Value> = [
            r#"{"scenario":"callbacks","run":"A","callbacks":false,"tasks":1000,"batch":100,"http_connections":8,"per_sec":5000.0,"cpu_us_per_task":400.0,"cpu_us_per_task_by_process":{"recorder":100.0,"postgres":300.0}}"#,
            r#"{"scenario":"callbacks","run":"A","callbacks":true,"tasks":1000,"batch":100,"http_connections":8,"per_sec":4000.0,"deliveries_per_sec":1500.0,"requests":1002,"repeats":2,"cpu_us_per_task":650.0,"added_cpu_us_per_task":250.0,"cpu_us_per_task_by_process":{"recorder":300.0,"postgres":350.0}}"#,
        ]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
        let mut page = String::new();
        callbacks(&mut page, &lines);
        assert!(
            page.contains("| without callbacks | – | 5,000 | – | – | – | 400 |"),
            "{page}"
        );
        assert!(
            page.contains("| with callbacks | – | 4,000 | – | 1,500 | 1,002 (2) | 650 |"),
            "{page}"
        );
        assert!(page.contains("**+250**"), "{page}");
        assert!(page.contains("| recorder | 100 | 300 | +200 |"), "{page}");
        assert!(page.contains("| postgres | 300 | 350 | +50 |"), "{page}");
    }
}
