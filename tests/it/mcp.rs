//! Third-party and supervised MCP servers: server-everything over stdio and streamable HTTP, and
//! a demo server that dies and is started again.

use std::time::Duration;

use serde_json::json;
use wharf_contract::TaskStatus;
use wharf_testkit::{
    EverythingHttp, Options, Wharf, certificate, demo_server, eventually, everything_stdio,
    tls_proxy,
};

/// Runs server-everything's echo and its long-running operation (with progress) through Wharf.
async fn exercise_everything(w: &Wharf) {
    w.wait_for_tool("everything.echo").await;
    let echo = w
        .submit_ok(json!({"tool": "everything.echo", "arguments": {"message": "from wharf"}}))
        .await;
    let done = w.wait_recorded(echo, TaskStatus::Succeeded).await;
    assert_eq!(
        done.result.unwrap()["content"][0]["text"],
        "Echo: from wharf"
    );

    let long = w
        .submit_ok(json!({
            "tool": "everything.trigger-long-running-operation",
            "arguments": {"duration": 1, "steps": 4}
        }))
        .await;
    let done = w.wait_recorded(long, TaskStatus::Succeeded).await;
    let text = done.result.unwrap()["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains("Long running operation completed"), "{text}");
    let progress = done.progress.unwrap();
    assert_eq!((progress.progress, progress.total), (4.0, Some(4.0)));
    let progress_events = w
        .store
        .events(long)
        .await
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.kind_name() == "progress")
        .count();
    assert_eq!(progress_events, 4);

    // Its inputSchema is enforced at the door.
    let (status, problem) = w
        .submit(json!({
            "tool": "everything.trigger-long-running-operation",
            "arguments": {"duration": "long"}
        }))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/arguments/duration");
}

#[tokio::test]
async fn server_everything_over_stdio() {
    let w = Wharf::start_with(Options {
        servers: vec![everything_stdio()],
        ..Options::default()
    })
    .await;
    exercise_everything(&w).await;
    w.shutdown().await;
}

#[tokio::test]
async fn server_everything_over_streamable_http() {
    let server = EverythingHttp::start().await;
    let w = Wharf::start_with(Options {
        servers: vec![server.config()],
        ..Options::default()
    })
    .await;
    exercise_everything(&w).await;
    w.shutdown().await;
}

/// A server behind HTTPS, its certificate signed by a CA the worker's system trusts
/// (`SSL_CERT_FILE`, as an operator's private CA would be): the worker process reaches it.
#[tokio::test]
async fn a_worker_reaches_an_mcp_server_over_https() {
    let everything = EverythingHttp::start().await;
    let plain = everything.addr();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path());
    let port = tls_proxy(&cert, &key, plain).await;
    let config = dir.path().join("worker.toml");
    std::fs::write(
        &config,
        format!(
            "[[worker.servers]]\nname = \"secure\"\ntransport = \"http\"\n\
             url = \"https://127.0.0.1:{port}/mcp\"\n"
        ),
    )
    .unwrap();
    let w = Wharf::start_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let mut worker = w
        .process(&["worker", "--config", config.to_str().unwrap()])
        .env("SSL_CERT_FILE", &ca)
        .spawn()
        .unwrap();
    w.wait_for_tool("secure.echo").await;
    let task = w
        .submit_ok(json!({"tool": "secure.echo", "arguments": {"message": "over tls"}}))
        .await;
    let done = w.wait_recorded(task, TaskStatus::Succeeded).await;
    assert_eq!(done.result.unwrap()["content"][0]["text"], "Echo: over tls");
    let _ = worker.kill().await;
    w.shutdown().await;
}

#[tokio::test]
async fn a_dead_stdio_server_is_started_again() {
    let w = Wharf::start().await;
    let first = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "one"}}))
        .await;
    w.wait_recorded(first, TaskStatus::Succeeded).await;
    let pid_of_serving = || {
        std::fs::read_to_string(w.demo_log())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["event"] == "serving")
            .filter_map(|l| l["pid"].as_u64())
            .collect::<Vec<_>>()
    };
    let pids = pid_of_serving();
    assert_eq!(pids.len(), 1, "one demo server so far: {pids:?}");
    let status = std::process::Command::new("kill")
        .args(["-9", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    // The supervisor notices and starts a new process; tasks run on it.
    eventually("a second demo server", Duration::from_secs(20), || async {
        (pid_of_serving().len() == 2).then_some(())
    })
    .await;
    let second = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "two"}}))
        .await;
    let done = w.wait_recorded(second, TaskStatus::Succeeded).await;
    assert_eq!(done.result.unwrap()["content"][0]["text"], "two");
    // Counted for Prometheus.
    let metrics = w.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "wharf_mcp_server_restarts_total{server=\"demo\"} 1"),
        "{metrics}"
    );
    w.shutdown().await;
}

#[tokio::test]
async fn two_servers_on_one_worker_are_addressed_by_name() {
    let mut servers = vec![everything_stdio()];
    servers.push(demo_server("demo", None));
    let w = Wharf::start_with(Options {
        servers,
        ..Options::default()
    })
    .await;
    w.wait_for_tool("everything.echo").await;
    w.wait_for_tool("demo.echo").await;
    let a = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "d"}}))
        .await;
    let b = w
        .submit_ok(json!({"tool": "everything.echo", "arguments": {"message": "e"}}))
        .await;
    assert_eq!(
        w.wait_recorded(a, TaskStatus::Succeeded)
            .await
            .result
            .unwrap()["content"][0]["text"],
        "d"
    );
    assert_eq!(
        w.wait_recorded(b, TaskStatus::Succeeded)
            .await
            .result
            .unwrap()["content"][0]["text"],
        "Echo: e"
    );
    w.shutdown().await;
}
