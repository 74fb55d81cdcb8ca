//! Every kind of bad submission gets a problem+json naming what is wrong, and changes nothing.

use reqwest::Method;
use serde_json::{Value, json};
use wharf_contract::{EVENTS_STREAM, TASKS_STREAM};
use wharf_testkit::Wharf;

/// Sends a raw body; returns status, content type and the problem document.
async fn post_raw(w: &Wharf, content_type: &str, body: Vec<u8>) -> (u16, String, Value) {
    let r = w
        .client()
        .request(Method::POST, "/api/v1/tasks")
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    (status, ct, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn bad_submissions_are_refused_and_nothing_is_written() {
    let w = Wharf::start().await;
    w.wait_for_tool("demo.sleep").await;
    let json_ct = "application/json";
    // name, content type, body, status, code, a pointer the errors must name
    type Case = (
        &'static str,
        &'static str,
        Vec<u8>,
        u16,
        &'static str,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "malformed json",
            json_ct,
            b"{\"tool\": ".to_vec(),
            400,
            "malformed_body",
            None,
        ),
        (
            "not an object",
            json_ct,
            b"[1,2]".to_vec(),
            422,
            "invalid_field",
            Some(""),
        ),
        (
            "a wrong type deep in metadata keeps its place",
            json_ct,
            br#"{"tool":"demo.echo","arguments":{"message":"x"},"metadata":[1]}"#.to_vec(),
            422,
            "invalid_field",
            Some("/metadata"),
        ),
        (
            "unknown field",
            json_ct,
            br#"{"tool":"demo.echo","arguments":{"message":"x"},"colour":"red"}"#.to_vec(),
            422,
            "invalid_field",
            Some("/colour"),
        ),
        (
            "wrong type of a field",
            json_ct,
            br#"{"tool":"demo.echo","arguments":{"message":"x"},"max_attempts":"three"}"#.to_vec(),
            422,
            "invalid_field",
            Some("/max_attempts"),
        ),
        (
            "missing tool",
            json_ct,
            br#"{"arguments":{}}"#.to_vec(),
            422,
            "invalid_field",
            Some("/tool"),
        ),
        (
            "unknown tool",
            json_ct,
            br#"{"tool":"demo.slep","arguments":{"seconds":1}}"#.to_vec(),
            422,
            "unknown_tool",
            Some("/tool"),
        ),
        (
            "arguments failing the input schema",
            json_ct,
            br#"{"tool":"demo.sleep","arguments":{"seconds":"soon"}}"#.to_vec(),
            422,
            "invalid_arguments",
            Some("/arguments/seconds"),
        ),
        (
            "a required argument missing",
            json_ct,
            br#"{"tool":"demo.echo","arguments":{}}"#.to_vec(),
            422,
            "invalid_arguments",
            Some("/arguments"),
        ),
        (
            "bad queue name",
            json_ct,
            br#"{"tool":"demo.echo","arguments":{"message":"x"},"queue":"a.b"}"#.to_vec(),
            422,
            "invalid_field",
            Some("/queue"),
        ),
        (
            "max_attempts out of range",
            json_ct,
            br#"{"tool":"demo.echo","arguments":{"message":"x"},"max_attempts":0}"#.to_vec(),
            422,
            "invalid_field",
            Some("/max_attempts"),
        ),
        (
            "timeout out of range",
            json_ct,
            br#"{"tool":"demo.echo","arguments":{"message":"x"},"timeout_secs":0}"#.to_vec(),
            422,
            "invalid_field",
            Some("/timeout_secs"),
        ),
        (
            "wrong media type",
            "text/plain",
            br#"{"tool":"demo.echo","arguments":{"message":"x"}}"#.to_vec(),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            "oversized body",
            json_ct,
            format!(
                r#"{{"tool":"demo.echo","arguments":{{"message":"{}"}}}}"#,
                "x".repeat(2 * 1024 * 1024)
            )
            .into_bytes(),
            413,
            "body_too_large",
            None,
        ),
    ];
    for (name, ct, body, status, code, pointer) in cases {
        let (got, content_type, problem) = post_raw(&w, ct, body).await;
        assert_eq!(got, status, "{name}: {problem}");
        assert_eq!(content_type, "application/problem+json", "{name}");
        assert_eq!(problem["status"], status, "{name}");
        assert_eq!(problem["code"], code, "{name}: {problem}");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}"
        );
        if let Some(pointer) = pointer {
            let pointers: Vec<&str> = problem["errors"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: no errors in {problem}"))
                .iter()
                .map(|e| e["pointer"].as_str().unwrap())
                .collect();
            assert!(pointers.contains(&pointer), "{name}: {pointers:?}");
        }
    }

    // The unknown tool lists close names.
    let (_, _, problem) = post_raw(
        &w,
        json_ct,
        br#"{"tool":"demo.slep","arguments":{}}"#.to_vec(),
    )
    .await;
    let suggestions: Vec<&str> = problem["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(suggestions.first(), Some(&"demo.sleep"));

    // Nothing was enqueued, nothing was written.
    assert_eq!(w.stream_messages(TASKS_STREAM).await, 0);
    assert_eq!(w.stream_messages(EVENTS_STREAM).await, 0);
    assert!(w.store.count_by_status().await.unwrap().is_empty());

    // A good submission still works afterwards.
    let id = w
        .submit_ok(json!({"tool": "demo.echo", "arguments": {"message": "ok"}}))
        .await;
    w.wait_recorded(id, wharf_contract::TaskStatus::Succeeded)
        .await;
    w.shutdown().await;
}

#[tokio::test]
async fn bad_list_queries_are_refused() {
    let w = Wharf::start().await;
    for (query, param) in [
        ("status=finished", "/query/status"),
        ("limit=0", "/query/limit"),
        ("limit=lots", "/query/limit"),
        ("colour=red", "/query/colour"),
        ("cursor=nope", "/query/cursor"),
        ("view=everything", "/query/view"),
    ] {
        let r = w.get(&format!("/api/v1/tasks?{query}")).await;
        assert_eq!(r.status(), 400, "{query}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_query");
        assert_eq!(problem["errors"][0]["pointer"], param, "{query}");
    }
    w.shutdown().await;
}

/// A body within `max_body_bytes` whose task would not fit in one NATS message is refused for
/// what it is (413 naming the limit, nothing queued), over HTTP and over the WebSocket, instead
/// of a 503 that invites retrying forever; a large task that fits runs.
#[tokio::test]
async fn a_task_too_large_for_one_nats_message_is_413_not_503() {
    let w = Wharf::start().await;
    let limit = w.options.gateway.max_body_bytes;
    let body = |message_len: usize| {
        format!(
            r#"{{"tool":"demo.echo","arguments":{{"message":"{}"}}}}"#,
            "x".repeat(message_len)
        )
        .into_bytes()
    };
    // Just under the body limit.
    let near = body(limit - 100);
    assert!(near.len() <= limit);
    let (status, content_type, problem) = post_raw(&w, "application/json", near).await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(problem["code"], "body_too_large");
    assert_eq!(problem["errors"][0]["pointer"], "/arguments");
    assert!(
        problem["detail"].as_str().unwrap().contains("max_payload"),
        "{problem}"
    );
    // The same over the WebSocket.
    let mut ws = wharf_testkit::WsClient::connect(&w).await;
    let task: Value = serde_json::from_slice(&body(limit - 300)).unwrap();
    ws.send(json!({"type": "task:submit", "ref": "big", "task": task}))
        .await;
    let refused = ws.next().await;
    assert_eq!(refused["code"], "body_too_large", "{refused}");
    assert_eq!(refused["ref"], "big");
    assert_eq!(
        w.stream_last_sequence(TASKS_STREAM).await,
        0,
        "nothing queued"
    );
    assert_eq!(
        w.stream_last_sequence(EVENTS_STREAM).await,
        0,
        "nothing written"
    );

    // A large task that fits in a message runs, result and all.
    let fits = body(limit - 64 * 1024);
    let r = w
        .client()
        .request(Method::POST, "/api/v1/tasks")
        .header("content-type", "application/json")
        .body(fits)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    w.wait_recorded(id, wharf_contract::TaskStatus::Succeeded)
        .await;
    w.shutdown().await;
}

/// A request announcing a body over the limit is answered 413 at once, before any of the body
/// is sent; and a client that sends a whole oversized body before reading (Python's urllib)
/// still reads the 413, not a broken pipe.
#[tokio::test]
async fn oversized_bodies_are_answered_413_and_every_client_reads_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = Wharf::start().await;
    let addr = w.api.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/tasks HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        20 << 20
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut answer))
        .await
        .expect("answered before the body was sent")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).to_lowercase();
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");

    // urllib sends all 20 MiB, then reads the answer.
    let script = r#"
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1] + "/api/v1/tasks", data=b"x" * (20 << 20),
                             headers={"content-type": "application/json"}, method="POST")
try:
    urllib.request.urlopen(req, timeout=30)
    print("no error")
except urllib.error.HTTPError as e:
    print(e.code, e.headers.get("content-type"), e.read().decode())
except Exception as e:
    print("failed:", type(e).__name__, e)
"#;
    let out = tokio::process::Command::new("python3")
        .args(["-c", script, &w.api])
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("413 application/problem+json") && said.contains("body_too_large"),
        "urllib got: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    w.shutdown().await;
}

/// A path segment that is not UTF-8 once decoded names nothing: 404 as problem+json, like
/// every other answer, not axum's plain-text 400.
#[tokio::test]
async fn a_path_segment_that_is_not_utf8_is_a_problem_404() {
    let w = Wharf::start().await;
    for path in [
        "/api/v1/tasks/%ff",
        "/api/v1/tasks/%ff/events",
        "/api/v1/agents/%c3%28",
        "/api/v1/dlq/%ff",
        "/api/v1/keys/%ff",
        "/api/v1/sessions/%ff",
    ] {
        let r = w.get(path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["code"], "not_found", "{path}: {problem}");
    }
    let r = w
        .client()
        .request(Method::POST, "/api/v1/tools/%ff/call")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    w.shutdown().await;
}

/// Lists that take no parameters refuse one, as every other list does.
#[tokio::test]
async fn lists_without_parameters_refuse_unknown_ones() {
    let w = Wharf::start().await;
    for path in ["/api/v1/agents", "/api/v1/workers", "/api/v1/queues"] {
        let r = w.get(&format!("{path}?tenant=acme")).await;
        assert_eq!(r.status(), 400, "{path}");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_query", "{path}");
        assert_eq!(problem["errors"][0]["pointer"], "/query/tenant", "{path}");
        let r = w.get(path).await;
        assert_eq!(r.status(), 200, "{path} without parameters");
    }
    w.shutdown().await;
}

/// A tool result too large for one NATS message cannot be stored as the task's outcome: the
/// task ends `failed` with `result_too_large` after one run, instead of running again and
/// again until its attempts are spent.
#[tokio::test]
async fn a_result_too_large_to_store_fails_the_task_after_one_run() {
    let w = Wharf::start().await;
    let id = w
        .submit_ok(json!({
            "tool": "demo.echo",
            "arguments": {"message": "x".repeat(1000), "times": 2000},
            "max_attempts": 3,
        }))
        .await;
    let task = w
        .wait_recorded(id, wharf_contract::TaskStatus::Failed)
        .await;
    let error = task.error.unwrap();
    assert_eq!(error.code, "result_too_large", "{error:?}");
    assert!(error.message.contains("max_payload"), "{error:?}");
    assert_eq!(task.attempts, 1, "the tool ran once");
    w.shutdown().await;
}
