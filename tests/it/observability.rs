//! The monitoring kit cannot rot: the alert rules pass promtool and their unit tests, a scrape
//! passes promtool and holds exactly the documented metrics, and the dashboard, the rules and
//! the docs name only metrics Wharf exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use wharf_contract::TaskStatus;
use wharf_telemetry::metrics::{Kind, METRICS};
use wharf_testkit::{Client, Wharf, WsClient, eventually};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// `./test.sh` provides promtool (see `ensure_promtool` in scripts/common.sh).
fn promtool() -> PathBuf {
    std::env::var_os("WHARF_PROMTOOL")
        .map(PathBuf::from)
        .expect("WHARF_PROMTOOL is not set: run the tests with ./test.sh, which fetches promtool")
}

/// Runs promtool; panics with its output unless it succeeds.
async fn promtool_ok(args: &[&str], stdin: Option<&str>) -> String {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(promtool())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// Metric names a text mentions (`wharf_…` and `process_…` words), histogram series suffixes
/// taken off.
fn metric_names(text: &str) -> BTreeSet<String> {
    let histograms: BTreeSet<&str> = METRICS
        .iter()
        .filter(|m| m.kind == Kind::Histogram)
        .map(|m| m.name)
        .collect();
    let mut out = BTreeSet::new();
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for token in text.split(|c: char| !word(c)) {
        // A name, not the prefix alone ("a `wharf_` prefix").
        if !(token.starts_with("wharf_") || token.starts_with("process_")) || token.ends_with('_') {
            continue;
        }
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| token.strip_suffix(s).filter(|b| histograms.contains(b)))
            .unwrap_or(token);
        out.insert(base.to_owned());
    }
    out
}

fn known() -> BTreeSet<String> {
    METRICS.iter().map(|m| m.name.to_owned()).collect()
}

#[tokio::test]
async fn alert_rules_pass_their_unit_tests_and_the_example_config_checks() {
    let rules = repo("infra/prometheus/alerts.yml");
    let tests = repo("infra/prometheus/alerts_test.yml");
    let config = repo("infra/prometheus/prometheus.yml");
    promtool_ok(&["check", "rules", rules.to_str().unwrap()], None).await;
    let out = promtool_ok(&["test", "rules", tests.to_str().unwrap()], None).await;
    assert!(out.contains("SUCCESS"), "{out}");
    promtool_ok(&["check", "config", config.to_str().unwrap()], None).await;
    let unknown: Vec<String> = metric_names(&std::fs::read_to_string(&rules).unwrap())
        .difference(&known())
        .cloned()
        .collect();
    assert!(
        unknown.is_empty(),
        "alerts.yml uses unknown metrics {unknown:?}"
    );
}

#[tokio::test]
async fn the_scrape_dashboard_and_docs_agree_on_the_metrics() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.sleep").await;
    // Every outcome, a retry, and a WebSocket connection.
    let mut ws = WsClient::connect(&w).await;
    ws.send(json!({"type": "task:submit", "task": {"tool": "demo.echo", "arguments": {"message": "hi"}}}))
        .await;
    let ok = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "x"}}))
        .await;
    let failed = w
        .submit_ok(json!({"tool": "demo.fail", "arguments": {}}))
        .await;
    let dead = w
        .submit_ok(json!({
            "tool": "demo.sleep",
            "arguments": {"seconds": 30, "steps": 1},
            "timeout_secs": 1,
            "max_attempts": 2,
        }))
        .await;
    w.wait_recorded(ok, TaskStatus::Succeeded).await;
    w.wait_recorded(failed, TaskStatus::Failed).await;
    w.wait_recorded(dead, TaskStatus::Failed).await;
    let long = w
        .submit_ok(json!({"tool": "demo.sleep", "arguments": {"seconds": 30, "steps": 1}}))
        .await;
    eventually("the long task running", Duration::from_secs(10), || async {
        (w.get_task(long).await.status == TaskStatus::Running).then_some(())
    })
    .await;
    w.cancel(long).await;
    w.wait_recorded(long, TaskStatus::Cancelled).await;

    let scrape = w.metrics().await;
    drop(ws);
    // Prometheus's own linter: names, units, help texts, types.
    promtool_ok(&["check", "metrics"], Some(&scrape)).await;
    let exported: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    let known = known();
    let undocumented: Vec<&String> = exported.difference(&known).collect();
    assert!(
        undocumented.is_empty(),
        "metrics missing from METRICS: {undocumented:?}"
    );
    let unseen: Vec<String> = known
        .difference(&exported)
        .filter(|n| *n != "wharf_mcp_server_restarts_total")
        .cloned()
        .collect();
    assert!(
        unseen.is_empty(),
        "listed but not exported: {unseen:?}\n{scrape}"
    );

    // The dashboard's queries: valid PromQL (checked as recording rules), known metrics only.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo("infra/grafana/wharf.json")).unwrap())
            .unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules += &format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.yml");
    std::fs::write(&file, rules).unwrap();
    promtool_ok(&["check", "rules", file.to_str().unwrap()], None).await;
    let used = metric_names(&exprs.join("\n"));
    let unknown: Vec<&String> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard uses unknown metrics {unknown:?}"
    );

    // The docs list every metric, and no other.
    let docs = std::fs::read_to_string(repo("docs/observability.md")).unwrap();
    let documented = metric_names(&docs);
    assert_eq!(
        documented, known,
        "docs/observability.md and METRICS differ"
    );
    w.shutdown().await;
}

/// `wharf worker` and `wharf recorder` run as processes of their own serve `/metrics` on the
/// address given with `--metrics`, and the probes an orchestrator asks: `/livez` while the
/// process answers, `/readyz` while it is connected to NATS.
#[tokio::test]
async fn worker_and_recorder_processes_serve_metrics_and_probes_when_asked() {
    let w = Wharf::start().await;
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let spawn = |args: &[&str]| w.process(args).spawn().unwrap();
    let (worker_addr, recorder_addr) = (free(), free());
    let _worker = spawn(&[
        "worker",
        "--id",
        "metered",
        "--metrics",
        &worker_addr.to_string(),
    ]);
    let _recorder = spawn(&["recorder", "--metrics", &recorder_addr.to_string()]);
    for (addr, expect) in [
        (worker_addr, "wharf_worker_tasks_in_flight"),
        (recorder_addr, "process_resident_memory_bytes"),
    ] {
        let text = eventually("metrics served", Duration::from_secs(30), || async {
            let r = Client::new(&format!("http://{addr}"))
                .unwrap()
                .request(Method::GET, "/metrics")
                .send()
                .await
                .ok()?;
            let text = r.text().await.ok()?;
            text.contains(expect).then_some(text)
        })
        .await;
        promtool_ok(&["check", "metrics"], Some(&text)).await;
        let client = Client::new(&format!("http://{addr}")).unwrap();
        for probe in ["/livez", "/readyz"] {
            let r = client.request(Method::GET, probe).send().await.unwrap();
            assert_eq!(r.status(), 200, "{probe} of {addr}");
        }
    }
    // Without NATS, a part is alive but not ready.
    let (worker, _) = (worker_addr, recorder_addr);
    w.nats.kill().await;
    let probe = |path: &'static str| async move {
        let r = Client::new(&format!("http://{worker}"))
            .unwrap()
            .request(Method::GET, path)
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    };
    eventually(
        "the worker not ready without NATS",
        Duration::from_secs(30),
        || async { (probe("/readyz").await == 503).then_some(()) },
    )
    .await;
    assert_eq!(probe("/livez").await, 200, "alive all the same");
}
