//! The page's section on the MCP facade: a quick tool through `/mcp` against the same tool
//! through `POST /api/v1/tools/{name}/call`.

use std::fmt::Write;

use serde_json::Value;

use super::{int, latest, num, verdict};

/// How much slower at p50 a call through `/mcp` may be than the same call over REST.
const P50_ALLOWANCE_MS: f64 = 1.0;

/// The REST line and the MCP line of the newest run.
fn pair(lines: &[Value]) -> Option<(&Value, &Value)> {
    let rows = latest(lines, "mcp_facade");
    let rest = rows.iter().find(|r| {
        r["request"]
            .as_str()
            .is_some_and(|q| q.starts_with("POST "))
    })?;
    let mcp = rows
        .iter()
        .find(|r| r["request"].as_str().is_some_and(|q| q.starts_with("MCP ")))?;
    Some((rest, mcp))
}

/// The target's line.
pub(super) fn targets(w: &mut String, lines: &[Value]) {
    let Some((rest, mcp)) = pair(lines) else {
        return;
    };
    let (r, m) = (rest["p50_ms"].as_f64(), mcp["p50_ms"].as_f64());
    let _ = writeln!(
        w,
        "| `{}` through `/mcp`: p50 within {P50_ALLOWANCE_MS} ms of `{}` | {} ms against {} ms | {} |",
        mcp["tool"].as_str().unwrap_or_default(),
        rest["request"].as_str().unwrap_or_default(),
        num(&mcp["p50_ms"], 2),
        num(&rest["p50_ms"], 2),
        verdict(r.zip(m).map(|(r, m)| {
            m - r <= P50_ALLOWANCE_MS && mcp["errors"] == 0 && rest["errors"] == 0
        })),
    );
}

/// The section itself.
pub(super) fn mcp_facade(w: &mut String, lines: &[Value]) {
    let Some((rest, mcp)) = pair(lines) else {
        return;
    };
    let _ = writeln!(
        w,
        "## The MCP facade\n\nRun {}. The same quick tool called one at a time, alternately \
         through `/mcp` (an rmcp client speaking MCP 2026-07-28 over streamable HTTP, its \
         connection kept alive) and through the REST call that waits for the result; both \
         submit a task, which a worker runs on the demo MCP server.\n",
        rest["run"].as_str().unwrap_or("–")
    );
    let _ = writeln!(
        w,
        "| request | calls | errors | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|"
    );
    for r in [rest, mcp] {
        let _ = writeln!(
            w,
            "| `{}` | {} | {} | {} | {} | {} |",
            r["request"].as_str().unwrap_or_default(),
            int(&r["calls"]),
            int(&r["errors"]),
            num(&r["p50_ms"], 2),
            num(&r["p99_ms"], 2),
            num(&r["max_ms"], 2),
        );
    }
    let _ = writeln!(w);
}
