//! `/mcp` from the official MCP Python SDK (PyPI `mcp`, installed by `./test.sh`): a client
//! Wharf did not write, in its MCP 2026-07-28 mode and in its older `initialize` mode, with an
//! API key as its bearer token.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;
use wharf_contract::TaskStatus;
use wharf_testkit::{Options, Wharf};

/// The official Python SDK (PyPI `mcp`), as a third-party client, in both of its modes.
#[tokio::test]
async fn the_python_sdk_lists_calls_and_cancels() {
    let python = std::env::var("WHARF_MCP_PYTHON").expect(
        "WHARF_MCP_PYTHON is not set: run the tests with ./test.sh, which installs the SDK",
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/mcp_client.py");
    let w = Wharf::start_with(Options::closed()).await;
    let key = w.key("default", "submitter").await;
    wharf_testkit::wait_for_tool_at(&w.client_with(&key), "demo.sleep").await;
    let mut known = Vec::new();
    for (mode, protocol) in [("auto", "2026-07-28"), ("legacy", "2025-11-25")] {
        let mut client = tokio::process::Command::new(&python)
            .arg(&script)
            .arg(format!("{}/mcp", w.api))
            .arg(mode)
            .env("WHARF_KEY", &key)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut stdout = tokio::io::BufReader::new(client.stdout.take().unwrap());
        let read = tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line);
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .unwrap_or_else(|_| panic!("the Python client in {mode} mode said nothing in a minute"))
            .unwrap();
        let seen: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the Python client in {mode} mode failed ({e}): {line:?}"));
        assert_eq!(seen["protocol"], protocol, "{seen}");
        assert!(
            seen["tools"]
                .as_array()
                .unwrap()
                .contains(&json!("demo.sleep"))
        );
        assert_eq!(seen["sleep"]["text"], "slept 1 seconds");
        assert_eq!(seen["sleep"]["is_error"], false);
        let slept: Uuid = seen["sleep"]["task_id"].as_str().unwrap().parse().unwrap();
        known.push(slept);
        w.wait_recorded(slept, TaskStatus::Succeeded).await;
        let progress = seen["progress"].as_array().unwrap();
        assert!(progress.len() >= 2, "{seen}");
        assert_eq!(progress.last().unwrap()["progress"], 4.0);
        assert_eq!(seen["bad"]["is_error"], true);
        assert_eq!(
            seen["bad"]["problem"]["errors"][0]["pointer"],
            "/arguments/seconds"
        );
        assert_eq!(seen["gave_up"], true);
        // The call it gave up on was cancelled, down to the MCP server.
        let abandoned = w.started_sleep(&known).await;
        known.push(abandoned);
        w.wait_demo_cancelled(abandoned).await;
        w.wait_recorded(abandoned, TaskStatus::Cancelled).await;
        drop(client.stdin.take());
        let exited = tokio::time::timeout(Duration::from_secs(30), client.wait()).await;
        assert!(exited.expect("the Python client exits").unwrap().success());
    }
    w.shutdown().await;
}
