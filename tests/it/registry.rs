//! The MCP server registry of the runtime configuration: a server added through
//! `/api/v1/config` is served by the workers while they run, and leaves when removed; workers
//! started later find it; a worker narrowed to some hosts connects to no other.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use wharf_contract::TaskStatus;
use wharf_testkit::{EverythingHttp, Options, Wharf, eventually};

async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The tool names the gateway lists for `server`.
async fn catalog(w: &Wharf, server: &str) -> Vec<String> {
    let (status, body) = send(
        w.http
            .get(w.url("/api/v1/tools"))
            .query(&[("server", server)]),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The tools each live worker says it serves, by worker id.
async fn served(w: &Wharf) -> Vec<(String, Vec<String>)> {
    let (_, body) = send(w.http.get(w.url("/api/v1/workers"))).await;
    body["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let tools = w["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect();
            (w["id"].as_str().unwrap().to_owned(), tools)
        })
        .collect()
}

async fn put_config(w: &Wharf, revision: u64, servers: Value) -> (StatusCode, Value) {
    send(w.http.put(w.url("/api/v1/config")).json(&json!({
        "revision": revision,
        "config": {"session_ttl_secs": 86400, "mcp_servers": servers}
    })))
    .await
}

#[tokio::test]
async fn a_registry_server_is_served_while_listed_and_leaves_when_removed() {
    let everything = EverythingHttp::start().await;
    let mut w = Wharf::start().await;
    w.wait_for_tool("demo.echo").await;

    // Entries that would have workers run something other than an HTTP server, or that are
    // malformed, are refused by pointer and change nothing.
    for (servers, pointer) in [
        (
            json!({"sh": {"url": "file:///bin/sh"}}),
            "/config/mcp_servers/sh/url",
        ),
        (
            json!({"x": {"url": "http://user:secret@127.0.0.1/mcp"}}),
            "/config/mcp_servers/x/url",
        ),
        (json!({"x": {"url": "/mcp"}}), "/config/mcp_servers/x/url"),
        (
            json!({"a.b": {"url": "http://127.0.0.1/mcp"}}),
            "/config/mcp_servers/a.b",
        ),
        (
            json!({"x": {"url": "http://127.0.0.1/mcp", "queues": ["ok", "not ok"]}}),
            "/config/mcp_servers/x/queues/1",
        ),
    ] {
        let (status, problem) = put_config(&w, 0, servers).await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
    }
    let (status, problem) = put_config(
        &w,
        0,
        json!({"x": {"url": "http://127.0.0.1/mcp", "command": "sh"}}),
    )
    .await;
    assert_eq!(
        status, 422,
        "a stdio-style entry is not a registry server: {problem}"
    );
    // The name of a server a worker has in its file is taken: removing the registry one later
    // would withdraw that server's tools.
    let (status, problem) = put_config(&w, 0, json!({"demo": {"url": everything.url}})).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/config/mcp_servers/demo");
    let (_, now) = send(w.http.get(w.url("/api/v1/config"))).await;
    assert_eq!(now["revision"], 0);

    // Added while the worker runs: its tools reach the catalog and tasks run on it.
    let (status, applied) = put_config(&w, 0, json!({"tools": {"url": everything.url}})).await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(
        applied["config"]["mcp_servers"]["tools"]["url"],
        everything.url
    );
    let (_, history) = send(w.http.get(w.url("/api/v1/config/revisions"))).await;
    assert_eq!(
        history["revisions"][0]["changed"],
        json!(["mcp_servers.tools"])
    );
    w.wait_for_tool("tools.echo").await;
    let task = w
        .submit_ok(json!({"tool": "tools.echo", "arguments": {"message": "via the registry"}}))
        .await;
    let done = w.wait_recorded(task, TaskStatus::Succeeded).await;
    assert_eq!(
        done.result.unwrap()["content"][0]["text"],
        "Echo: via the registry"
    );
    eventually(
        "the worker to announce the registry tools",
        Duration::from_secs(10),
        || async {
            let workers = served(&w).await;
            workers
                .iter()
                .all(|(_, tools)| tools.iter().any(|t| t == "tools.echo"))
                .then_some(())
        },
    )
    .await;

    // A worker started later reads the registry as it starts.
    w.add_worker();
    eventually(
        "the new worker to serve the registry server",
        Duration::from_secs(20),
        || async {
            let workers = served(&w).await;
            (workers.len() == 2
                && workers.iter().all(|(_, tools)| {
                    tools.iter().any(|t| t == "tools.echo")
                        && tools.iter().any(|t| t == "demo.echo")
                }))
            .then_some(())
        },
    )
    .await;

    // Removed: it leaves the catalog and the workers, and its tools are refused at the door.
    let (status, applied) = put_config(&w, 1, json!({})).await;
    assert_eq!(status, 200, "{applied}");
    eventually(
        "the registry server's tools to leave the catalog",
        Duration::from_secs(10),
        || async { catalog(&w, "tools").await.is_empty().then_some(()) },
    )
    .await;
    eventually(
        "the workers to stop serving it",
        Duration::from_secs(10),
        || async {
            let workers = served(&w).await;
            workers
                .iter()
                .all(|(_, tools)| {
                    !tools.iter().any(|t| t.starts_with("tools."))
                        && tools.iter().any(|t| t == "demo.echo")
                })
                .then_some(())
        },
    )
    .await;
    let (status, problem) = w
        .submit(json!({"tool": "tools.echo", "arguments": {"message": "gone"}}))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "unknown_tool");
    // The file's servers are untouched.
    let task = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "still here"}}))
        .await;
    w.wait_recorded(task, TaskStatus::Succeeded).await;
    w.shutdown().await;
}

#[tokio::test]
async fn a_worker_connects_only_to_registry_servers_of_its_queues_and_hosts() {
    let everything = EverythingHttp::start().await;
    let port = everything
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let w = Wharf::start_with(Options {
        registry: wharf_worker::RegistryPolicy {
            enabled: true,
            allow_hosts: vec![format!("127.0.0.1:{port}")],
        },
        ..Options::default()
    })
    .await;
    w.wait_for_tool("demo.echo").await;
    // The same server three times: by an allowed host, by a host the worker was not given
    // (`localhost`), and for a queue the worker does not serve. The refused ones sort first, so
    // the worker meets them before the one it takes.
    let by_name = everything.url.replace("127.0.0.1", "localhost");
    let (status, applied) = put_config(
        &w,
        0,
        json!({
            "a-other-host": {"url": by_name},
            "b-other-queue": {"url": everything.url, "queues": ["gpu"]},
            "z-allowed": {"url": everything.url, "queues": ["gpu", "default"]},
        }),
    )
    .await;
    assert_eq!(status, 200, "{applied}");
    w.wait_for_tool("z-allowed.echo").await;
    let task = w
        .submit_ok(json!({"tool": "z-allowed.echo", "arguments": {"message": "allowed"}}))
        .await;
    w.wait_recorded(task, TaskStatus::Succeeded).await;
    for refused in ["a-other-host", "b-other-queue"] {
        assert!(
            catalog(&w, refused).await.is_empty(),
            "{refused} must not be served"
        );
    }
    let workers = served(&w).await;
    assert!(
        workers[0]
            .1
            .iter()
            .all(|t| !t.starts_with("a-") && !t.starts_with("b-")),
        "{workers:?}"
    );
    w.shutdown().await;
}
