//! The MCP server registry of the runtime configuration: a server added through
//! `/api/v1/config` is served by the workers while they run, and leaves when removed; workers
//! started later find it; a worker narrowed to some hosts connects to no other.

use std::time::Duration;

use reqwest::Method;
use reqwest::StatusCode;
use serde_json::{Value, json};
use wharf_contract::TaskStatus;
use wharf_testkit::{EverythingHttp, Options, Wharf, eventually, send};

/// The tool names the gateway lists for `server`.
async fn catalog(w: &Wharf, server: &str) -> Vec<String> {
    let (status, body) = send(
        w.client()
            .request(Method::GET, "/api/v1/tools")
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
    let (_, body) = send(w.client().request(Method::GET, "/api/v1/workers")).await;
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
    send(
        w.client()
            .request(Method::PUT, "/api/v1/config")
            .json(&json!({
                "revision": revision,
                "config": {"session_ttl_secs": 86400, "mcp_servers": servers}
            })),
    )
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
    let (_, now) = send(w.client().request(Method::GET, "/api/v1/config")).await;
    assert_eq!(now["revision"], 0);

    // Added while the worker runs: its tools reach the catalog and tasks run on it.
    let (status, applied) = put_config(&w, 0, json!({"tools": {"url": everything.url}})).await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(
        applied["config"]["mcp_servers"]["tools"]["url"],
        everything.url
    );
    let (_, history) = send(w.client().request(Method::GET, "/api/v1/config/revisions")).await;
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
            (workers.len() == 1
                && workers
                    .iter()
                    .all(|(_, tools)| tools.iter().any(|t| t == "tools.echo")))
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
            (workers.len() == 2
                && workers.iter().all(|(_, tools)| {
                    !tools.iter().any(|t| t.starts_with("tools."))
                        && tools.iter().any(|t| t == "demo.echo")
                }))
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
    // Where the refused entries point: a port that counts the connections it is offered.
    let decoy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let decoy_port = decoy.local_addr().unwrap().port();
    let offered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = offered.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = decoy.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(socket);
        }
    });
    let w = Wharf::start_with(Options {
        registry: wharf_worker::RegistryPolicy {
            enabled: true,
            allow_hosts: vec!["127.0.0.1".into()],
        },
        ..Options::default()
    })
    .await;
    w.wait_for_tool("demo.echo").await;
    // Refused: a host the worker was not given (`localhost`), and a queue it does not serve.
    // They sort first, so the worker meets them before the one it takes.
    let (status, applied) = put_config(
        &w,
        0,
        json!({
            "a-other-host": {"url": format!("http://localhost:{decoy_port}/mcp")},
            "b-other-queue": {"url": format!("http://127.0.0.1:{decoy_port}/mcp"), "queues": ["gpu"]},
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
    // The worker started every server it took in one go, the allowed one last; that one has
    // connected, listed its tools and run a task since, and the refused ones were never tried.
    assert_eq!(
        offered.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a refused registry server was connected to"
    );
    for refused in ["a-other-host", "b-other-queue"] {
        assert!(catalog(&w, refused).await.is_empty(), "{refused}");
    }
    w.shutdown().await;
}

/// A token in a registry URL's query works for the workers but is shown nowhere: not in the
/// configuration's reads, not in its history, not in a worker's log when the server cannot be
/// reached; and a configuration read and written back keeps it.
#[tokio::test]
async fn a_token_in_a_registry_url_is_used_but_never_shown() {
    const TOKEN: &str = "s3cret-query-token-4711";
    let everything = EverythingHttp::start().await;
    let w = Wharf::start().await;
    let url = format!("{}?token={TOKEN}&region=eu", everything.url);
    let (status, body) = put_config(&w, 0, json!({"everything": {"url": url}})).await;
    assert_eq!(status, 200, "{body}");
    let shown = format!("{}?token=***&region=***", everything.url);
    assert_eq!(body["config"]["mcp_servers"]["everything"]["url"], shown);
    // Workers connect with the whole URL: the server's tools reach the catalog.
    eventually(
        "the registry server's tools",
        Duration::from_secs(30),
        || async {
            catalog(&w, "everything")
                .await
                .contains(&"everything.echo".to_owned())
                .then_some(())
        },
    )
    .await;
    for path in ["/api/v1/config", "/api/v1/config/revisions"] {
        let (status, read) = send(w.client().request(Method::GET, path)).await;
        assert_eq!(status, 200);
        assert!(!read.to_string().contains(TOKEN), "{path}: {read}");
        assert!(read.to_string().contains(&shown), "{path}: {read}");
    }

    // Read, change another setting, write back as read: the stored URL keeps its token.
    let (_, mut read) = send(w.client().request(Method::GET, "/api/v1/config")).await;
    read["config"]["session_ttl_secs"] = json!(7200);
    let (status, body) = send(
        w.client()
            .request(Method::PUT, "/api/v1/config")
            .json(&json!({
                "revision": read["revision"], "config": read["config"]
            })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let stored = w.store.config_revisions(1).await.unwrap();
    assert_eq!(stored[0].config.session_ttl_secs, 7200);
    assert_eq!(stored[0].config.mcp_servers["everything"].url, url);
    // A URL sent whole replaces it.
    let other = format!("{}?token=another", everything.url);
    let revision = body["revision"].as_u64().unwrap();
    let (status, _) = put_config(&w, revision, json!({"everything": {"url": other}})).await;
    assert_eq!(status, 200);
    assert_eq!(
        w.store.config_revisions(1).await.unwrap()[0]
            .config
            .mcp_servers["everything"]
            .url,
        other
    );

    // A worker that cannot reach a registry server says so in its log, without the token.
    let port = wharf_local::free_port().unwrap();
    let unreachable = format!("http://127.0.0.1:{port}/mcp?token={TOKEN}");
    let (status, _) = put_config(&w, revision + 1, json!({"nowhere": {"url": unreachable}})).await;
    assert_eq!(status, 200);
    let log = w.dir.path().join("registry-worker.log");
    let out = std::fs::File::create(&log).unwrap();
    let _worker = w
        .process(&["worker", "--id", "logging"])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let said = eventually(
        "the worker's connection error",
        Duration::from_secs(30),
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines()
                .find(|l| l.contains("cannot connect to mcp server") && l.contains("nowhere"))
                .map(str::to_owned)
        },
    )
    .await;
    assert!(!said.contains(TOKEN), "{said}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains(TOKEN),
        "the worker's log holds the token:\n{text}"
    );
    w.shutdown().await;
}
