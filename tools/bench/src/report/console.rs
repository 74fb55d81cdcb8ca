//! The page's section on the web console: its first load, its JavaScript, a long scroll.

use std::fmt::Write;

use serde_json::Value;

use super::{int, latest, num, verdict};

fn line<'a>(lines: &'a [Value], measure: &str) -> Option<&'a Value> {
    latest(lines, "console")
        .into_iter()
        .find(|l| l["measure"] == measure)
}

/// The targets' lines: first load under a second, at most 150 KB of JavaScript, and a scroll
/// through the long list with no frame over 50 ms.
pub(super) fn targets(w: &mut String, lines: &[Value]) {
    if let Some(load) = line(lines, "first_load") {
        let _ = writeln!(
            w,
            "| console first load to the overview with data, cold cache: < 1 s | {} ms (p50 of {}) | {} |",
            num(&load["p50_ms"], 0),
            int(&load["loads"]),
            verdict(load["p50_ms"].as_f64().map(|ms| ms < 1000.0)),
        );
        let _ = writeln!(
            w,
            "| console JavaScript, gzipped: <= 150 KB | {} B | {} |",
            int(&load["javascript_gzip_bytes"]),
            verdict(
                load["javascript_gzip_bytes"]
                    .as_f64()
                    .map(|b| b > 0.0 && b <= 150.0 * 1024.0)
            ),
        );
    }
    if let Some(s) = line(lines, "scroll") {
        let _ = writeln!(
            w,
            "| console scroll through {} tasks without jank: no frame over 50 ms | {} of {} frames | {} |",
            int(&s["tasks"]),
            int(&s["frames_over_50ms"]),
            int(&s["frames"]),
            verdict(s["frames_over_50ms"].as_f64().map(|n| {
                n == 0.0 && s["loaded"].as_str() == Some(&format!("{} tasks", s["tasks"]))
            })),
        );
    }
}

/// The section itself.
pub(super) fn console(w: &mut String, lines: &[Value]) {
    let (Some(load), scroll) = (line(lines, "first_load"), line(lines, "scroll")) else {
        return;
    };
    let _ = writeln!(
        w,
        "## The web console\n\nRun {}. Headless Chromium (Debian's) on the same machine as the \
         platform, a new browser profile for each load (cold cache, no service worker yet).\n",
        load["run"].as_str().unwrap_or("–")
    );
    let _ = writeln!(
        w,
        "- First load, navigation to the overview showing its queues: p50 {} ms, slowest {} ms \
         ({} loads).\n- JavaScript downloaded: {} B gzipped.",
        num(&load["p50_ms"], 0),
        num(&load["max_ms"], 0),
        int(&load["loads"]),
        int(&load["javascript_gzip_bytes"]),
    );
    if let Some(s) = scroll {
        // The list must have loaded every task, or the scroll covered less than it says.
        let all = s["loaded"].as_str() == Some(&format!("{} tasks", s["tasks"]));
        let _ = writeln!(
            w,
            "- Scrolling through {} tasks{}, 2,000 px per animation frame from top to \
             bottom: {} frames, p50 {} ms, p95 {} ms, slowest {} ms, {} over 50 ms; the page \
             held at most {} rows at once.",
            int(&s["tasks"]),
            if all {
                String::new()
            } else {
                format!(" (**only {} loaded**)", s["loaded"].as_str().unwrap_or("–"))
            },
            int(&s["frames"]),
            num(&s["p50_ms"], 1),
            num(&s["p95_ms"], 1),
            num(&s["max_ms"], 1),
            int(&s["frames_over_50ms"]),
            int(&s["max_rows_in_page"]),
        );
    }
    let _ = writeln!(w);
}
